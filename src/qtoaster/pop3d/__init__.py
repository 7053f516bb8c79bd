"""The pop3d role: POP3 and POP3S sessions over the directory's Maildirs."""
