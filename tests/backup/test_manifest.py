"""The pure parts of backup: the manifest's format, what a backup takes, restore's plan,
and the moves of paths from the old home to the new one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qtoaster.backup import manifest
from qtoaster.backup.manifest import Change, DamagedManifest, Entry, Manifest


def _manifest(*entries: Entry) -> Manifest:
    return Manifest("20250101T000000Z", "/srv/qt", "2025-01-01T00:00:00+00:00", None, "sqlite",
                    list(entries))  # fmt: skip


def test_round_trip() -> None:
    m = _manifest(Entry("home", "dir", 0o750), Entry("home/control/me", "file", 0o640, 3, 7, "ab"))
    assert manifest.loads(manifest.dumps(m)) == m


@pytest.mark.parametrize("path", ["/etc/passwd", "home/../../etc/passwd", "home/./x", ""])
def test_a_path_leaving_the_snapshot_is_refused(path: str) -> None:
    text = manifest.dumps(_manifest(Entry(path, "file", 0o600, 0, 0, "")))
    with pytest.raises(DamagedManifest, match="bad path"):
        manifest.loads(text)


@pytest.mark.parametrize(
    "text", ["", "{", '{"format": "other"}', '{"format": "qtoaster-backup 1"}']
)
def test_an_unreadable_manifest_is_damaged(text: str) -> None:
    with pytest.raises(DamagedManifest):
        manifest.loads(text)


@pytest.mark.parametrize(
    ("rel", "taken"),
    [
        ("qtoaster.toml", True),
        ("control/me", True),
        ("secrets/srs.key", True),
        ("credentials/credentials.sqlite3", True),
        ("users.sqlite3-journal", False),
        ("run", False),
        ("run/send.pause", False),
        ("queue/mess/1", True),
        ("queue/tmp", True),
        ("queue/tmp/1", False),
        ("queue/trigger", False),
        ("queue/paused", False),
        ("domains/d/u/Maildir/new/1.x", True),
        ("domains/d/u/Maildir/tmp", True),
        ("domains/d/u/Maildir/tmp/1.x", False),
        ("domains/d/u/Maildir/.Sent/tmp/1.x", False),
    ],
)
def test_what_a_backup_takes(rel: str, taken: bool) -> None:
    assert manifest.included(rel) is taken


def test_a_maildir_message_keeps_its_identity_across_renames() -> None:
    key = manifest.message_key
    assert key("domains/d/u/Maildir/new/17.M1P2.host") == ("domains/d/u/Maildir", "17.M1P2.host")
    assert key("domains/d/u/Maildir/cur/17.M1P2.host:2,S") == key(
        "domains/d/u/Maildir/new/17.M1P2.host"
    )
    assert key("domains/d/u/Maildir/.Sent/cur/9.x:2,") == ("domains/d/u/Maildir/.Sent", "9.x")
    assert key("control/me") is None
    assert key("domains/d/u/Maildir/maildirsize") is None


def test_plan_adds_replaces_and_removes() -> None:
    wanted = [
        Entry("home/a", "file", 0o600, 1, 0, "sha-a"),
        Entry("home/b", "file", 0o600, 1, 0, "sha-b"),
        Entry("home/c", "file", 0o600, 1, 0, "sha-c"),
        Entry("home/d", "dir", 0o700),
    ]
    present = {"a": "sha-a", "b": "other", "z": "sha-z"}
    assert manifest.plan(wanted, present) == [
        Change("replace", "b"),
        Change("add", "c"),
        Change("remove", "z"),
    ]


def test_plan_into_an_empty_home_adds_everything() -> None:
    wanted = [Entry("home/a", "file", 0o600, 1, 0, "s")]
    assert manifest.plan(wanted, {}) == [Change("add", "a")]


@pytest.mark.parametrize(
    ("text", "moved"),
    [
        ('file = "/srv/qt/log/qt.log"', 'file = "/new/home/log/qt.log"'),
        ('home = "/srv/qt"', 'home = "/new/home"'),
        ("/srv/qt/domains/d/u/Maildir/\n", "/new/home/domains/d/u/Maildir/\n"),
        ('other = "/srv/qt2/x"', 'other = "/srv/qt2/x"'),
        ("no path here", "no path here"),
    ],
)
def test_rewrite_home_moves_whole_prefixes_only(text: str, moved: str) -> None:
    assert manifest.rewrite_home(text, "/srv/qt", "/new/home") == moved


@given(st.text())
def test_rewrite_home_to_itself_changes_nothing(text: str) -> None:
    assert manifest.rewrite_home(text, "/srv/qt", "/srv/qt") == text


def test_relative_maildir() -> None:
    assert manifest.relative_maildir("/srv/qt/domains/d/u/Maildir", "/srv/qt") == (
        "domains/d/u/Maildir"
    )
    assert manifest.relative_maildir("domains/d/u/Maildir", "/srv/qt") is None
    assert manifest.relative_maildir("/srv/qt2/domains/d/u/Maildir", "/srv/qt") is None
