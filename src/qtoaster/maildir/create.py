"""Creating and removing an empty Maildir (vpopmail's make_user_dir, ``user add``), and
making a Maildir++ folder (``.Junk`` for mail that mailauth quarantined).

Invariant: every directory from the domain's down is mode 0700; removal only ever takes
away empty directories, so it cannot lose a message delivered meanwhile.
"""

from __future__ import annotations

from pathlib import Path


def make_maildir(maildir: Path) -> bool:
    """``maildir`` with cur/ new/ tmp/, every directory from the domain's down 0700;
    whether the Maildir itself was new."""
    for directory in (maildir.parent.parent, maildir.parent):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        maildir.mkdir(mode=0o700)
        created = True
    except FileExistsError:
        created = False
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(mode=0o700, exist_ok=True)
    return created


def remove_empty_maildir(maildir: Path) -> None:
    """Undo :func:`make_maildir` of a user that was not added (only empty directories)."""
    for path in (maildir / "cur", maildir / "new", maildir / "tmp", maildir, maildir.parent):
        try:
            path.rmdir()
        except OSError:
            return


def make_folder(folder: Path) -> None:
    """A Maildir++ folder (``Maildir/.Junk``): cur/ new/ tmp/ and the empty
    ``maildirfolder`` file that marks it as one (Courier, Dovecot), all 0700/0600;
    nothing changes when it exists already."""
    if (folder / "new").is_dir() and (folder / "maildirfolder").exists():
        return
    folder.mkdir(mode=0o700, exist_ok=True)
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(mode=0o700, exist_ok=True)
    (folder / "maildirfolder").touch(mode=0o600, exist_ok=True)
