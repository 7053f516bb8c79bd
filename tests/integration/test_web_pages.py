"""The web pages of the http role (docs/http.md "Web pages") against a real ``qtoaster run
--http``, with httpx: no page without a login, none outside the login's role, no form
without its CSRF token; the forms change what the API would (the browser walk is in
test_web_browser.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from .harness import Server, make_home, qt


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = make_home(tmp_path_factory.mktemp("web"))
    settings = home / "qtoaster.toml"
    settings.write_text(settings.read_text() + '\n[http]\nadmins = ["alice@example.test"]\n')
    qt(home, "user", "passwd", "postmaster@example.test", "--password", "pm")
    qt(home, "domain", "add", "other.test")
    qt(home, "user", "add", "olga@other.test", "--password", "secret")
    srv = Server(home, "--http", "127.0.0.1:0", workers=1)
    yield srv
    srv.stop()


def browser(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=f"https://127.0.0.1:{server.ports['http']}", verify=False, timeout=30
    )


def logged_in(server: Server, user: str, password: str = "secret") -> tuple[httpx.Client, str]:
    """A client with the session cookie of ``user``, and the CSRF token of its forms."""
    c = browser(server)
    r = c.post("/", data={"user": user, "password": password})
    assert r.status_code == 303, r.text
    page = c.get(r.headers["location"])
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return c, found.group(1)


def test_login_page_and_no_page_without_login(server: Server) -> None:
    with browser(server) as c:
        r = c.get("/")
        assert r.status_code == 200 and '<meta name="viewport"' in r.text
        assert "script" not in r.headers["content-security-policy"].replace("'none'", "")
        for path in ("/domains", "/domains/example.test", "/users/bob@example.test"):
            r = c.get(path)
            assert (r.status_code, r.headers["location"]) == (303, "/"), path
        r = c.post("/domains/example.test/users", data={"name": "x", "password": "y"})
        assert (r.status_code, r.headers["location"]) == (303, "/")
        r = c.post("/", data={"user": "bob@example.test", "password": "wrong"})
        assert r.status_code == 401 and "Wrong user or password." in r.text


def test_each_role_lands_on_its_page_and_no_further(server: Server) -> None:
    site, _ = logged_in(server, "alice@example.test")
    assert site.get("/").headers["location"] == "/domains"
    assert "other.test" in site.get("/domains", params={"search": "oth"}).text
    assert "/domains/example.test" not in site.get("/domains", params={"search": "oth"}).text
    assert site.get("/domains/other.test").status_code == 200

    admin, _ = logged_in(server, "postmaster@example.test", "pm")
    assert admin.get("/").headers["location"] == "/domains/example.test"
    assert admin.get("/domains").status_code == 403
    assert admin.get("/domains/other.test").status_code == 403
    assert admin.get("/users/olga@other.test").status_code == 403
    assert admin.get("/users/bob@example.test").status_code == 200
    listed = admin.get("/domains/example.test", params={"limit": 1, "offset": 1}).text
    assert "2–2 of " in listed and 'id="previous"' in listed and 'id="next"' in listed
    assert listed.count('href="/users/') == 1
    assert admin.get("/domains/example.test", params={"limit": 9999}).status_code == 400

    user, csrf = logged_in(server, "bob@example.test")
    assert user.get("/").headers["location"] == "/users/bob@example.test"
    for path in ("/domains", "/domains/example.test", "/users/carol@example.test"):
        assert user.get(path).status_code == 403, path
    page = user.get("/users/bob@example.test").text
    assert 'id="quota-form"' not in page and 'id="delete-form"' not in page
    r = user.post("/users/bob@example.test/quota", data={"csrf": csrf, "quota": "1G"})
    assert r.status_code == 403
    r = user.post("/users/carol@example.test/vacation", data={"csrf": csrf, "body": "x"})
    assert r.status_code == 403
    r = user.post("/domains/example.test/users", data={"csrf": csrf, "name": "x"})
    assert r.status_code == 403


def test_forms_need_the_csrf_token(server: Server) -> None:
    admin, csrf = logged_in(server, "postmaster@example.test", "pm")
    form = {"name": "dora", "password": "d", "quota": "10M"}
    r = admin.post("/domains/example.test/users", data=form)
    assert r.status_code == 403 and "security token" in r.text
    r = admin.post("/domains/example.test/users", data={**form, "csrf": "wrong"})
    assert r.status_code == 403
    r = admin.post("/domains/example.test/users", data={**form, "csrf": csrf})
    assert (r.status_code, r.headers["location"]) == (303, "/domains/example.test?done=user.add")
    page = admin.get("/domains/example.test", params={"search": "dora"}).text
    assert "dora@example.test" in page and "<meter" in page and "User added." not in page


def test_user_self_service(server: Server) -> None:
    user, csrf = logged_in(server, "carol@example.test")
    me = "/users/carol@example.test"
    r = user.post(f"{me}/spam", data={"csrf": csrf, "spam_folder": "junk"})
    assert r.status_code == 303
    assert 'value="junk" id="spam-junk" checked' in user.get(me).text
    r = user.post(
        f"{me}/forwards", data={"csrf": csrf, "targets": "c@far.test\n", "keep_copy": "on"}
    )
    assert r.status_code == 303 and "c@far.test" in user.get(me).text
    vacation = {
        "csrf": csrf,
        "enabled": "on",
        "subject": "Out",
        "body": "Back soon.",
        "period": "1d",
    }
    r = user.post(f"{me}/vacation", data={**vacation, "start": "2030-01-01", "end": "2030-01-31"})
    assert r.status_code == 303
    page = user.get(me).text
    assert 'value="2030-01-31"' in page and 'value="1d"' in page and "Back soon." in page
    r = user.post(f"{me}/vacation", data={**vacation, "period": "1s"})
    assert r.status_code == 422 and "period" in r.text
    r = user.post(f"{me}/password", data={"csrf": csrf, "password": "n1", "again": "n2"})
    assert r.status_code == 400 and "differ" in r.text
    r = user.post(f"{me}/password", data={"csrf": csrf, "password": "n1", "again": "n1"})
    assert r.status_code == 303
    logged_in(server, "carol@example.test", "n1")
    r = user.post("/logout", data={"csrf": csrf})
    assert (r.status_code, r.headers["location"]) == (303, "/")
    assert user.get(me).status_code == 303
