"""qtoaster.smtpd."""
