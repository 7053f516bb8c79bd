"""The directory (vpopmail's role): domains, users, aliases, passwords, on SQLite or PostgreSQL."""
