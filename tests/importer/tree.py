"""A small vpopmail installation built in a temporary directory, and the same data as a
mysqldump text, for the importer tests."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from passlib.hash import md5_crypt, sha512_crypt

ALICE_PW = "alice-secret"
BOB_PW = "b0b pass"
ORIG = "/home/vpopmail/domains"  # where the old machine kept it (written in vpasswd)


@dataclass(frozen=True)
class Hashes:
    alice: str  # $1$
    bob: str  # $6$


HASHES = Hashes(
    md5_crypt.using(salt="Abcd1234").hash(ALICE_PW),
    sha512_crypt.using(rounds=5000, salt="SaltSalt").hash(BOB_PW),
)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _maildir(path: Path, messages: dict[str, str]) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for name, body in messages.items():
        _write(path / name, body)


def build(root: Path) -> Path:
    """``root/vpopmail`` (the SOURCE): example.com (vpasswd, $1$ and $6$ users, flags,
    quotas, catch-all, aliases, Maildirs) and example.org (bounce), example.net -> example.com."""
    src = root / "vpopmail"
    com = src / "domains" / "example.com"
    org = src / "domains" / "example.org"
    _write(
        com / "vpasswd",
        f"alice:{HASHES.alice}:1:0:Alice:{ORIG}/example.com/alice:52428800S,1000C\n"
        # NO_POP | NO_SMTP | NO_IMAP
        f"bob:{HASHES.bob}:1:{0x02 | 0x800 | 0x08}:Bob:{ORIG}/example.com/bob:5M\n"
        # BOUNCE_MAIL | NO_RELAY
        f"carol:{HASHES.alice}:1:{0x10 | 0x20}:Carol:{ORIG}/example.com/carol:NOQUOTA\n"
        f"postmaster::1:0:Postmaster:{ORIG}/example.com/postmaster:NOQUOTA:clear-pm\n",
    )
    _write(com / ".qmail-default", "| /home/vpopmail/bin/vdelivermail '' postmaster@example.com\n")
    _write(com / ".qmail-info", "&alice@example.com\nbob@example.com\n")
    _write(com / ".qmail-sales:team", f"{ORIG}/example.com/bob/Maildir/\n")
    _write(com / ".qmail-list", "| /usr/bin/ezmlm-send /home/vpopmail/domains/example.com/list\n")
    _maildir(
        com / "alice" / "Maildir",
        {
            "new/1700000000.M1P1.old,S=20": "Subject: one\n\nbody\n",
            "cur/1700000001.M2P1.old,S=20:2,RS": "Subject: two\n\nbody\n",
            "tmp/1700000002.M3P1.old": "half",
            "maildirsize": "52428800S,1000C\n40 2\n",
            ".Sent/cur/1700000003.M4P1.old,S=21:2,S": "Subject: sent\n\nbody\n",
            ".Sent/maildirfolder": "",
            ".Sent/new/.keep": "",
        },
    )
    _write(com / "alice" / ".qmail", "./Maildir/\n&alice@elsewhere.example\n")
    _maildir(com / "bob" / "Maildir", {"new/1700000009.M9P1.old,S=5": "hi\n"})
    _maildir(com / "carol" / "Maildir", {})
    _maildir(com / "postmaster" / "Maildir", {})
    _write(org / "vpasswd", f"dave:{HASHES.bob}:1:0:Dave:{ORIG}/example.org/dave:0\n")
    _write(org / ".qmail-default", "| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n")
    _maildir(org / "dave" / "Maildir", {"cur/1.M1P1.h:2,": "x\n"})
    os.symlink("example.com", src / "domains" / "example.net")
    return src


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file and link under ``root``: content hash, mode and mtime."""
    result: dict[str, tuple[str, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if path.is_symlink():
                digest = os.readlink(path)
            elif path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                digest = "dir"
            result[str(path.relative_to(root))] = (digest, st.st_mode, st.st_mtime_ns)
    return result


def dump_text() -> str:
    """The same users of example.com and example.org as MySQL rows (mysqldump layout)."""
    rows = [
        (
            "alice",
            "example.com",
            HASHES.alice,
            1,
            0,
            "Alice",
            f"{ORIG}/example.com/alice",
            "52428800S,1000C",
            "",
        ),
        (
            "bob",
            "example.com",
            HASHES.bob,
            1,
            0x02 | 0x800 | 0x08,
            "Bob",
            f"{ORIG}/example.com/bob",
            "5M",
            "",
        ),
        (
            "carol",
            "example.com",
            HASHES.alice,
            1,
            0x30,
            'Carol\'s "x"',
            f"{ORIG}/example.com/carol",
            "NOQUOTA",
            "",
        ),
        (
            "postmaster",
            "example.com",
            "",
            1,
            0,
            "Postmaster",
            f"{ORIG}/example.com/postmaster",
            "NOQUOTA",
            "clear-pm",
        ),
        ("dave", "example.org", HASHES.bob, 1, 0, "Dave", f"{ORIG}/example.org/dave", "0", ""),
    ]

    def quote(value: object) -> str:
        if isinstance(value, int):
            return str(value)
        text = str(value).replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')
        return f"'{text}'"

    values = ",".join("(" + ",".join(quote(v) for v in row) + ")" for row in rows)
    return (
        "-- MySQL dump 10.19  Distrib 10.11.6-MariaDB\n"
        "/*!40101 SET NAMES utf8mb4 */;\n"
        "DROP TABLE IF EXISTS `vpopmail`;\n"
        "CREATE TABLE `vpopmail` (\n"
        "  `pw_name` char(32) NOT NULL,\n  `pw_domain` char(96) NOT NULL,\n"
        "  `pw_passwd` char(128) DEFAULT NULL,\n  `pw_uid` int(11) DEFAULT NULL,\n"
        "  `pw_gid` int(11) DEFAULT NULL,\n  `pw_gecos` char(48) DEFAULT NULL,\n"
        "  `pw_dir` char(160) DEFAULT NULL,\n  `pw_shell` char(20) DEFAULT NULL,\n"
        "  `pw_clear_passwd` char(128) DEFAULT NULL,\n"
        "  PRIMARY KEY (`pw_name`,`pw_domain`)\n) ENGINE=MyISAM DEFAULT CHARSET=latin1;\n"
        "LOCK TABLES `vpopmail` WRITE;\n"
        f"INSERT INTO `vpopmail` VALUES {values};\n"
        "UNLOCK TABLES;\n"
        "CREATE TABLE `valias` (\n  `alias` char(32) NOT NULL,\n  `domain` char(96) NOT NULL,\n"
        "  `valias_line` text NOT NULL,\n  KEY `alias` (`alias`,`domain`)\n);\n"
        "INSERT INTO `valias` VALUES ('help','example.com','&alice@example.com'),"
        "('help','example.com','bob@example.com'),"
        "('prog','example.com','| /usr/bin/autorespond');\n"
    )
