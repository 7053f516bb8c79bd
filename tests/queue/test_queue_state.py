"""The append-only state file."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtoaster.queue import state
from qtoaster.queue.format import BadQueueFile


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s"
    assert state.read_state(path) == state.MessageState()
    state.append(path, [state.delivered(0)], fsync=True)
    state.append(path, [state.failed(2, "line one\nback\\slash")], fsync=False)
    state.append(path, [state.bounced("abc")])
    got = state.read_state(path)
    assert got.delivered == {0}
    assert got.failed == {2: "line one\nback\\slash"}
    assert got.bounce == "abc"
    assert got.done == {0, 2}
    assert path.read_bytes().count(b"\n") == 3


def test_no_bounce_needed_marker(tmp_path: Path) -> None:
    path = tmp_path / "s"
    state.append(path, [state.bounced(None)])
    assert state.read_state(path).bounce == "-"


def test_torn_last_line_is_ignored_and_cut(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(b"D 0\nD 1")  # crash in the middle of an append
    assert state.read_state(path).delivered == {0}
    state.append(path, [state.delivered(3)])
    assert path.read_bytes() == b"D 0\nD 3\n"


def test_new_file_syncs_directory_once(tmp_path: Path) -> None:
    calls: list[int] = []
    path = tmp_path / "s"
    state.append(path, [state.delivered(0)], sync_dir=lambda: calls.append(1))
    state.append(path, [state.delivered(1)], sync_dir=lambda: calls.append(1))
    assert calls == [1]


def test_malformed_line_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(b"D zero\n")
    with pytest.raises(BadQueueFile):
        state.read_state(path)


def test_dsn_delivery_and_success_notice_records(tmp_path: Path) -> None:
    """``D <idx> dsn``: the next hop got the DSN request; ``S``: the success notice is queued."""
    path = tmp_path / "s"
    state.append(path, [state.delivered(0, dsn=True), state.delivered(1), state.notified("n1")])
    assert path.read_bytes() == b"D 0 dsn\nD 1\nS n1\n"
    got = state.read_state(path)
    assert got.delivered == {0, 1} and got.passed_on == {0}
    assert got.notified == "n1"


@pytest.mark.parametrize("line", [b"D 0 other\n", b"D x dsn\n", b"S\n"])
def test_bad_dsn_records_make_the_file_unreadable(tmp_path: Path, line: bytes) -> None:
    path = tmp_path / "s"
    path.write_bytes(line)
    with pytest.raises(BadQueueFile):
        state.read_state(path)
