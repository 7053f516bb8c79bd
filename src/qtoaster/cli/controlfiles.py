"""Edits of qmail control files made by the CLI (today: control/rcpthosts).

vadddomain and vdeldomain (spec 22) keep control/rcpthosts in step with the hosted
domains: a hosted domain missing there has its mail refused at RCPT, a deleted one left
there makes qtoaster accept mail it cannot deliver.

Invariants: a control file is rewritten atomically (a temporary file renamed over it), so
a reader sees the old or the new file, never half of one; its other lines are kept byte
for byte (undecodable bytes included) and its permissions are kept.
"""

from __future__ import annotations

import os

from qtoaster.core.home import Home


def edit_rcpthosts(home: Home, *, add: str | None = None, remove: str | None = None) -> None:
    """Add or remove one domain line of control/rcpthosts, keeping every other line.

    ``add`` and ``remove`` are lower-case domain names; a missing file is created (0644)
    only to add a line.  Lines are compared case-insensitively, ignoring blanks around.
    """
    path = home.control / "rcpthosts"
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        if add is None:
            return
        text, mode = "", 0o644
    lines = text.splitlines()
    present = [line.strip().lower() for line in lines]
    if add is not None and add not in present:
        lines.append(add)
    if remove is not None:
        lines = [line for line in lines if line.strip().lower() != remove]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".rcpthosts.tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines), "utf-8", "surrogateescape")
    os.chmod(tmp, mode)
    # rename(2) is atomic: smtpd reading rcpthosts sees the old or the new file, never half.
    os.replace(tmp, path)
