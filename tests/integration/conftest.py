from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Server, make_home


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(tmp_path_factory.mktemp("qt"))


@pytest.fixture(scope="module")
def server(module_home: Path) -> Iterator[Server]:
    srv = Server(module_home)
    yield srv
    srv.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(tmp_path)
