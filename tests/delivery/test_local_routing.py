"""LocalAgent routing: aliases, catch-all, unknown users, alias domains, the user's .qmail
file, forwarding through a real queue, loops and the Maildir++ quota (spec 16, 21, 22)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qtoaster.core.home import Home
from qtoaster.core.outcome import Outcome, Result
from qtoaster.delivery.instructions import NO_QUEUE, QUOTA_TEMPORARY
from qtoaster.delivery.local import (
    DISCARDED,
    LOOPING,
    MAILDIR_TEMPORARY,
    NO_MAILBOX,
    OVER_QUOTA,
    LocalAgent,
)
from qtoaster.directory.store import Directory, create_directory
from qtoaster.queue.store import QueuedMessage, QueueStore

QUEUE_HEADER = b"queue-envelope-that-is-not-delivered\n"
MESSAGE = b"Received: from x\nSubject: hi\n\nhello\n"
SENDER = "bob@far.test"


@dataclass(frozen=True)
class FakeControls:
    me: str = "mx.example.com"
    locals: frozenset[str] = frozenset({"mx.example.com", "localhost"})
    defaultdomain: str = "example.com"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    create_directory(home)
    return home


@pytest.fixture
def directory(home: Home) -> Iterator[Directory]:
    directory = Directory.open(home)
    directory.add_domain("example.com")
    directory.add_user("alice@example.com", None)
    directory.add_alias("info@example.com", ["friend@remote.test"])
    yield directory
    directory.close()


@pytest.fixture
def queue(tmp_path: Path) -> QueueStore:
    QueueStore.create(tmp_path / "queue")
    return QueueStore(tmp_path / "queue", fsync=False)


@pytest.fixture
def agent(home: Home, directory: Directory, queue: QueueStore) -> LocalAgent:
    return LocalAgent(home, FakeControls(), directory, fsync=False, queue=queue)


@pytest.fixture
def message(tmp_path: Path) -> tuple[Path, int]:
    return write_message(tmp_path / "msg")


def write_message(path: Path, body: bytes = MESSAGE) -> tuple[Path, int]:
    path.write_bytes(QUEUE_HEADER + body)
    return path, len(QUEUE_HEADER)


def deliver(agent: LocalAgent, message: tuple[Path, int], recipient: str) -> Result:
    return agent.deliver(message[0], message[1], SENDER, recipient)


def stored(maildir: Path) -> list[bytes]:
    new = maildir / "new"
    return [(new / name).read_bytes() for name in sorted(os.listdir(new))]


def mailbox(home: Home, user: str, domain: str = "example.com") -> list[bytes]:
    return stored(home.maildir(domain, user))


def queued(queue: QueueStore, result: Result) -> tuple[QueuedMessage, bytes]:
    """The one message in the queue, whose id ends ``result``'s report."""
    [qid] = queue.ids()
    assert result.report.endswith(f"qp {qid}")
    entry = queue.load(qid)
    with open(entry.path, "rb") as stream:
        stream.seek(entry.body_offset)
        return entry, stream.read()


def dotqmail(home: Home, text: str, user: str = "alice", mode: int = 0o600) -> Path:
    path = home.maildir("example.com", user).parent / ".qmail"
    path.write_text(text)
    os.chmod(path, mode)
    return path


# --- aliases ----------------------------------------------------------------------------


def test_alias_to_a_remote_address_is_queued(
    agent: LocalAgent, queue: QueueStore, message: tuple[Path, int]
) -> None:
    result = deliver(agent, message, "Info@Example.COM")
    assert result.outcome is Outcome.SUCCESS
    assert result.report.startswith("did 0+1+0/qp ")
    entry, body = queued(queue, result)
    assert entry.envelope.sender == SENDER
    assert entry.envelope.recipients == ("friend@remote.test",)
    assert entry.origin == "forward"
    assert body == b"Delivered-To: Info@example.com\n" + MESSAGE
    assert entry.size == len(body)


def test_bounce_forwarded_keeps_the_null_sender(
    agent: LocalAgent, queue: QueueStore, message: tuple[Path, int]
) -> None:
    result = agent.deliver(message[0], message[1], "", "info@example.com")
    entry, _ = queued(queue, result)
    assert entry.envelope.sender == ""


def test_queue_failure_is_temporary(
    agent: LocalAgent, queue: QueueStore, message: tuple[Path, int]
) -> None:
    queue.tmp.rmdir()  # the spool cannot be created
    result = deliver(agent, message, "info@example.com")
    assert result.outcome is Outcome.TEMPORARY
    assert result.report.startswith("Unable to forward message: ")
    assert result.report.endswith(" (#4.3.0)")


def test_alias_with_several_targets_is_one_message(
    agent: LocalAgent, directory: Directory, queue: QueueStore, message: tuple[Path, int]
) -> None:
    directory.add_alias("team@example.com", ["a@remote.test", "b@remote.test"])
    result = deliver(agent, message, "team@example.com")
    assert result.report.startswith("did 0+2+0/qp ")
    entry, _ = queued(queue, result)
    assert entry.envelope.recipients == ("a@remote.test", "b@remote.test")


def test_alias_keeping_a_copy(
    agent: LocalAgent,
    directory: Directory,
    home: Home,
    queue: QueueStore,
    message: tuple[Path, int],
) -> None:
    directory.add_alias("alice@example.com", ["friend@remote.test"], keep_copy=True)
    result = deliver(agent, message, "alice@example.com")
    assert result.outcome is Outcome.SUCCESS
    assert result.report.startswith("did 1+1+0/qp ")
    assert mailbox(home, "alice") == [
        b"Return-Path: <bob@far.test>\nDelivered-To: alice@example.com\n" + MESSAGE
    ]
    entry, body = queued(queue, result)
    assert entry.envelope.recipients == ("friend@remote.test",)
    assert body == b"Delivered-To: alice@example.com\n" + MESSAGE


def test_alias_of_a_user_without_copy_only_forwards(
    agent: LocalAgent,
    directory: Directory,
    home: Home,
    queue: QueueStore,
    message: tuple[Path, int],
) -> None:
    directory.add_alias("alice@example.com", ["friend@remote.test"])
    result = deliver(agent, message, "alice@example.com")
    assert result.report.startswith("did 0+1+0/qp ")
    assert mailbox(home, "alice") == []


def test_alias_to_a_maildir_path(
    agent: LocalAgent, directory: Directory, tmp_path: Path, message: tuple[Path, int]
) -> None:
    archive = tmp_path / "archive" / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (archive / sub).mkdir(parents=True)
    directory.add_alias("archive@example.com", [f"{archive}/"])
    result = deliver(agent, message, "archive@example.com")
    assert result == Result(Outcome.SUCCESS, "did 1+0+0/")
    assert stored(archive) == [
        b"Return-Path: <bob@far.test>\nDelivered-To: archive@example.com\n" + MESSAGE
    ]


def test_forwarding_without_a_queue_is_temporary(
    home: Home, directory: Directory, message: tuple[Path, int]
) -> None:
    agent = LocalAgent(home, FakeControls(), directory, fsync=False)
    assert deliver(agent, message, "info@example.com") == Result(Outcome.TEMPORARY, NO_QUEUE)


# --- unknown users: catch-all, delete, bounce -------------------------------------------


def test_catch_all_forwards(
    agent: LocalAgent, directory: Directory, queue: QueueStore, message: tuple[Path, int]
) -> None:
    directory.add_domain("catchall.test", unknown_user="all@remote.test")
    result = deliver(agent, message, "whoever@catchall.test")
    assert result.report.startswith("did 0+1+0/qp ")
    entry, body = queued(queue, result)
    assert entry.envelope.sender == SENDER
    assert entry.envelope.recipients == ("all@remote.test",)
    assert body.startswith(b"Delivered-To: whoever@catchall.test\n")


def test_delete_discards(
    agent: LocalAgent, directory: Directory, home: Home, queue: QueueStore, tmp_path: Path
) -> None:
    directory.add_domain("delete.test", unknown_user="delete")
    message = write_message(tmp_path / "msg")
    assert deliver(agent, message, "whoever@delete.test") == Result(Outcome.SUCCESS, DISCARDED)
    assert DISCARDED == "did 0+0+0/"
    assert queue.ids() == []
    assert not (home.domains / "delete.test").exists()


def test_bounce_is_permanent(
    agent: LocalAgent, directory: Directory, queue: QueueStore, message: tuple[Path, int]
) -> None:
    directory.add_domain("bounce.test", unknown_user="bounce")
    result = deliver(agent, message, "whoever@bounce.test")
    assert result == Result(Outcome.PERMANENT, NO_MAILBOX)
    assert NO_MAILBOX == "Sorry, no mailbox here by that name. (#5.1.1)"
    assert queue.ids() == []


def test_alias_domain(
    agent: LocalAgent, directory: Directory, home: Home, queue: QueueStore, tmp_path: Path
) -> None:
    directory.add_alias_domain("alias.test", "example.com")
    message = write_message(tmp_path / "msg")
    assert deliver(agent, message, "alice@ALIAS.test") == Result(Outcome.SUCCESS, "did 1+0+0/")
    [copy] = mailbox(home, "alice")
    assert copy.startswith(b"Return-Path: <bob@far.test>\nDelivered-To: alice@alias.test\n")
    result = deliver(agent, message, "info@alias.test")  # the target domain's aliases
    assert result.report.startswith("did 0+1+0/qp ")
    assert deliver(agent, message, "nobody@alias.test") == Result(Outcome.PERMANENT, NO_MAILBOX)


# --- the user's .qmail file ---------------------------------------------------------------


def test_dotqmail_maildir_and_forward(
    agent: LocalAgent, home: Home, queue: QueueStore, message: tuple[Path, int]
) -> None:
    dotqmail(home, "# mine\n./Maildir/\n&other@remote.test\n")
    result = deliver(agent, message, "alice@example.com")
    assert result.report.startswith("did 1+1+0/qp ")
    assert len(mailbox(home, "alice")) == 1
    entry, body = queued(queue, result)
    assert entry.envelope.recipients == ("other@remote.test",)
    assert body.startswith(b"Delivered-To: alice@example.com\n")


def test_dotqmail_program(
    agent: LocalAgent, home: Home, queue: QueueStore, message: tuple[Path, int]
) -> None:
    dotqmail(
        home,
        '|cat > stdin.out && printf \'%s|%s|%s\' "$RECIPIENT" "$SENDER" "$USER" > env.out'
        ' && printf "%s" "$DTLINE" > dtline.out\n',
    )
    result = deliver(agent, message, "alice@example.com")
    assert result == Result(Outcome.SUCCESS, "did 0+0+1/")
    user_dir = home.maildir("example.com", "alice").parent
    assert (user_dir / "stdin.out").read_bytes() == MESSAGE  # without our two lines
    assert (user_dir / "env.out").read_text() == "alice@example.com|bob@far.test|alice"
    assert (user_dir / "dtline.out").read_text() == "Delivered-To: alice@example.com\n"
    assert mailbox(home, "alice") == []
    assert queue.ids() == []


@pytest.mark.parametrize(("code", "outcome"), [(100, Outcome.PERMANENT), (111, Outcome.TEMPORARY)])
def test_dotqmail_program_failure(
    agent: LocalAgent,
    home: Home,
    queue: QueueStore,
    message: tuple[Path, int],
    code: int,
    outcome: Outcome,
) -> None:
    dotqmail(home, f"&early@remote.test\n|echo refused; exit {code}\n./Maildir/\n")
    result = deliver(agent, message, "alice@example.com")
    assert result == Result(outcome, "refused\n")
    assert queue.ids() == []  # forwards happen only if everything succeeded
    assert mailbox(home, "alice") == []  # the line after the failure did not run


def test_dotqmail_exit_99_skips_the_rest(
    agent: LocalAgent, home: Home, queue: QueueStore, message: tuple[Path, int]
) -> None:
    dotqmail(home, "&early@remote.test\n|exit 99\n./Maildir/\n&late@remote.test\n")
    result = deliver(agent, message, "alice@example.com")
    assert result.outcome is Outcome.SUCCESS
    assert result.report.startswith("did 0+1+1/qp ")
    entry, _ = queued(queue, result)
    assert entry.envelope.recipients == ("early@remote.test",)
    assert mailbox(home, "alice") == []


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_writable_dotqmail_is_temporary(
    agent: LocalAgent, home: Home, queue: QueueStore, message: tuple[Path, int], mode: int
) -> None:
    dotqmail(home, "&other@remote.test\n", mode=mode)
    result = deliver(agent, message, "alice@example.com")
    assert result == Result(Outcome.TEMPORARY, "Uh-oh: .qmail file is writable. (#4.7.0)")
    assert queue.ids() == []
    assert mailbox(home, "alice") == []


def test_empty_dotqmail_is_the_default_delivery(
    agent: LocalAgent, home: Home, message: tuple[Path, int]
) -> None:
    dotqmail(home, "")
    assert deliver(agent, message, "alice@example.com") == Result(Outcome.SUCCESS, "did 1+0+0/")
    assert len(mailbox(home, "alice")) == 1


@pytest.mark.parametrize("text", ["#\n", "# discard everything\n+list\n"])
def test_comment_only_dotqmail_discards(
    agent: LocalAgent, home: Home, queue: QueueStore, message: tuple[Path, int], text: str
) -> None:
    # Not empty, so obeyed: no instruction, nothing delivered (the "#" idiom, spec 16.2).
    dotqmail(home, text)
    assert deliver(agent, message, "alice@example.com") == Result(Outcome.SUCCESS, "did 0+0+0/")
    assert mailbox(home, "alice") == []
    assert queue.ids() == []


def test_dotqmail_mbox_line(agent: LocalAgent, home: Home, message: tuple[Path, int]) -> None:
    dotqmail(home, "./mbox\n")
    assert deliver(agent, message, "alice@example.com") == Result(Outcome.SUCCESS, "did 1+0+0/")
    mbox = (home.maildir("example.com", "alice").parent / "mbox").read_bytes()
    assert mbox.startswith(b"From bob@far.test ")
    assert b"\nReturn-Path: <bob@far.test>\nDelivered-To: alice@example.com\n" in mbox
    assert mailbox(home, "alice") == []


# --- loops --------------------------------------------------------------------------------


def test_forwarding_loop_is_permanent(agent: LocalAgent, queue: QueueStore, tmp_path: Path) -> None:
    looping = write_message(tmp_path / "loop", b"Delivered-To: info@example.com\n" + MESSAGE)
    assert deliver(agent, looping, "info@example.com") == Result(Outcome.PERMANENT, LOOPING)
    assert queue.ids() == []


def test_forwarded_copy_coming_back_loops(
    agent: LocalAgent, directory: Directory, queue: QueueStore, message: tuple[Path, int]
) -> None:
    directory.add_alias("ping@example.com", ["pong@example.com"])
    first = deliver(agent, message, "ping@example.com")
    entry, _ = queued(queue, first)
    # the queue would hand its copy to pong, an alias pointing back to ping
    directory.add_alias("pong@example.com", ["ping@example.com"])
    second = agent.deliver(entry.path, entry.body_offset, SENDER, "pong@example.com")
    assert second.outcome is Outcome.SUCCESS
    [_, qid] = sorted(queue.ids())
    again = queue.load(qid)
    assert again.envelope.recipients == ("ping@example.com",)
    third = agent.deliver(again.path, again.body_offset, SENDER, "ping@example.com")
    assert third == Result(Outcome.PERMANENT, LOOPING)


def test_dotqmail_forward_loop(agent: LocalAgent, home: Home, tmp_path: Path) -> None:
    dotqmail(home, "&other@remote.test\n")
    looping = write_message(tmp_path / "loop", b"Delivered-To: alice@example.com\n" + MESSAGE)
    assert deliver(agent, looping, "alice@example.com").report == LOOPING


# --- Maildir++ quota ----------------------------------------------------------------------

BODY = MESSAGE + b"x" * 500 + b"\n"


def sizes_file(maildir: Path) -> list[str]:
    return (maildir / "maildirsize").read_text().splitlines()


def test_quota_until_refused(
    agent: LocalAgent, directory: Directory, home: Home, tmp_path: Path
) -> None:
    directory.add_user("small@example.com", None, quota=2000)
    maildir = home.maildir("example.com", "small")
    message = write_message(tmp_path / "msg", BODY)
    size = len(b"Return-Path: <bob@far.test>\nDelivered-To: small@example.com\n" + BODY)
    fitting = 2000 // size
    assert fitting == 3
    for _ in range(fitting):
        assert deliver(agent, message, "small@example.com") == Result(Outcome.SUCCESS, "did 1+0+0/")
    # created at the first delivery from a scan (no messages then), then one line each
    assert sizes_file(maildir) == ["2000S", "0 0"] + [f"{size} 1"] * fitting
    for name in os.listdir(maildir / "new"):
        assert name.endswith(f",S={size}")
        assert (maildir / "new" / name).stat().st_size == size
    result = deliver(agent, message, "small@example.com")
    assert result == Result(Outcome.PERMANENT, "User over quota. (#5.1.1)")
    assert OVER_QUOTA == "User over quota. (#5.1.1)"
    assert len(stored(maildir)) == fitting
    assert sizes_file(maildir) == ["2000S", f"{fitting * size} {fitting}"]  # recalculated


def test_quota_exactly_full_is_allowed(
    agent: LocalAgent, directory: Directory, home: Home, tmp_path: Path
) -> None:
    message = write_message(tmp_path / "msg", BODY)
    size = len(b"Return-Path: <bob@far.test>\nDelivered-To: exact@example.com\n" + BODY)
    directory.add_user("exact@example.com", None, quota=2 * size)
    for _ in range(2):
        assert deliver(agent, message, "exact@example.com").outcome is Outcome.SUCCESS
    assert deliver(agent, message, "exact@example.com").report == OVER_QUOTA


def test_quota_by_message_count(
    agent: LocalAgent, directory: Directory, home: Home, message: tuple[Path, int]
) -> None:
    directory.add_user("few@example.com", None, quota_messages=2)
    maildir = home.maildir("example.com", "few")
    assert deliver(agent, message, "few@example.com").outcome is Outcome.SUCCESS
    assert deliver(agent, message, "few@example.com").outcome is Outcome.SUCCESS
    assert deliver(agent, message, "few@example.com") == Result(Outcome.PERMANENT, OVER_QUOTA)
    assert sizes_file(maildir)[0] == "2C"
    assert len(stored(maildir)) == 2


def test_quota_through_dotqmail_maildir_line(
    agent: LocalAgent, directory: Directory, home: Home, message: tuple[Path, int]
) -> None:
    directory.set_user("alice@example.com", quota_messages=1)
    dotqmail(home, "./Maildir/\n")
    assert deliver(agent, message, "alice@example.com").outcome is Outcome.SUCCESS
    assert deliver(agent, message, "alice@example.com").report == OVER_QUOTA


def test_alias_copy_is_charged(
    agent: LocalAgent, directory: Directory, home: Home, queue: QueueStore, tmp_path: Path
) -> None:
    directory.set_user("alice@example.com", quota_messages=1)
    directory.add_alias("alice@example.com", ["friend@remote.test"], keep_copy=True)
    message = write_message(tmp_path / "msg")
    assert deliver(agent, message, "alice@example.com").outcome is Outcome.SUCCESS
    result = deliver(agent, message, "alice@example.com")
    assert result == Result(Outcome.PERMANENT, OVER_QUOTA)
    assert len(queue.ids()) == 1  # the refused delivery forwarded nothing


def test_maildir_replaced_by_a_file_is_temporary(
    agent: LocalAgent, directory: Directory, home: Home, message: tuple[Path, int]
) -> None:
    directory.add_user("small@example.com", None, quota=2000)
    for user in ("alice", "small"):
        maildir = home.maildir("example.com", user)
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).rmdir()
        maildir.rmdir()
        maildir.write_bytes(b"")
    result = deliver(agent, message, "alice@example.com")  # no quota
    assert result.outcome is Outcome.TEMPORARY
    assert result.report.startswith(MAILDIR_TEMPORARY)
    result = deliver(agent, message, "small@example.com")  # quota: read first
    assert result == Result(Outcome.TEMPORARY, f"{QUOTA_TEMPORARY} Not a directory")


def test_maildirsize_directory_is_temporary(
    agent: LocalAgent, directory: Directory, home: Home, message: tuple[Path, int]
) -> None:
    directory.add_user("small@example.com", None, quota=2000)
    maildir = home.maildir("example.com", "small")
    (maildir / "maildirsize").mkdir()
    result = deliver(agent, message, "small@example.com")
    assert result == Result(Outcome.TEMPORARY, f"{QUOTA_TEMPORARY} Is a directory")
    assert stored(maildir) == []


def test_failed_recalculation_is_temporary_not_over_quota(
    agent: LocalAgent, directory: Directory, home: Home, message: tuple[Path, int]
) -> None:
    # The file says "over" (two lines: not trusted), the rebuild cannot write its tmp file.
    directory.add_user("small@example.com", None, quota=2000)
    maildir = home.maildir("example.com", "small")
    (maildir / "maildirsize").write_text("2000S\n1500 1\n1500 1\n")
    (maildir / "tmp").rmdir()
    (maildir / "tmp").write_bytes(b"")
    result = deliver(agent, message, "small@example.com")
    assert result.outcome is Outcome.TEMPORARY
    assert result.report.startswith(QUOTA_TEMPORARY)


def test_no_quota_no_maildirsize(agent: LocalAgent, home: Home, message: tuple[Path, int]) -> None:
    assert deliver(agent, message, "alice@example.com").outcome is Outcome.SUCCESS
    assert not (home.maildir("example.com", "alice") / "maildirsize").exists()


def test_raised_quota_takes_effect(
    agent: LocalAgent, directory: Directory, home: Home, queue: QueueStore, tmp_path: Path
) -> None:
    directory.add_user("few@example.com", None, quota_messages=1)
    maildir = home.maildir("example.com", "few")
    message = write_message(tmp_path / "msg")
    assert deliver(agent, message, "few@example.com").outcome is Outcome.SUCCESS
    assert deliver(agent, message, "few@example.com").report == OVER_QUOTA
    directory.set_user("few@example.com", quota_messages=3)
    # a new agent: the running one may keep its cached answer for check_every seconds
    fresh = LocalAgent(home, FakeControls(), directory, fsync=False, queue=queue)
    assert deliver(fresh, message, "few@example.com").outcome is Outcome.SUCCESS
    assert sizes_file(maildir)[0] == "3C"  # the directory's limit, not the file's
    assert len(stored(maildir)) == 2
