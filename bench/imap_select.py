"""SELECT of a 100,000-message INBOX whose UID state exists (issue 15's < 300 ms target).

Run: PYTHONPATH=src python bench/imap_select.py [count]
Builds a Maildir in a temporary directory (files named with ,S= and ,W= as APPEND names
them), lets the store number them once, waits until the directories' mtimes are older
than the store's settle time, then times SELECT (read-write and EXAMINE) several times.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from qtoaster.maildir.create import make_maildir
from qtoaster.maildir.folderstate import SETTLE
from qtoaster.maildir.fs import LocalFs
from qtoaster.maildir.store import MaildirStore


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "Maildir"
        make_maildir(root)
        cur = os.fspath(root / "cur")
        for n in range(count):
            name = f"{1_700_000_000 + n}.M{n}P1Q1.host.example,S=2000,W=2040:2,S"
            os.close(os.open(f"{cur}/{name}", os.O_CREAT | os.O_WRONLY, 0o600))
        old = time.time() - 10 * SETTLE
        os.utime(cur, (old, old))
        os.utime(root / "new", (old, old))
        store = MaildirStore(LocalFs(root, hostname="h", quota=None))
        started = time.perf_counter()
        store.select("INBOX", readonly=False).close()
        print(f"first SELECT (numbering {count} files): {time.perf_counter() - started:.3f} s")
        for readonly in (False, True, False):
            started = time.perf_counter()
            view = store.select("INBOX", readonly=readonly)
            elapsed = time.perf_counter() - started
            view.close()
            kind = "EXAMINE" if readonly else "SELECT"
            print(f"{kind} of {len(view.messages)} messages: {elapsed * 1000:.0f} ms")


if __name__ == "__main__":
    main()
