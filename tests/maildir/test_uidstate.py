"""The UID state file (maildir/uidstate.py, maildir/folderstate.py): log and compaction,
torn tails, rebuild of an unreadable file, migration from Dovecot and Courier, and a
SIGKILL crash loop."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qtoaster.maildir.create import make_maildir
from qtoaster.maildir.folderstate import FolderState
from qtoaster.maildir.fs import LocalFs
from qtoaster.maildir.store import MaildirStore
from qtoaster.maildir.storeapi import SEEN
from qtoaster.maildir.uidstate import STATE_FILE, StateError, UidState

MSG = b"Subject: x\n\nbody\n"


def setup(tmp_path: Path) -> tuple[LocalFs, Path]:
    root = tmp_path / "Maildir"
    make_maildir(root)
    return LocalFs(root, hostname="h", quota=None), root


def test_log_then_compaction(tmp_path: Path) -> None:
    fs, root = setup(tmp_path)
    store = MaildirStore(fs)
    for _ in range(5):
        store.append("INBOX", MSG, [], None)
    size = (root / STATE_FILE).stat().st_size
    view = store.select("INBOX", readonly=False)
    view.store([3], "+", [SEEN], None)
    grown = (root / STATE_FILE).stat().st_size
    assert 0 < grown - size < 200  # a flag change appends a line, rewrites nothing
    state = UidState(fs, "")
    state.sync()
    uidvalidity = state.uidvalidity
    with state.locked():
        state.compact()
    again = store.select("INBOX", readonly=True)
    assert [m.uid for m in again.messages] == [1, 2, 3, 4, 5]
    assert again.uidvalidity == uidvalidity
    assert view.refresh().flags == ()  # the compaction changes nothing the view saw


def test_torn_tail_ignored_then_dropped(tmp_path: Path) -> None:
    fs, root = setup(tmp_path)
    store = MaildirStore(fs)
    store.append("INBOX", MSG, [], None)
    with open(root / STATE_FILE, "ab") as stream:
        stream.write(b"+ 9 9 1 1 cur half")
    store.append("INBOX", MSG, [], None)
    assert not (root / STATE_FILE).read_bytes().endswith(b"half")
    assert [m.uid for m in store.select("INBOX", True).messages] == [1, 2]


def test_garbage_rebuilds_with_new_uidvalidity(tmp_path: Path) -> None:
    fs, root = setup(tmp_path)
    store = MaildirStore(fs)
    store.append("INBOX", MSG, [], None)
    old = store.status("INBOX").uidvalidity
    (root / STATE_FILE).write_bytes(b"Q1 garbage\n")
    status = store.status("INBOX")
    assert status.uidvalidity != old and status.messages == 1


def test_lost_entries_get_new_uids_only(tmp_path: Path) -> None:
    fs, root = setup(tmp_path)
    store = MaildirStore(fs)
    for _ in range(3):
        store.append("INBOX", MSG, [], None)
    data = (root / STATE_FILE).read_bytes().split(b"\n")
    # the record of uid 3 lost: its file gets a UID, and one not given before
    (root / STATE_FILE).write_bytes(
        b"\n".join(line for line in data if not line.startswith(b"+ 3 "))
    )
    view = store.select("INBOX", True)
    uids = [m.uid for m in view.messages]
    assert len(uids) == 3 and len(set(uids)) == 3 and uids[:2] == [1, 2]


def test_migrate_dovecot(tmp_path: Path) -> None:
    fs, root = setup(tmp_path)
    (root / "cur" / "1000.M1P1.h,S=17:2,Sa").write_bytes(MSG)
    (root / "new" / "1001.M1P1.h").write_bytes(MSG)
    (root / "cur" / "1002.M1P1.h:2,").write_bytes(MSG)  # not listed: gets a new UID
    (root / "dovecot-uidlist").write_bytes(
        b"3 V123456 N50 Gabc\n40 :1000.M1P1.h,S=17:2,Sa\n45 W20 :1001.M1P1.h\n"
    )
    (root / "dovecot-keywords").write_bytes(b"0 Work\n")
    view = MaildirStore(fs).select("INBOX", readonly=False)
    assert view.uidvalidity == 123456
    assert [(m.uid, sorted(m.flags)) for m in view.messages] == [
        (40, sorted([SEEN, "Work"])),
        (45, []),
        (50, []),
    ]


def test_migrate_courier(tmp_path: Path) -> None:
    fs, root = setup(tmp_path)
    (root / "cur" / "1000.M1P1.h:2,S").write_bytes(MSG)
    (root / "courierimapuiddb").write_bytes(b"1 777 9\n4 1000.M1P1.h:2,S\n")
    (root / "courierimapkeywords").mkdir()
    (root / "courierimapkeywords" / ":list").write_bytes(b"Blue\n\n1000.M1P1.h:0\n")
    view = MaildirStore(fs).select("INBOX", readonly=True)
    assert view.uidvalidity == 777 and view.uidnext == 9
    assert [(m.uid, m.flags) for m in view.messages] == [(4, frozenset({SEEN, "Blue"}))]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_any_state_bytes(tmp_path: Path, data: bytes) -> None:
    fs, root = setup(tmp_path / str(random.random()))
    (root / "cur" / "1.M1P1.h:2,S").write_bytes(MSG)
    (root / STATE_FILE).write_bytes(data)
    state = UidState(fs, "")
    try:
        state.sync()
    except StateError:
        pass
    folder = FolderState(fs, "")
    with folder.locked():
        folder.load()
        folder.scan(move_new=True)
    assert len(folder.state.entries) == 1


CHILD = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    from qtoaster.maildir.fs import LocalFs
    from qtoaster.maildir.store import MaildirStore
    root = Path(sys.argv[1])
    store = MaildirStore(LocalFs(root, hostname="h", quota=None))
    n = 0
    while True:
        n += 1
        _, uid = store.append("INBOX", b"Subject: %d\\n\\nx\\n" % n, [], None)
        print(uid, flush=True)
        if n % 3 == 0:
            view = store.select("INBOX", readonly=False)
            some = [m.uid for m in view.messages[: random.randint(0, 3)]]
            view.store(some, "+", ["\\\\Deleted"], None)
            view.expunge(None)
            view.close()
    """
)


def test_sigkill_loop(tmp_path: Path) -> None:
    fs, root = setup(tmp_path)
    given_uids: dict[str, int] = {}
    returned: list[int] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = random.Random(15)
    for _ in range(20):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE, env=env
        )
        assert child.stdout is not None
        done = [child.stdout.readline() for _ in range(rng.randint(1, 6))]
        child.send_signal(signal.SIGKILL)  # somewhere in the next APPEND/EXPUNGE
        out, _ = child.communicate(timeout=30)
        returned += [int(line) for line in [*done, *out.split()] if line.strip()]
        view = MaildirStore(fs).select("INBOX", readonly=True)
        files = {name.partition(":")[0] for name in os.listdir(root / "cur")}
        uids = {m.uid for m in view.messages}
        assert len(uids) == len(view.messages) == len(files)  # one UID per file
        state = view._folder.state
        for uid, entry in state.entries.items():
            if entry.base in given_uids:
                assert given_uids[entry.base] == uid  # never renumbered
            assert uid not in given_uids.values() or given_uids.get(entry.base) == uid
            given_uids[entry.base] = uid
        for uid in returned:  # an APPEND that returned is there, or was expunged
            assert uid in state.entries or uid in state.tombstones
        view.close()
    # no UID reused: UIDs given to expunged files are never given again
    assert len(set(given_uids.values())) == len(given_uids)
    assert len(set(returned)) == len(returned)
    assert returned, "the child never completed an APPEND"
