"""``qtoaster backup`` and ``restore`` through click's CliRunner, without a server: the
incremental second run, the dry runs, a damaged snapshot refused, paths moved to a new
home (qtoaster.toml, .qmail files, absolute Maildir paths in the directory)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from click.testing import CliRunner, Result

from qtoaster.cli.main import cli


def _qt(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "old"
    assert _qt("init", "--quiet", "--home", str(home), "--me", "mx.test").exit_code == 0
    assert _qt("domain", "add", "ex.test", "--home", str(home)).exit_code == 0
    assert _qt("user", "add", "a@ex.test", "--password", "pw", "--home", str(home)).exit_code == 0
    new = home / "domains/ex.test/a/Maildir/new"
    for n in range(3):
        (new / f"17000000{n}.M1P1.mx").write_bytes(b"Subject: %d\n\nbody\n" % n)
    return home


def _counts(output: str) -> tuple[int, int, int]:
    m = re.search(r"(\d+) files, (\d+) copied \(\d+ bytes\), (\d+) linked", output)
    assert m, output
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def test_a_second_backup_links_what_did_not_change(tmp_path: Path) -> None:
    home, dest = _home(tmp_path), tmp_path / "bk"
    first = _qt("backup", str(dest), "--home", str(home))
    assert first.exit_code == 0, first.output
    files, copied, linked = _counts(first.output)
    assert (copied, linked) == (files, 0)
    assert "no queue manager was running" in first.output
    # A message read (new/ -> cur/ with flags) is the same file: linked, not copied.
    maildir = home / "domains/ex.test/a/Maildir"
    (maildir / "new/170000000.M1P1.mx").rename(maildir / "cur/170000000.M1P1.mx:2,S")
    (maildir / "new/170000009.M1P1.mx").write_bytes(b"Subject: 9\n\nnew\n")
    dry = _qt("backup", str(dest), "--home", str(home), "--dry-run")
    assert "copy domains/ex.test/a/Maildir/new/170000009.M1P1.mx" in dry.output
    assert "link domains/ex.test/a/Maildir/cur/170000000.M1P1.mx:2,S" in dry.output
    assert len(list(dest.iterdir())) == 1  # the dry run made nothing
    second = _qt("backup", str(dest), "--home", str(home))
    files2, copied2, linked2 = _counts(second.output)
    assert files2 == files + 1
    # The new message and the SQLite databases (always copied whole) are copied.
    assert copied2 == 3 and linked2 == files2 - 3
    snaps = sorted(dest.iterdir())
    moved = snaps[1] / "home/domains/ex.test/a/Maildir/cur/170000000.M1P1.mx:2,S"
    assert moved.stat().st_nlink == 2


def test_restore_into_a_new_home_moves_the_old_paths(tmp_path: Path) -> None:
    home, dest = _home(tmp_path), tmp_path / "bk"
    settings = home / "qtoaster.toml"
    settings.write_text(settings.read_text() + f'\n# kept at "{home}/notes"\n')
    dotqmail = home / "domains/ex.test/.qmail-copy"
    dotqmail.write_text(f"{home}/domains/ex.test/a/Maildir/\n")
    db = sqlite3.connect(home / "users.sqlite3")
    with db:
        db.execute("UPDATE users SET maildir = ? WHERE local_part = 'a'",
                   (f"{home}/domains/ex.test/a/Maildir",))  # fmt: skip
    db.close()
    assert _qt("backup", str(dest), "--home", str(home)).exit_code == 0
    new = tmp_path / "new"
    dry = _qt("restore", str(dest), "--home", str(new), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "add domains/ex.test/a/Maildir/new/170000001.M1P1.mx" in dry.output
    assert f"rewrite qtoaster.toml: {home} -> {new}" in dry.output
    assert not new.exists()
    done = _qt("restore", str(dest), "--home", str(new))
    assert done.exit_code == 0, done.output
    assert "1 Maildir paths made relative to the home" in done.output
    assert f'"{new}/notes"' in (new / "qtoaster.toml").read_text()
    assert (new / "domains/ex.test/.qmail-copy").read_text().startswith(f"{new}/domains/")
    assert (new / "queue/trigger").exists()
    listing = _qt("user", "list", "--home", str(new))
    assert "a@ex.test" in listing.output
    # Restoring the same snapshot again changes nothing.
    again = _qt("restore", str(dest), "--home", str(new), "--dry-run")
    assert re.search(r"0 added, \d+ replaced, 0 removed", again.output), again.output


def test_restore_removes_what_the_snapshot_does_not_have(tmp_path: Path) -> None:
    home, dest = _home(tmp_path), tmp_path / "bk"
    assert _qt("backup", str(dest), "--home", str(home)).exit_code == 0
    stray = home / "domains/ex.test/a/Maildir/new/179999999.M1P1.mx"
    stray.write_bytes(b"delivered after the backup\n")
    dry = _qt("restore", str(dest), "--home", str(home), "--dry-run")
    assert "remove domains/ex.test/a/Maildir/new/179999999.M1P1.mx" in dry.output
    assert stray.exists()
    assert _qt("restore", str(dest), "--home", str(home)).exit_code == 0
    assert not stray.exists()


def test_a_damaged_backup_is_refused(tmp_path: Path) -> None:
    home, dest, new = _home(tmp_path), tmp_path / "bk", tmp_path / "new"
    assert _qt("backup", str(dest), "--home", str(home)).exit_code == 0
    (snap,) = dest.iterdir()
    copy = snap / "home/domains/ex.test/a/Maildir/new/170000001.M1P1.mx"
    copy.write_bytes(copy.read_bytes().replace(b"body", b"BODY"))
    result = CliRunner().invoke(cli, ["restore", str(dest), "--home", str(new)])
    assert result.exit_code == 1
    assert "is damaged (1 problems), not restored" in result.output
    assert "170000001.M1P1.mx: checksum differs from the manifest" in result.output
    assert not new.exists()
    (snap / "manifest.json").write_text("{")
    result = CliRunner().invoke(cli, ["restore", str(dest), "--home", str(new)])
    assert result.exit_code == 1 and "unreadable manifest" in result.output


def test_a_backup_inside_the_home_is_refused(tmp_path: Path) -> None:
    home = _home(tmp_path)
    result = CliRunner().invoke(cli, ["backup", str(home / "bk"), "--home", str(home)])
    assert result.exit_code == 1 and "must not be inside the home" in result.output


def test_restore_of_a_snapshot_that_does_not_exist(tmp_path: Path) -> None:
    home, dest = _home(tmp_path), tmp_path / "bk"
    assert _qt("backup", str(dest), "--home", str(home)).exit_code == 0
    result = CliRunner().invoke(
        cli, ["restore", str(dest), "--home", str(tmp_path / "n"), "--snapshot", "nope"]
    )
    assert result.exit_code == 1 and "no complete snapshot 'nope'" in result.output


def test_restore_refuses_a_home_with_a_running_server(tmp_path: Path) -> None:
    from qtoaster.core.lock import SUPERVISOR, HomeLock

    home, dest = _home(tmp_path), tmp_path / "bk"
    assert _qt("backup", str(dest), "--home", str(home)).exit_code == 0
    lock = HomeLock(home / "run", SUPERVISOR)
    lock.acquire("qtoaster run")  # as a running `qtoaster run` holds it
    try:
        result = CliRunner().invoke(cli, ["restore", str(dest), "--home", str(home)])
    finally:
        lock.release()
    assert result.exit_code == 1
    assert "qtoaster run runs on" in result.output and "stop it before a restore" in result.output


def test_restore_takes_a_snapshot_directory_itself(tmp_path: Path) -> None:
    home, dest = _home(tmp_path), tmp_path / "bk"
    assert _qt("backup", str(dest), "--home", str(home)).exit_code == 0
    (snap,) = dest.iterdir()
    result = _qt("restore", str(snap), "--home", str(tmp_path / "n"), "--dry-run")
    assert result.exit_code == 0 and f"would restore snapshot {snap.name}" in result.output
