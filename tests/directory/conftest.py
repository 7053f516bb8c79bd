"""Directory tests run on every engine: SQLite (the home's users.sqlite3) and PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def directory_url(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite (``Directory.open(home)`` uses ``home.database``), else the URL of
    a fresh PostgreSQL database that only this test sees."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url
