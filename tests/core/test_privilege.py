"""core.privilege and supervisor.accounts without root: lookups, refusals, the start-up phrase."""

from __future__ import annotations

import os
import pwd

import pytest

from qtoaster.config.settings import RoleUsers, settings_from_toml
from qtoaster.core.errors import ConfigError
from qtoaster.core.privilege import Identity, PrivilegeError, drop, lookup
from qtoaster.supervisor import accounts


def test_lookup_names_every_missing_account() -> None:
    with pytest.raises(ConfigError) as caught:
        lookup("qt-no-such-user", ["qt-no-such-group"])
    assert caught.value.problems == [
        "user 'qt-no-such-user' does not exist (qtoaster init as root creates it)",
        "group 'qt-no-such-group' does not exist (qtoaster init as root creates it)",
    ]


def test_lookup_gives_the_primary_group_first_and_once() -> None:
    root = pwd.getpwnam("root")
    identity = lookup("root", ["root"])
    assert identity == Identity("root", 0, root.pw_gid, (root.pw_gid,))


def test_drop_refuses_to_run_a_role_as_root() -> None:
    with pytest.raises(PrivilegeError, match="uid 0 is root"):
        drop(Identity("root", 0, 0, (0,)))


def test_not_root_nothing_changes_and_it_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts, "running_as_root", lambda: False)
    before = os.getresuid()
    said = accounts.become(RoleUsers(), "smtpd")
    assert os.getresuid() == before
    assert said == f"running as {accounts.current_user()} (not started as root: no change of user)"


def test_users_table_is_read_and_checked() -> None:
    settings = settings_from_toml({"users": {"smtpd": "qmaild", "send": "vpopmail"}})
    assert settings.users.smtpd == "qmaild" and settings.users.send == "vpopmail"
    assert settings.users.auth == "qtoaster-auth"
    with pytest.raises(ConfigError) as caught:
        settings_from_toml({"users": {"smtpd": "Root User", "color": "x"}})
    assert caught.value.problems == [
        "qtoaster.toml: [users] smtpd: must be a user or group name (a-z, 0-9, _ and -, "
        "at most 32), not 'Root User'",
        "qtoaster.toml: [users] unknown key 'color'",
    ]


def test_role_names_follow_the_table_of_decision_0007() -> None:
    users = RoleUsers()
    assert accounts.role_names(users, "smtpd") == (
        "qtoaster-smtpd",
        ("qtoaster", "qtoaster-queue", "qtoaster-tls", "qtoaster-authc", "qtoaster-mbox"),
    )
    # send asks the auth role to rewrite a forward's sender with SRS (docs/srs.md).
    assert accounts.role_names(users, "send") == (
        "qtoaster-vmail",
        ("qtoaster", "qtoaster-queue", "qtoaster-authc"),
    )
