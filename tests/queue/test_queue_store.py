"""QueueStore: commit protocol, crash states and their clean-up, group commit."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from qtoaster.core.clock import FakeClock
from qtoaster.core.envelope import Envelope
from qtoaster.core.errors import QueueError
from qtoaster.queue.format import BadQueueFile
from qtoaster.queue.store import (
    STALE_TMP_SECONDS,
    DirSync,
    NoSuchMessage,
    QueueStore,
    commit_message,
    is_qid,
    new_qid,
)

ENV = Envelope("alice@example.com", ("bob@example.net",))


@pytest.fixture
def store(tmp_path: Path) -> QueueStore:
    QueueStore.create(tmp_path / "queue")
    return QueueStore(tmp_path / "queue", fsync=True, clock=FakeClock(1_700_000_000.0))


def test_create_is_idempotent(tmp_path: Path) -> None:
    QueueStore.create(tmp_path / "q")
    QueueStore.create(tmp_path / "q")
    for name in ("tmp", "mess", "state", "bad"):
        assert stat.S_IMODE((tmp_path / "q" / name).stat().st_mode) == 0o700
    assert stat.S_ISFIFO((tmp_path / "q" / "trigger").stat().st_mode)


def test_ids_are_unique_sortable_and_safe() -> None:
    ids = [new_qid() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)
    assert all(is_qid(i) and "/" not in i for i in ids)


def test_commit_and_load(store: QueueStore) -> None:
    spool = store.open_spool(ENV, "smtp 127.0.0.1")
    spool.write(b"Subject: hi\n\n")
    spool.write(b"body\n")
    assert spool.size == 18
    assert os.listdir(store.mess) == []  # nothing visible before the commit
    qid = spool.commit()
    assert store.ids() == [qid]
    assert os.listdir(store.tmp) == []
    msg = store.load(qid)
    assert (msg.birth, msg.origin, msg.envelope, msg.size) == (
        1_700_000_000.0,
        "smtp 127.0.0.1",
        ENV,
        18,
    )
    assert msg.path.read_bytes()[msg.body_offset :] == b"Subject: hi\n\nbody\n"
    spool.abort()  # after commit: harmless
    assert store.ids() == [qid]


def test_abort_removes_tmp_and_is_idempotent(store: QueueStore) -> None:
    spool = store.open_spool(ENV, "x")
    spool.write(b"data")
    spool.abort()
    spool.abort()
    assert os.listdir(store.tmp) == [] and store.ids() == []
    with pytest.raises(QueueError):
        spool.commit()


def test_context_manager_aborts_on_error(store: QueueStore) -> None:
    with pytest.raises(RuntimeError), store.open_spool(ENV, "x") as spool:
        spool.write(b"partial")
        raise RuntimeError
    assert os.listdir(store.tmp) == [] and store.ids() == []


def test_long_address_is_exit_11(store: QueueStore) -> None:
    with pytest.raises(QueueError) as info:
        store.open_spool(Envelope("a" * 1000, ()), "x")
    assert info.value.code == 11


def test_crash_before_rename_leaves_only_tmp(store: QueueStore) -> None:
    spool = store.open_spool(ENV, "x")
    spool.write(b"half a mess")  # the process dies here: no commit, no abort
    assert store.ids() == []
    now = store.clock.time()
    os.utime(store.tmp / spool.qid, (now, now))
    # a young tmp file may belong to a live writer: kept
    assert store.recover() == []
    assert len(os.listdir(store.tmp)) == 1
    # older than 36 hours: removed (qmail's rule), or all of them before workers start
    assert isinstance(store.clock, FakeClock)
    store.clock.advance(STALE_TMP_SECONDS + 1)
    assert store.recover() == [f"removed stale tmp/{spool.qid}"]
    assert os.listdir(store.tmp) == [] and store.ids() == []


def test_recover_everything(store: QueueStore) -> None:
    store.open_spool(ENV, "x").write(b"y")
    assert len(store.recover(everything=True)) == 1
    assert os.listdir(store.tmp) == []


def test_recover_moves_unreadable_aside(store: QueueStore) -> None:
    good = commit_message(store, ENV, "x", [b"ok\n"])
    (store.mess / "0000000000000001-1-1").write_bytes(b"garbage")
    (store.state / "0000000000000001-1-1").write_bytes(b"D 0\n")
    (store.mess / "stray-name").write_bytes(b"")
    (store.state / "0000000000000002-1-1").write_bytes(b"D 0\n")  # orphan
    report = store.recover()
    assert len(report) == 3
    assert store.ids() == [good]
    assert sorted(os.listdir(store.bad)) == [
        "0000000000000001-1-1",
        "0000000000000001-1-1.state",
        "stray-name",
    ]
    assert os.listdir(store.state) == []


def test_load_errors(store: QueueStore) -> None:
    with pytest.raises(NoSuchMessage):
        store.load("0000000000000001-1-1")
    with pytest.raises(NoSuchMessage):
        store.load("../../etc/passwd")
    (store.mess / "0000000000000001-1-1").write_bytes(b"QTQ1 1.0 x\nFa\0")
    with pytest.raises(BadQueueFile):
        store.load("0000000000000001-1-1")


def test_delete(store: QueueStore) -> None:
    qid = commit_message(store, ENV, "x", [b"m"])
    (store.state / qid).write_bytes(b"D 0\n")
    store.delete(qid)
    assert store.ids() == [] and os.listdir(store.state) == []
    with pytest.raises(NoSuchMessage):
        store.delete(qid)


def test_trigger_is_written_when_someone_listens(store: QueueStore) -> None:
    fd = os.open(store.trigger, os.O_RDONLY | os.O_NONBLOCK)
    try:
        qid = commit_message(store, ENV, "x", [b"m"])
        assert os.read(fd, 100) == f"{qid}\n".encode()
    finally:
        os.close(fd)
    commit_message(store, ENV, "x", [b"m"])  # no reader: ENXIO ignored


def test_trigger_full_pipe_is_ignored(store: QueueStore) -> None:
    fd = os.open(store.trigger, os.O_RDWR | os.O_NONBLOCK)
    try:
        for _ in range(3000):  # 3000 * 34 bytes > the 64 KiB pipe buffer
            store.notify("0123456789abcdef-1234-1234567")
        commit_message(store, ENV, "x", [b"m"])
    finally:
        os.close(fd)


def test_group_commit_coalesces_directory_fsyncs(store: QueueStore) -> None:
    threads = 16
    per_thread = 8
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(per_thread):
                commit_message(store, ENV, "x", [b"m\n"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    commits = threads * per_thread
    assert len(store.ids()) == commits
    assert 1 <= store.mess_sync.fsyncs <= commits


def test_group_commit_shares_one_fsync_among_waiters(tmp_path: Path) -> None:
    release = threading.Event()
    calls: list[Path] = []

    def slow_fsync(path: Path) -> None:
        calls.append(path)
        if len(calls) == 1:
            release.wait(timeout=30)  # hold the first fsync while the others arrive

    sync = DirSync(tmp_path, True, slow_fsync)
    first = threading.Thread(target=sync.sync)
    first.start()
    while not calls:  # polled: the first fsync is running
        time.sleep(0.001)
    others = [threading.Thread(target=sync.sync) for _ in range(15)]
    for t in others:
        t.start()
    deadline = time.monotonic() + 30
    while len(sync._cond._waiters) < 15:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.001)
    release.set()
    for t in [first, *others]:
        t.join(timeout=30)
    # the running fsync may predate their renames: the 15 share exactly one more
    assert len(calls) == 2


def test_fsync_false_skips_syncs(tmp_path: Path) -> None:
    QueueStore.create(tmp_path / "q")
    store = QueueStore(tmp_path / "q", fsync=False)
    commit_message(store, ENV, "x", [b"m"])
    assert store.mess_sync.fsyncs == 0
