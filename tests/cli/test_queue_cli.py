"""``qtoaster queue list|stat|show|delete`` through click's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from qtoaster.cli.main import cli
from qtoaster.core.envelope import Envelope
from qtoaster.queue import state
from qtoaster.queue.store import QueueStore, commit_message


@pytest.fixture
def home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    (root / "control").mkdir(parents=True)
    (root / "control" / "me").write_text("mx.example.com\n")
    (root / "control" / "locals").write_text("mx.example.com\nexample.com\n")
    QueueStore.create(root / "queue")
    return root


def queue_one(home: Path) -> str:
    store = QueueStore(home / "queue", fsync=False)
    env = Envelope("alice@example.org", ("bob@example.com", "far@remote.example", "joe"))
    qid = commit_message(store, env, "inject uid 0", [b"Subject: hi\n\nbody\n"])
    state.append(store.state_path(qid), [state.delivered(0)], fsync=False)
    return qid


def invoke(home: Path, *args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["queue", *args, "--home", str(home)], input=input)
    return result.exit_code, result.output


def test_stat(home: Path) -> None:
    assert invoke(home, "stat") == (
        0,
        "messages in queue: 0\nmessages in queue but not yet preprocessed: 0\n",
    )
    queue_one(home)
    assert invoke(home, "stat")[1].startswith("messages in queue: 1\n")


def test_list(home: Path) -> None:
    qid = queue_one(home)
    code, out = invoke(home, "list")
    assert code == 0
    lines = out.splitlines()
    assert f"msg {qid}: 18 bytes from <alice@example.org>" in lines[0]
    assert lines[0].endswith(
        "GMT  msg " + qid + ": 18 bytes from <alice@example.org>  (inject uid 0)"
    )
    assert lines[1:] == [
        "  done    bob@example.com",
        "  remote  far@remote.example",
        "  local   joe@mx.example.com",
    ]


def test_show(home: Path) -> None:
    qid = queue_one(home)
    code, out = invoke(home, "show", qid)
    assert code == 0
    assert out.startswith(
        "From: <alice@example.org>\nTo: <bob@example.com>\nTo: <far@remote.example>\nTo: <joe>\n"
    )
    assert out.endswith("\nSubject: hi\n\nbody\n")


def test_delete(home: Path) -> None:
    qid = queue_one(home)
    code, out = invoke(home, "delete", qid, input="n\n")
    assert code == 1 and "Aborted" in out
    assert invoke(home, "stat")[1].startswith("messages in queue: 1")
    code, out = invoke(home, "delete", qid, input="y\n")
    assert code == 0 and f"deleted msg {qid}" in out
    assert invoke(home, "stat")[1].startswith("messages in queue: 0")
    assert not list((home / "queue" / "state").iterdir())


def test_unknown_id(home: Path) -> None:
    for command in ("show", "delete"):
        code, out = (
            invoke(home, command, "0000000000000001-1-1", "--yes")
            if command == "delete"
            else invoke(home, command, "0000000000000001-1-1")
        )
        assert code == 1
        assert "msg 0000000000000001-1-1: not in the queue" in out


def test_no_queue(tmp_path: Path) -> None:
    code, out = invoke(tmp_path / "nothing", "list")
    assert code == 1 and "no queue here" in out


def test_hold_release_and_list(home: Path) -> None:
    qid = queue_one(home)
    assert invoke(home, "hold", qid) == (0, f"held msg {qid}\n")
    assert (home / "queue" / "hold" / qid).exists()
    assert "HELD" in invoke(home, "list")[1].splitlines()[0]
    assert invoke(home, "release", qid) == (0, f"released msg {qid}\n")
    assert "HELD" not in invoke(home, "list")[1]
    code, out = invoke(home, "release", qid)
    assert code == 1 and "not held" in out


def test_hold_unknown_message(home: Path) -> None:
    code, out = invoke(home, "hold", "0123456789abcdef-1-1")
    assert code == 1 and "not in the queue" in out


def test_retry_needs_an_id_or_all(home: Path) -> None:
    code, out = invoke(home, "retry")
    assert code == 2 and "one message id or --all" in out
    qid = queue_one(home)
    assert invoke(home, "retry", qid) == (0, f"retry requested for msg {qid}\n")
    assert invoke(home, "retry", "--all") == (0, "retry requested for every message\n")
    code, out = invoke(home, "retry", "0123456789abcdef-1-1")
    assert code == 1 and "not in the queue" in out


def test_delete_removes_the_hold_mark(home: Path) -> None:
    qid = queue_one(home)
    invoke(home, "hold", qid)
    assert invoke(home, "delete", qid, "--yes")[0] == 0
    assert not (home / "queue" / "hold" / qid).exists()


def test_retry_of_a_held_message_is_refused(home: Path) -> None:
    qid = queue_one(home)
    other = queue_one(home)
    assert invoke(home, "hold", qid)[0] == 0
    code, out = invoke(home, "retry", qid)
    assert code == 1
    assert "retry requested" not in out
    assert f"msg {qid}: held, not retried; release it first: qtoaster queue release {qid}" in out
    code, out = invoke(home, "retry", "--all")
    assert code == 0
    assert out.splitlines() == [
        "retry requested for every message",
        f"1 held, not retried (qtoaster queue release ID...): {qid}",
    ]
    assert invoke(home, "retry", other) == (0, f"retry requested for msg {other}\n")
    assert invoke(home, "release", qid)[0] == 0
    assert invoke(home, "retry", qid) == (0, f"retry requested for msg {qid}\n")
