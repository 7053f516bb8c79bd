"""qtoaster.broker: the mailbox broker's protocol and its clients (decision 0007)."""
