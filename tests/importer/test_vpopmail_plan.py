"""Reading a vpopmail tree (vpasswd backend) into a plan: domains, users, flags, quotas,
catch-all, aliases, alias domains, and every problem reported instead of raised."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtoaster.directory.schema import UserFlag
from qtoaster.importer.vpopmail import (
    DomainPlan,
    maildir_key,
    map_flags,
    parse_quota,
    read_installation,
)

from .tree import HASHES, build


def _domain(plan_domains: list[DomainPlan], name: str) -> DomainPlan:
    return next(d for d in plan_domains if d.name == name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NOQUOTA", (None, None)),
        ("", (None, None)),
        ("52428800S", (52428800, None)),
        ("5M", (5 * 1024**2, None)),
        ("2g", (2 * 1024**3, None)),
        ("100K", (102400, None)),
        ("52428800S,1000C", (52428800, 1000)),
        ("1000C", (None, 1000)),
        ("0", (None, None)),  # Maildir++: a zero limit is no limit
    ],
)
def test_parse_quota(text: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_quota(text) == expected


def test_parse_quota_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_quota("lots")


def test_map_flags() -> None:
    assert map_flags(0) == (UserFlag(0), ())
    flags, dropped = map_flags(0x02 | 0x800 | 0x20 | 0x10 | 0x08 | 0x01)
    assert flags == (
        UserFlag.NO_POP
        | UserFlag.NO_SMTP_AUTH
        | UserFlag.NO_RELAY
        | UserFlag.BOUNCE_MAIL
        | UserFlag.NO_IMAP
    )
    assert dropped == ("NO_PASSWD_CHNG",)
    # Every login refused (POP, IMAP, webmail, SMTP): a disabled account.
    assert map_flags(0x02 | 0x08 | 0x04 | 0x800)[0] & UserFlag.DISABLED


def test_maildir_key_ignores_where_the_tree_is_mounted() -> None:
    assert maildir_key("/home/vpopmail/domains/Ex.com/bob/Maildir/") == "ex.com/bob/maildir"
    assert maildir_key("/mnt/old/domains/ex.com/bob/Maildir") == "ex.com/bob/maildir"


def test_tree_plan(tmp_path: Path) -> None:
    plan = read_installation(build(tmp_path))
    assert [d.name for d in plan.domains] == ["example.com", "example.org"]
    com = _domain(plan.domains, "example.com")
    assert com.unknown_user == "postmaster@example.com"
    assert com.alias_domains == ["example.net"]  # the symlink
    users = {u.local: u for u in com.users}
    assert set(users) == {"alice", "bob", "carol", "postmaster"}
    alice, bob, carol, pm = users["alice"], users["bob"], users["carol"], users["postmaster"]
    assert (alice.password_hash, alice.quota, alice.quota_messages) == (
        HASHES.alice,
        52428800,
        1000,
    )
    assert alice.maildir == tmp_path / "vpopmail/domains/example.com/alice/Maildir"
    assert (bob.password_hash, bob.quota) == (HASHES.bob, 5 * 1024**2)
    assert bob.flags == UserFlag.NO_POP | UserFlag.NO_SMTP_AUTH | UserFlag.NO_IMAP
    assert bob.dropped_flags == ()
    assert carol.flags == UserFlag.BOUNCE_MAIL | UserFlag.NO_RELAY and carol.quota is None
    assert pm.password_hash is None and pm.password == "clear-pm"
    aliases = {a.local: a for a in com.aliases}
    assert aliases["info"].targets == ("alice@example.com", "bob@example.com")
    assert aliases["sales.team"].targets == ("bob@example.com",)  # ':' is '.', Maildir -> user
    assert aliases["alice"].targets == ("alice@elsewhere.example",) and aliases["alice"].keep_copy
    assert "list" not in aliases
    [issue] = plan.issues
    assert issue.error and "list@example.com" in issue.item and "program" in issue.reason
    assert _domain(plan.domains, "example.org").unknown_user == "bounce"


def test_only_and_unknown_domains(tmp_path: Path) -> None:
    plan = read_installation(build(tmp_path), only=["EXAMPLE.ORG", "nope.example"])
    assert [d.name for d in plan.domains] == ["example.org"]
    assert [i.item for i in plan.issues] == ["domain nope.example"]


def test_assign_hashed_dirs_and_alias_lines(tmp_path: Path) -> None:
    src = tmp_path / "vpopmail"
    big = src / "domains" / "7" / "big.example"
    big.mkdir(parents=True)
    (big / "vpasswd").write_text("u:$1$x$y:1:0:U:/home/vpopmail/domains/7/big.example/u:NOQUOTA\n")
    (big / ".qmail-default").write_text("| /home/vpopmail/bin/vdelivermail '' delete\n")
    assign = tmp_path / "assign"
    assign.write_text(
        "+big.example-:big.example:89:89:/home/vpopmail/domains/7/big.example:-::\n"
        "+alias.example-:big.example:89:89:/home/vpopmail/domains/7/big.example:-::\n"
        "=vpopmail:vpopmail:89:89:/home/vpopmail:::\n.\n"
    )
    plan = read_installation(src, assign=assign)
    [big_plan] = plan.domains
    assert (big_plan.name, big_plan.unknown_user, big_plan.alias_domains) == (
        "big.example",
        "delete",
        ["alias.example"],
    )
    assert [u.local for u in big_plan.users] == ["u"]


def test_bad_lines_become_issues(tmp_path: Path) -> None:
    src = tmp_path / "vpopmail"
    dom = src / "domains" / "bad.example"
    dom.mkdir(parents=True)
    (dom / "vpasswd").write_text(
        "ok:$1$x$y:1:0::/x/domains/bad.example/ok:NOQUOTA\n"
        "bad user:$1$x$y:1:0::/x:NOQUOTA\n"
        "q:$1$x$y:1:0::/x:lots\n"
        "weird:plaintext:1:0::/x:NOQUOTA\n"
        "ok:$1$x$y:1:0::/x:NOQUOTA\n"
        "short:line\n"
    )
    (dom / ".qmail-default").write_text("| /usr/bin/something\n")
    (dom / ".qmail-local").write_text("nodomain\n")
    (dom / ".qmail-mbox").write_text("/var/mail/x\n")
    (dom / ".qmail-ext-default").write_text("&a@b.example\n")
    plan = read_installation(src)
    [domain] = plan.domains
    assert [u.local for u in domain.users] == ["ok", "weird"]
    assert domain.users[1].password_hash is None  # not a crypt(3) form
    assert domain.users[0].maildir is None  # none in the source: an empty one is made
    assert domain.unknown_user == "bounce" and domain.aliases == []
    reasons = " | ".join(f"{i.item}: {i.reason}" for i in plan.issues)
    for fragment in (
        "bad user",
        "lots",
        "unknown form",
        "listed twice",
        "not understood",
        "unqualified",
        "/var/mail/x",
        "-default",
    ):
        assert fragment in reasons
