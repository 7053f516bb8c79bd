"""Network plumbing shared by the roles: the DNS resolver (and, later, listener helpers)."""
