"""httpd/access.py: who may do what (site admin, domain admin, user, tokens), sessions and
the CSRF check."""

from __future__ import annotations

import pytest

from qtoaster.httpd import access
from qtoaster.httpd.access import (
    Principal,
    Sessions,
    csrf_ok,
    principal_for_login,
    principal_for_token,
)
from qtoaster.httpd.channel import OpError

ADMINS = ("root@site.test",)
SITE = principal_for_login("Root@Site.test", ADMINS)
POSTMASTER_D = principal_for_login("postmaster@d.test", ADMINS)
USER = principal_for_login("Ann@D.test", ADMINS)
SITE_TOKEN = principal_for_token("ops", "site")
DOMAIN_TOKEN = principal_for_token("dtok", "d.test")


def refused(check: object, *args: str) -> int:
    with pytest.raises(OpError) as caught:
        check(*args)  # type: ignore[operator]
    return caught.value.status


def test_kinds_of_login() -> None:
    assert Principal("site", "root@site.test") == SITE
    assert Principal("domain", "postmaster@d.test", "d.test") == POSTMASTER_D
    assert Principal("user", "ann@d.test", "d.test") == USER
    assert Principal("site", "token:ops") == SITE_TOKEN
    assert Principal("domain", "token:dtok", "d.test") == DOMAIN_TOKEN
    # a site admin's address wins over being a postmaster
    assert principal_for_login("postmaster@d.test", ("postmaster@d.test",)).kind == "site"


@pytest.mark.parametrize("who", [SITE, SITE_TOKEN])
def test_site_admin_may_do_everything(who: Principal) -> None:
    who.may_site()
    who.may_domain("d.test")
    who.may_domain("e.test")
    who.may_user("ann@d.test")
    who.may_user("bob@e.test")


@pytest.mark.parametrize("who", [POSTMASTER_D, DOMAIN_TOKEN])
def test_domain_admin_only_its_domain(who: Principal) -> None:
    who.may_domain("d.test")
    who.may_domain("D.TEST")
    who.may_user("ann@d.test")
    who.may_user("postmaster@d.test")
    assert refused(who.may_site) == 403
    assert refused(who.may_domain, "e.test") == 403
    assert refused(who.may_user, "ann@e.test") == 403
    assert refused(who.may_domain, "sub.d.test") == 403


def test_user_only_itself() -> None:
    USER.may_user("ann@d.test")
    USER.may_user("ANN@d.test")
    assert refused(USER.may_user, "bob@d.test") == 403
    assert refused(USER.may_user, "ann@e.test") == 403
    assert refused(USER.may_domain, "d.test") == 403
    assert refused(USER.may_site) == 403


def test_sessions_open_get_close_and_expire() -> None:
    sessions = Sessions()
    sid, session = sessions.open(USER)
    assert sessions.get(sid) is session and session.principal == USER
    assert sessions.get("no such id") is None
    sessions.close(sid)
    assert sessions.get(sid) is None
    sid, session = sessions.open(USER)
    session.expires = 0.0
    assert sessions.get(sid) is None and sid not in sessions.by_id


def test_sessions_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "MAX_SESSIONS", 3)
    sessions = Sessions()
    ids = [sessions.open(USER)[0] for _ in range(5)]
    assert len(sessions.by_id) == 3
    assert sessions.get(ids[-1]) is not None and sessions.get(ids[0]) is None


def test_csrf() -> None:
    _, session = Sessions().open(USER)
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, None)
    assert not csrf_ok(session, "")
    assert not csrf_ok(session, session.csrf + "x")
    _, other = Sessions().open(USER)
    assert not csrf_ok(session, other.csrf)
