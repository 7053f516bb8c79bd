"""The http role: the JSON API under /api/v1 (docs/http.md, decision 0025)."""
