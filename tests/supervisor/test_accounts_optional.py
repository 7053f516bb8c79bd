"""A role that runs only when configured (metrics) needs its account only then: a home made
before the role existed keeps starting without `config fix-owners`."""

from __future__ import annotations

import dataclasses
import grp
import pwd

from qtoaster.config.settings import RoleUsers
from qtoaster.supervisor import accounts


def _existing() -> RoleUsers:
    # Every account and group the base roles need exists on any machine: root's.
    root_user = pwd.getpwuid(0).pw_name
    root_group = grp.getgrgid(0).gr_name
    fields = {
        f.name: (root_user if f.name in _USER_FIELDS else root_group)
        for f in dataclasses.fields(RoleUsers)
    }
    return RoleUsers(**fields)


_USER_FIELDS = {"smtpd", "pop3d", "imapd", "send", "remote", "auth", "metrics"}


def test_missing_metrics_account_is_no_problem_unless_metrics_runs() -> None:
    users = dataclasses.replace(_existing(), metrics="qtoaster-no-such-user-xyz")
    assert accounts.check_accounts(users) == []
    problems = accounts.check_accounts(users, optional=("metrics",))
    assert problems and any("qtoaster-no-such-user-xyz" in p for p in problems)


def test_base_roles_are_always_checked() -> None:
    users = dataclasses.replace(_existing(), smtpd="qtoaster-no-such-user-xyz")
    assert any("qtoaster-no-such-user-xyz" in p for p in accounts.check_accounts(users))
