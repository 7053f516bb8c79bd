"""engine.py on SQLite and a real PostgreSQL: engine options, change notification, recovery."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.directory.engine import (
    CHANNEL,
    ChangeWatcher,
    DirectoryError,
    DirectoryUnavailable,
    make_engine,
    notify_change,
)

DEADLINE = 10.0


def wait_for(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)  # poll interval, bounded by the deadline


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    home.root.mkdir()
    home.database.touch()
    return home


@pytest.fixture
def pg_engine(fresh_postgres_url: str, home: Home) -> Iterator[Engine]:
    engine = make_engine(home, fresh_postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def watcher(pg_engine: Engine) -> Iterator[ChangeWatcher]:
    watcher = ChangeWatcher(pg_engine)
    yield watcher
    watcher.close()


def _write(engine: Engine, notify: bool = True, commit: bool = True) -> None:
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (x integer)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
        if notify:
            notify_change(conn)
        if commit:
            conn.commit()
        else:
            conn.rollback()


# -- SQLite ----------------------------------------------------------------------------


def test_sqlite_engine_has_the_pragmas(home: Home) -> None:
    engine = make_engine(home, None)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "delete"  # decision 0007
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    engine.dispose()


def test_sqlite_missing_database_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="no directory database"):
        make_engine(Home(tmp_path / "missing"), None)


def test_sqlite_watcher_token_moves_on_commit_from_another_connection(home: Home) -> None:
    engine = make_engine(home, None)
    watcher = ChangeWatcher(engine)
    before = watcher.token()
    assert before is not None
    assert watcher.token() == before
    _write(engine)  # notify_change is a no-op on SQLite; the commit itself is seen
    assert watcher.token() != before
    watcher.close()
    engine.dispose()


def test_sqlite_watcher_reports_an_unreadable_file(home: Home) -> None:
    engine = make_engine(home, None)
    home.database.write_bytes(b"not a database" * 512)
    watcher = ChangeWatcher(engine)
    with pytest.raises(DirectoryUnavailable) as caught:
        watcher.token()
    assert isinstance(caught.value, TemporaryFailure)
    watcher.close()
    engine.dispose()


# -- URLs and errors --------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_postgresql_urls_use_psycopg(home: Home, scheme: str) -> None:
    engine = make_engine(home, f"{scheme}://u@127.0.0.1:1/db")
    assert engine.dialect.name == "postgresql"
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "nonsense-with-s3cret",
        "postgresql://u:s3cret@host:notaport/db",
        "nosuchdb://u:s3cret@host/db",
    ],
)
def test_bad_urls_are_errors_without_the_password(home: Home, url: str) -> None:
    with pytest.raises(DirectoryError) as caught:
        make_engine(home, url)
    assert "s3cret" not in str(caught.value)


def test_unreachable_server_is_temporary_and_quick(home: Home) -> None:
    # A closed port on loopback: refused at once; the message must hide the password.
    engine = make_engine(home, "postgresql://u:s3cret@127.0.0.1:1/db")
    with pytest.raises(OperationalError) as caught:
        engine.connect().close()
    assert "s3cret" not in str(caught.value)
    engine.dispose()


# -- PostgreSQL -------------------------------------------------------------------------


def test_postgresql_engine_settings(pg_engine: Engine) -> None:
    with pg_engine.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "10s"
        assert conn.execute(text("SHOW application_name")).scalar() == "qtoaster"
    assert pg_engine.pool._pre_ping


def test_url_settings_win(fresh_postgres_url: str, home: Home) -> None:
    engine = make_engine(home, fresh_postgres_url + "?options=-c%20statement_timeout%3D2000")
    with engine.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "2s"
    engine.dispose()


def test_notify_on_commit_moves_the_token(pg_engine: Engine, watcher: ChangeWatcher) -> None:
    first = watcher.token()
    assert first is not None
    _write(pg_engine)
    wait_for(lambda: watcher.token() != first, "the token to move after a commit")
    assert watcher.token() is not None


def test_no_notification_without_commit(pg_engine: Engine, watcher: ChangeWatcher) -> None:
    first = watcher.token()
    _write(pg_engine, commit=False)
    # Then a committed change: notifications arrive in order, so once the token moves
    # for this one, a notification for the rolled-back write would have been seen too.
    with pg_engine.connect() as conn:
        conn.execute(text(f"NOTIFY {CHANNEL}"))
        conn.commit()
    assert first is not None
    wait_for(lambda: watcher.token() != first, "the committed notification")
    assert watcher.token() == first + 1


def test_a_change_from_another_client_is_seen(
    fresh_postgres_url: str, watcher: ChangeWatcher
) -> None:
    first = watcher.token()
    with psycopg.connect(fresh_postgres_url, autocommit=True) as other:
        other.execute(f"NOTIFY {CHANNEL}")
    wait_for(lambda: watcher.token() != first, "a notification from another client")


def test_watcher_survives_losing_its_connection(
    pg_engine: Engine, watcher: ChangeWatcher, postgres_server: Any
) -> None:
    first = watcher.token()
    with pg_engine.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'qtoaster-listen' AND datname = current_database()"
            )
        ).scalar()
    assert killed
    # Either seen as None for a moment or already back: never the old value again.
    wait_for(lambda: watcher.token() not in (None, first), "the watcher to reconnect")
    second = watcher.token()
    _write(pg_engine)
    wait_for(lambda: watcher.token() not in (None, second), "a change after reconnecting")


def test_watcher_survives_a_server_restart(
    pg_engine: Engine, watcher: ChangeWatcher, postgres_server: Any
) -> None:
    first = watcher.token()
    postgres_server.stop()
    try:
        wait_for(lambda: watcher.token() is None, "the token to become unknown")
    finally:
        postgres_server.start()
    wait_for(lambda: watcher.token() is not None, "the watcher to reconnect")
    assert watcher.token() != first
    second = watcher.token()
    _write(pg_engine)  # the pool's pre-ping replaces the connections the restart killed
    wait_for(lambda: watcher.token() not in (None, second), "a change after the restart")


def test_close_is_quick_and_idempotent(pg_engine: Engine) -> None:
    watcher = ChangeWatcher(pg_engine)
    assert watcher.token() is not None
    started = time.monotonic()
    watcher.close()
    watcher.close()
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
def test_errors_do_not_quote_parameters(
    engine_name: str, home: Home, request: pytest.FixtureRequest
) -> None:
    url = None if engine_name == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    engine = make_engine(home, url)
    with pytest.raises(SQLAlchemyError) as caught, engine.connect() as conn:
        conn.execute(text("SELECT * FROM missing WHERE x = :x"), {"x": "$argon2id$secret"})
    assert "$argon2id$secret" not in str(caught.value)
    engine.dispose()
