"""The metrics role: serves ``GET /metrics`` (Prometheus text) from the counting roles'
files under ``run/metrics/`` (docs/metrics.md)."""
