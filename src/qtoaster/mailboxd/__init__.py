"""qtoaster.mailboxd: the mailbox broker role (decision 0007), pop3d's and smtpd's door to a
Maildir."""
