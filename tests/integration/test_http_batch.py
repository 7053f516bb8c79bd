"""POST /api/v1/domains/{domain}/users:batch against a real ``qtoaster run --http``: many
users at once, all or none, with the executor giving only the new Maildirs their owner
(cli/adminops.py), and the Server-Timing header of every response (httpd/timing.py)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import httpx
import pytest

from .harness import Server, make_home
from .test_http_api import A, client, login, token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        make_home(tmp_path_factory.mktemp("http-batch")), "--http", "127.0.0.1:0", workers=1
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def site(server: Server) -> Iterator[httpx.Client]:
    with client(server, token(server.home, "--site", name="site")) as c:
        yield c


def batch(c: httpx.Client, domain: str, users: object) -> httpx.Response:
    return c.post(f"{A}/domains/{domain}/users:batch", json={"users": users})


def test_batch_adds_all_with_passwords_and_owners(server: Server, site: httpx.Client) -> None:
    assert site.post(f"{A}/domains", json={"name": "many.test"}).status_code == 201
    users = [{"name": f"u{i}", "password": f"pw{i}"} for i in range(5)]
    users.append({"name": "q", "quota": "5M"})
    r = batch(site, "many.test", users)
    assert r.status_code == 201, r.text
    assert r.json() == {
        "domain": "many.test",
        "added": [*(f"u{i}@many.test" for i in range(5)), "q@many.test"],
    }
    page = site.get(f"{A}/domains/many.test/users", params={"search": "u", "limit": 10}).json()
    assert page["total"] == 5 and all(u["has_password"] for u in page["items"])
    assert site.get(f"{A}/users/q@many.test").json()["quota"] == 5 << 20
    login(server, "u3@many.test", "pw3")  # hashed, and the auth role reads it
    domains = server.home / "domains"
    if os.geteuid() == 0:  # the executor gave the new Maildirs the mailbox owner
        owner = domains.stat().st_uid
        for top in (domains / "many.test", domains / "many.test" / "u0" / "Maildir" / "new"):
            assert top.stat().st_uid == owner
    log = (server.home / "server.log").read_text()
    assert "http.change who=token:site what=user.add target=u4@many.test" in log


def test_batch_is_all_or_none(server: Server, site: httpx.Client) -> None:
    site.post(f"{A}/domains", json={"name": "none.test"})
    site.post(f"{A}/domains/none.test/users", json={"name": "taken", "password": "x"})
    r = batch(site, "none.test", [{"name": "new1", "password": "a"}, {"name": "taken"}])
    assert r.status_code == 409 and "user 2 (taken@none.test)" in r.json()["error"]
    r = batch(site, "none.test", [{"name": "new1"}, {"name": "NEW1"}])
    assert r.status_code == 422 and "already user 1" in r.json()["error"]
    r = batch(site, "none.test", [{"name": "new1"}, {"name": "new2", "quota": "lots"}])
    assert r.status_code == 422 and r.json()["error"].startswith("user 2: invalid")
    assert batch(site, "none.test", [{"name": "a@b"}]).status_code == 422
    assert batch(site, "none.test", []).status_code == 422
    assert batch(site, "none.test", "new1").status_code == 422
    assert batch(site, "nowhere.test", [{"name": "x"}]).status_code == 404
    assert site.get(f"{A}/domains/none.test/users", params={"search": "new"}).json()["total"] == 0
    assert not (server.home / "domains" / "none.test" / "new1").exists()


def test_batch_refusals_by_scope(server: Server, site: httpx.Client) -> None:
    site.post(f"{A}/domains", json={"name": "scoped.test"})
    with client(server, token(server.home, "--domain", "scoped.test", name="scoped")) as c:
        assert batch(c, "scoped.test", [{"name": "ok"}]).status_code == 201
        assert batch(c, "example.test", [{"name": "no"}]).status_code == 403
    c, csrf = login(server, "bob@example.test")
    r = c.post(
        f"{A}/domains/example.test/users:batch",
        json={"users": [{"name": "no"}]},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 403


def test_server_timing_header(site: httpx.Client) -> None:
    r = site.get(f"{A}/domains/example.test/users", params={"limit": 2})
    assert re.fullmatch(r"app;dur=\d+\.\d", r.headers["server-timing"])
    assert "server-timing" in site.get(f"{A}/nothing-here").headers
