"""qtoaster: the qmail toaster rebuilt in Python."""

__version__ = "0.1.0"
