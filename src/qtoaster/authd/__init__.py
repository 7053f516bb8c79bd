"""qtoaster.authd: the auth role (decision 0007), the one process that reads credentials."""
