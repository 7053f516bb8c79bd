"""qtoaster.cli."""
