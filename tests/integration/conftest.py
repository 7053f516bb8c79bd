"""Integration fixtures: every home-based test runs on SQLite and on a real PostgreSQL
(issue 3: the same integration tests pass on both engines)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Server, make_home

ENGINES = ["sqlite", "postgresql"]


def _url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    pg = request.getfixturevalue("postgres_server")
    name = pg.create_database()
    yield pg.url(name)
    pg.drop_database(name)


@pytest.fixture(scope="module", params=ENGINES)
def module_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    yield from _url(request)


@pytest.fixture(params=ENGINES)
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    yield from _url(request)


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory, module_database: str | None) -> Path:
    return make_home(tmp_path_factory.mktemp("qt"), database_url=module_database)


@pytest.fixture(scope="module")
def server(module_home: Path) -> Iterator[Server]:
    srv = Server(module_home)
    yield srv
    srv.stop()


@pytest.fixture
def home(tmp_path: Path, database: str | None) -> Path:
    return make_home(tmp_path, database_url=database)
