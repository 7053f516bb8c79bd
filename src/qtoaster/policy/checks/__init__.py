"""qtoaster.policy.checks."""
