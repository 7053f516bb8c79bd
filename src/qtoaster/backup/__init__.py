"""Backup and restore of a home: snapshots with a checksummed manifest (docs/backup.md)."""
