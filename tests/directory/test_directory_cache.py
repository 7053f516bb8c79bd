from pathlib import Path

from qtoaster.core.home import Home
from qtoaster.directory.cache import CachedLookups
from qtoaster.directory.store import Directory, create_directory


class CountingDirectory:
    def __init__(self, token: int | None) -> None:
        self.token = token
        self.calls = 0

    def hosts_domain(self, name: str) -> bool:
        self.calls += 1
        return name == "ours.test"

    def find_mailbox(self, address: str) -> Path | None:
        self.calls += 1
        return Path("/m") if address == "a@ours.test" else None

    def change_token(self) -> int | None:
        return self.token


def test_answers_are_kept_until_the_token_moves() -> None:
    d = CountingDirectory(token=1)
    cache = CachedLookups(d, check_every=0)
    for _ in range(3):
        assert cache.hosts_domain("ours.test")
        assert cache.find_mailbox("a@ours.test") == Path("/m")
        assert cache.find_mailbox("b@ours.test") is None
    assert d.calls == 3
    d.token = 2
    assert cache.hosts_domain("ours.test")
    assert d.calls == 4


def test_without_token_answers_expire_by_time() -> None:
    now = [0.0]
    d = CountingDirectory(token=None)
    cache = CachedLookups(d, ttl=5.0, check_every=0, clock=lambda: now[0])
    cache.hosts_domain("ours.test")
    cache.hosts_domain("ours.test")
    assert d.calls == 1
    now[0] = 6.0
    cache.hosts_domain("ours.test")
    assert d.calls == 2


def test_sqlite_token_moves_when_another_connection_commits(tmp_path: Path) -> None:
    home = Home(tmp_path)
    create_directory(home)
    reader, writer = Directory.open(home), Directory.open(home)
    try:
        cache = CachedLookups(reader, check_every=0)
        assert not cache.hosts_domain("new.test")
        writer.add_domain("new.test")
        assert cache.hosts_domain("new.test")
        writer.add_user("u@new.test", "pw")
        assert cache.find_mailbox("u@new.test") is not None
        writer.delete_user("u@new.test")
        assert cache.find_mailbox("u@new.test") is None
    finally:
        reader.close()
        writer.close()


def test_token_is_read_at_most_every_check_every_seconds() -> None:
    now = [0.0]
    d = CountingDirectory(token=1)
    cache = CachedLookups(d, check_every=0.05, clock=lambda: now[0])
    cache.hosts_domain("ours.test")
    d.token = 2
    cache.hosts_domain("ours.test")
    assert d.calls == 1  # the change is not looked for yet
    now[0] = 0.06
    cache.hosts_domain("ours.test")
    assert d.calls == 2
