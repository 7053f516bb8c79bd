"""The http role's API against a real ``qtoaster run --http`` (docs/http.md), with httpx
over HTTPS: every endpoint, the three logins, tokens, CSRF, and the refusals."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import QTOASTER, Server, make_home, role_child

A = "/api/v1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = make_home(tmp_path_factory.mktemp("http"))
    settings = home / "qtoaster.toml"
    settings.write_text(settings.read_text() + '\n[http]\nadmins = ["alice@example.test"]\n')
    srv = Server(home, "--http", "127.0.0.1:0", workers=1)
    yield srv
    srv.stop()


def token(home: Path, *scope: str, name: str) -> str:
    out = subprocess.run(
        [*QTOASTER, "token", "add", "--home", str(home), "--name", name, *scope],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def client(server: Server, bearer: str | None = None) -> httpx.Client:
    headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
    return httpx.Client(
        base_url=f"https://127.0.0.1:{server.ports['http']}",
        verify=False,  # the home's own self-signed certificate
        headers=headers,
        timeout=30,
    )


def login(server: Server, user: str, password: str = "secret") -> tuple[httpx.Client, str]:
    c = client(server)
    r = c.post(f"{A}/login", json={"user": user, "password": password})
    assert r.status_code == 200, r.text
    return c, r.json()["csrf_token"]


@pytest.fixture(scope="module")
def site(server: Server) -> httpx.Client:
    return client(server, token(server.home, "--site", name="site"))


def test_http_role_does_not_run_as_root(server: Server) -> None:
    pid = role_child(server.proc.pid, "http")
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    if os.geteuid() == 0:
        assert all(int(u) != 0 for u in uids)


def test_openapi_lists_every_route(server: Server) -> None:
    from qtoaster.httpd.api import API, PUBLIC, TABLE

    with client(server) as c:
        spec = c.get(f"{A}/openapi.json").json()
    for path, method, *_ in [*TABLE, *PUBLIC]:
        assert method.lower() in spec["paths"][API + path]


def test_unauthenticated_and_bad_token(server: Server) -> None:
    with client(server) as c:
        r = c.get(f"{A}/domains")
        assert r.status_code == 401 and "error" in r.json()
    with client(server, "qt_nonsense") as c:
        assert c.get(f"{A}/domains").status_code == 401
    with client(server) as c:
        assert (
            c.post(f"{A}/login", json={"user": "alice@example.test", "password": "no"}).status_code
            == 401
        )


def test_site_token_domains_users_aliases(server: Server, site: httpx.Client) -> None:
    assert site.get(f"{A}/status").json()["domains"] == 1
    r = site.post(f"{A}/domains", json={"name": "other.test", "postmaster_password": "pm"})
    assert r.status_code == 201, r.text
    assert site.post(f"{A}/domains", json={"name": "other.test"}).status_code == 409
    assert site.get(f"{A}/domains", params={"search": "other"}).json() == {
        "total": 1,
        "items": ["other.test"],
    }
    assert site.get(f"{A}/domains/other.test").json()["users"] == 1
    r = site.post(
        f"{A}/domains/other.test/users", json={"name": "dave", "password": "pw", "quota": "10M"}
    )
    assert r.status_code == 201 and r.json()["quota"] == 10 << 20
    assert site.post(f"{A}/domains/other.test/users", json={"name": "dave"}).status_code == 409
    assert (
        site.post(f"{A}/domains/other.test/users", json={"name": "x", "quota": "lots"}).status_code
        == 422
    )
    page = site.get(f"{A}/domains/other.test/users", params={"limit": 1, "search": "dav"}).json()
    assert page["total"] == 1 and page["items"][0]["address"] == "dave@other.test"
    shown = site.get(f"{A}/users/dave@other.test").json()
    assert shown["usage"] == {"bytes": 0, "messages": 0} or shown["usage"] is None
    r = site.patch(f"{A}/users/dave@other.test", json={"quota": "20M", "flags_add": ["nopop"]})
    assert r.json()["quota"] == 20 << 20 and r.json()["flags"] == ["nopop"]
    r = site.post(
        f"{A}/domains/other.test/aliases", json={"name": "info", "targets": ["dave@other.test"]}
    )
    assert r.status_code == 201
    assert [a["address"] for a in site.get(f"{A}/domains/other.test/aliases").json()] == [
        "info@other.test"
    ]
    assert site.get(f"{A}/forwards/info@other.test").json()[0]["target"] == "dave@other.test"
    assert site.delete(f"{A}/forwards/info@other.test").status_code == 200
    r = site.put(f"{A}/domains/other.test/catchall", json={"catchall": "dave@other.test"})
    assert r.json()["catchall"] == "dave@other.test"
    assert site.delete(f"{A}/users/dave@other.test").status_code == 200
    assert site.get(f"{A}/users/dave@other.test").status_code == 404
    assert site.delete(f"{A}/domains/other.test").status_code == 200
    assert site.get(f"{A}/domains/other.test").status_code == 404
    assert site.put(f"{A}/status").status_code == 405
    log = (server.home / "server.log").read_text()
    assert "http.change who=token:site what=domain.add target=other.test" in log


def test_queue(server: Server, site: httpx.Client) -> None:
    assert site.get(f"{A}/queue").json() == [] or isinstance(site.get(f"{A}/queue").json(), list)
    assert site.post(f"{A}/queue/nope/hold").status_code == 404
    assert site.delete(f"{A}/queue/nope").status_code == 404


def test_domain_token_and_domain_admin(server: Server, site: httpx.Client) -> None:
    site.post(f"{A}/domains", json={"name": "third.test", "postmaster_password": "pm3"})
    with client(server, token(server.home, "--domain", "third.test", name="third")) as c:
        assert c.get(f"{A}/domains/third.test/users").status_code == 200
        assert c.get(f"{A}/domains/example.test/users").status_code == 403
        assert c.get(f"{A}/queue").status_code == 403
    c, csrf = login(server, "postmaster@third.test", "pm3")
    assert c.get(f"{A}/me").json()["kind"] == "domain"
    r = c.post(
        f"{A}/domains/third.test/users",
        json={"name": "eve", "password": "e"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 201
    r = c.post(
        f"{A}/domains/example.test/users",
        json={"name": "eve", "password": "e"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 403
    # CSRF token missing on a cookie POST
    r = c.post(f"{A}/domains/third.test/users", json={"name": "fay", "password": "f"})
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    assert c.post(f"{A}/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert c.get(f"{A}/me").status_code == 401


def test_user_login_own_password_and_forwards(server: Server) -> None:
    c, csrf = login(server, "bob@example.test")
    h = {"X-CSRF-Token": csrf}
    assert c.get(f"{A}/me").json()["kind"] == "user"
    assert c.get(f"{A}/users/carol@example.test").status_code == 403
    assert (
        c.patch(f"{A}/users/carol@example.test", json={"password": "x"}, headers=h).status_code
        == 403
    )
    assert (
        c.patch(f"{A}/users/bob@example.test", json={"quota": "1G"}, headers=h).status_code == 403
    )
    r = c.put(
        f"{A}/forwards/bob@example.test",
        json={"targets": ["x@far.test"], "keep_copy": True},
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert (
        c.patch(f"{A}/users/bob@example.test", json={"password": "new"}, headers=h).status_code
        == 200
    )
    login(server, "bob@example.test", "new")


def test_site_admin_login(server: Server) -> None:
    c, _ = login(server, "alice@example.test")
    assert c.get(f"{A}/me").json()["kind"] == "site"
    assert c.get(f"{A}/status").status_code == 200


def test_vacation_and_spam_folder(server: Server, site: httpx.Client) -> None:
    """A user sets its own vacation and spam folder; its domain admin and the site admin
    may too; another user and another domain's admin may not."""
    c, csrf = login(server, "carol@example.test")
    h = {"X-CSRF-Token": csrf}
    url = f"{A}/users/carol@example.test/vacation"
    assert c.get(url).json() == {
        "enabled": False,
        "subject": "",
        "body": "",
        "start": None,
        "end": None,
        "period": 7 * 86400,
    }
    setting = {"subject": "Away", "body": "Back Monday."}
    setting |= {"start": "2030-08-01", "end": "2030-08-31"}
    r = c.put(url, json={**setting, "period": "2d"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "enabled": True,
        "subject": "Away",
        "body": "Back Monday.",
        "start": "2030-08-01T00:00:00Z",
        "end": "2030-09-01T00:00:00Z",  # the end day included
        "period": 2 * 86400,
    }
    assert c.get(url).json()["end"] == "2030-09-01T00:00:00Z"
    assert c.put(url, json=setting).status_code == 403  # no CSRF token
    assert c.put(url, json={**setting, "period": "1s"}, headers=h).status_code == 422
    assert c.put(url, json={**setting, "end": "someday"}, headers=h).status_code == 422
    assert c.put(url, json={"body": ""}, headers=h).status_code == 422  # enabled, no text
    assert c.put(url, json={**setting, "colour": "red"}, headers=h).status_code == 400
    r = c.delete(url, headers=h)
    assert r.json()["enabled"] is False and r.json()["body"] == "Back Monday."
    # another user's vacation and spam folder
    other = f"{A}/users/bob@example.test"
    assert c.get(f"{other}/vacation").status_code == 403
    assert c.put(f"{other}/vacation", json=setting, headers=h).status_code == 403
    assert c.delete(f"{other}/vacation", headers=h).status_code == 403
    assert c.patch(other, json={"spam_folder": "junk"}, headers=h).status_code == 403
    # its own spam folder
    me = f"{A}/users/carol@example.test"
    assert c.get(me).json()["spam_folder"] == "inbox"
    r = c.patch(me, json={"spam_folder": "junk"}, headers=h)
    assert r.status_code == 200 and r.json()["spam_folder"] == "junk"
    assert c.patch(me, json={"spam_folder": "trash"}, headers=h).status_code == 400
    # the site admin (a token) and the domain's admin may; another domain's admin may not
    assert site.put(url, json=setting).json()["enabled"] is True
    assert site.patch(me, json={"spam_folder": "inbox"}).json()["spam_folder"] == "inbox"
    site.post(f"{A}/domains", json={"name": "fourth.test", "postmaster_password": "pm4"})
    gil_user = {"name": "gil", "password": "g"}
    assert site.post(f"{A}/domains/fourth.test/users", json=gil_user).status_code == 201
    pm, pm_csrf = login(server, "postmaster@fourth.test", "pm4")
    ph = {"X-CSRF-Token": pm_csrf}
    assert pm.get(url).status_code == 403
    assert pm.patch(me, json={"spam_folder": "junk"}, headers=ph).status_code == 403
    gil = f"{A}/users/gil@fourth.test"
    assert pm.put(f"{gil}/vacation", json=setting, headers=ph).json()["subject"] == "Away"
    assert pm.patch(gil, json={"spam_folder": "junk"}, headers=ph).json()["spam_folder"] == "junk"
    assert pm.get(f"{A}/users/nobody@fourth.test/vacation").status_code == 404
    log = (server.home / "server.log").read_text()
    assert "http.change who=carol@example.test what=vacation.set target=carol@example.test" in log
    assert "what=vacation.off target=carol@example.test" in log
    assert 'http.change who=carol@example.test what="user.set spam_folder"' in log
    shown = subprocess.run(
        [*QTOASTER, "user", "show", "--home", str(server.home), "gil@fourth.test"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "Away" in shown and "junk" in shown
