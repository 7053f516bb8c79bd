"""The auth role with its throttle's store: a store that cannot count answers the login
as temporary (never an acceptance, never a crash); a working one counts the failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtoaster.auth.protocol import VerifyRequest
from qtoaster.auth.throttle import LoginThrottle, MemoryFailures
from qtoaster.authd.server import AuthServer
from qtoaster.cli.newhome import init_home
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.directory.store import Directory


class BrokenStore(MemoryFailures):
    """A shared store whose database is down."""

    def add(self, kind: str, key: str) -> None:
        raise TemporaryFailure("directory database error: gone")


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    init_home(home, "mx.example.test", smtp=["127.0.0.1:0"])
    directory = Directory.open(home)
    try:
        directory.add_domain("example.test")
        directory.add_user("tim@example.test", "secret")
    finally:
        directory.close()
    return home


def _request(secret: str) -> VerifyRequest:
    return VerifyRequest(1, "smtp", "PLAIN", "tim@example.test", secret, b"", "192.0.2.1")


async def test_a_store_that_cannot_count_answers_temporary(home: Home) -> None:
    server = AuthServer(home)
    try:
        assert server.failures is None  # SQLite: the counts stay in memory
        server.throttle = LoginThrottle(base=0.0, store=BrokenStore())
        answer = await server.verify(_request("wrong"))
        assert (answer.ok, answer.temporary) == (False, True)
    finally:
        await server.close()


async def test_a_failure_is_counted_in_the_store(home: Home) -> None:
    server = AuthServer(home)
    try:
        store = MemoryFailures()
        server.throttle = LoginThrottle(base=0.0, store=store)
        answer = await server.verify(_request("wrong"))
        assert (answer.ok, answer.temporary) == (False, False)
        assert store.current("account", "tim@example.test") == 1
        assert store.current("ip", "192.0.2.1") == 1
    finally:
        await server.close()
