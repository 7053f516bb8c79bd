"""One POP3 session per mailbox: in one process, across processes, and after a kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qtoaster.maildir import lock as lock_module
from qtoaster.maildir.lock import LOCK_FILE, MailboxLock, acquire

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from qtoaster.maildir.lock import MailboxLock
    held = MailboxLock.acquire(Path(sys.argv[1]))
    print("locked" if held else "busy", flush=True)
    sys.stdin.read()  # hold the lock until killed or stdin closes
    """
)


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    path = tmp_path / "Maildir"
    path.mkdir()
    return path


def child(maildir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(maildir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()  # pytest-timeout bounds the wait


def test_second_acquire_in_process_fails(maildir: Path) -> None:
    first = acquire(maildir)
    assert first is not None and first.held
    assert acquire(maildir) is None
    first.release()
    assert not first.held
    first.release()  # twice is harmless
    second = MailboxLock.acquire(maildir)
    assert second is not None
    second.release()


def test_with_block_releases(maildir: Path) -> None:
    lock = MailboxLock.acquire(maildir)
    assert lock is not None
    with lock as held:
        assert held.held and acquire(maildir) is None
    again = acquire(maildir)
    assert again is not None
    again.release()
    assert (maildir / LOCK_FILE).exists()  # never unlinked (module docstring)


def test_registry_covers_per_process_locks(maildir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As if flock were fcntl-emulated (NFS): the kernel would grant both in one process.
    monkeypatch.setattr(lock_module, "_try_flock", lambda fd: True)
    first = acquire(maildir)
    assert first is not None
    assert acquire(maildir) is None
    first.release()


def test_no_maildir_is_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        acquire(tmp_path / "missing")


def test_child_process_is_refused_while_held(maildir: Path) -> None:
    held = acquire(maildir)
    assert held is not None
    proc, answer = child(maildir)
    try:
        assert answer == "busy"
    finally:
        proc.kill()
        proc.wait()
        held.release()


def test_killed_child_releases(maildir: Path) -> None:
    proc, answer = child(maildir)
    try:
        assert answer == "locked"
        assert acquire(maildir) is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    after = acquire(maildir)
    assert after is not None
    after.release()
