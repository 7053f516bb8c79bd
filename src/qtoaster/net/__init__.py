"""qtoaster.net."""
