"""Prometheus metrics: what the roles count (``definitions``) and where they keep it
(``files``: one directory per role under ``run/metrics/`` when ``--metrics`` is on).

A low layer (just above ``config``) so that every role and service may count; it
imports nothing of qtoaster but ``core``.
"""
