"""The pause handshake between a backup and the queue manager (queue/pause.py): live only
while the requester holds it, answered with its own token, never stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from qtoaster.queue.pause import PauseRequest, PauseWatch, live_token


def test_request_answer_and_release(tmp_path: Path) -> None:
    run, queue = tmp_path / "run", tmp_path / "queue"
    queue.mkdir()
    request, watch = PauseRequest(run, queue), PauseWatch(run, queue)
    assert watch.requested() is None
    request.hold()
    assert (run / "send.pause").stat().st_mode & 0o777 == 0o644
    token = watch.requested()
    assert token == request.token
    assert not request.honoured()
    assert watch.acknowledge(token) is True
    assert watch.acknowledge(token) is False  # once per token
    assert request.honoured()
    request.release()
    assert watch.requested() is None
    watch.resume()
    assert not (queue / "paused").exists()


def test_an_old_answer_does_not_answer_a_new_request(tmp_path: Path) -> None:
    run, queue = tmp_path / "run", tmp_path / "queue"
    queue.mkdir()
    (queue / "paused").write_text("an-old-token\n")
    request = PauseRequest(run, queue)
    request.hold()
    try:
        assert not request.honoured()
    finally:
        request.release()


def test_a_requester_that_died_leaves_no_live_request(tmp_path: Path) -> None:
    run, queue = tmp_path / "run", tmp_path / "queue"
    queue.mkdir()
    code = (
        "import os, sys; from pathlib import Path; from qtoaster.queue.pause import PauseRequest;"
        f"r = PauseRequest(Path({str(run)!r}), Path({str(queue)!r})); r.hold(); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False, timeout=30)
    assert (run / "send.pause").exists()  # left behind by the kill
    assert live_token(run / "send.pause") is None


def test_an_unreadable_request_is_ignored(tmp_path: Path) -> None:
    run, queue = tmp_path / "run", tmp_path / "queue"
    run.mkdir()
    (run / "send.pause").mkdir()  # reading it fails with EISDIR... as any OSError
    assert PauseWatch(run, queue).requested() is None
