"""``qtoaster report``: log lines (docs/logging.md) parsed back and summed up."""
