"""DKIM keys and DNS records through the http role's API (docs/http.md), against a real
``qtoaster run --http`` with httpx: list, make and delete keys, the TXT record proven to
be the private key's (a dkimpy signature verified against it), the domain's DNS records,
the domain page's "DNS records", and the refusals."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import dkim
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from .harness import Server, make_home
from .test_http_api import A, client, login, token

MESSAGE = b"From: a@dk.test\r\nTo: b@far.test\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = make_home(tmp_path_factory.mktemp("http-dkim"))
    srv = Server(home, "--http", "127.0.0.1:0", workers=1)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def site(server: Server) -> Iterator[httpx.Client]:
    with client(server, token(server.home, "--site", name="site")) as c:
        for name in ("dk.test", "other.test"):
            r = c.post(f"{A}/domains", json={"name": name, "postmaster_password": "pm"})
            assert r.status_code == 201, r.text
        yield c


def _tags(value: str) -> dict[str, str]:
    pairs = (part.strip().partition("=") for part in value.split(";"))
    return {name: text for name, _, text in pairs if name}


def test_make_list_and_verify_keys(server: Server, site: httpx.Client) -> None:
    c, csrf = login(server, "postmaster@dk.test", "pm")
    assert c.get(f"{A}/domains/dk.test/dkim").json() == {"domain": "dk.test", "keys": []}
    r = c.post(f"{A}/domains/dk.test/dkim", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    made = {k["algorithm"]: k for k in r.json()["keys"]}
    assert set(made) == {"rsa-sha256", "ed25519-sha256"}
    assert all(k["state"] == "pending" for k in made.values()) and "note" not in r.json()
    assert all(k["created"].endswith("Z") for k in made.values())
    listed = c.get(f"{A}/domains/dk.test/dkim").json()["keys"]
    assert {k["selector"] for k in listed} == {k["selector"] for k in made.values()}

    rsa = made["rsa-sha256"]
    assert rsa["record"]["name"] == f"{rsa['selector']}._domainkey.dk.test"
    assert rsa["record"]["type"] == "TXT"
    assert rsa["zone"].startswith(f"{rsa['record']['name']}. IN TXT (")
    pem = (server.home / "dkim" / "dk.test" / f"{rsa['selector']}.pem").read_bytes()
    signature = dkim.sign(MESSAGE, rsa["selector"].encode(), b"dk.test", pem)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name.decode().rstrip(".") == rsa["record"]["name"]
        return rsa["record"]["value"].encode()

    assert dkim.verify(signature + MESSAGE, dnsfunc=dns)

    ed = made["ed25519-sha256"]
    tags = _tags(ed["record"]["value"])
    assert tags["v"] == "DKIM1" and tags["k"] == "ed25519"
    path = server.home / "dkim" / "dk.test" / f"{ed['selector']}.pem"
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert base64.b64decode(tags["p"]) == raw

    # the executor gave the key files the send role's user, as the CLI does (0600)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_uid == (server.home / "dkim").stat().st_uid

    log = (server.home / "server.log").read_text()
    for key in made.values():
        name = key["record"]["name"]
        assert f"http.change who=postmaster@dk.test what=dkim.add target={name}" in log


def test_named_active_key_and_delete(server: Server, site: httpx.Client) -> None:
    r = site.post(
        f"{A}/domains/dk.test/dkim",
        json={"algorithm": "ed25519", "selector": "mail2026", "active": True},
    )
    assert r.status_code == 201, r.text
    assert r.json()["keys"][0]["state"] == "active" and "note" in r.json()
    # the same selector again: in use; a second active ed25519 key: refused
    again = {"algorithm": "ed25519", "selector": "mail2026"}
    assert site.post(f"{A}/domains/dk.test/dkim", json=again).status_code == 409
    second = {"algorithm": "ed25519", "active": True}
    assert site.post(f"{A}/domains/dk.test/dkim", json=second).status_code == 409
    r = site.delete(f"{A}/domains/dk.test/dkim/mail2026")
    assert r.status_code == 200 and r.json()["deleted"]["selector"] == "mail2026"
    assert not (server.home / "dkim" / "dk.test" / "mail2026.pem").exists()
    assert site.delete(f"{A}/domains/dk.test/dkim/mail2026").status_code == 404
    log = (server.home / "server.log").read_text()
    assert "who=token:site what=dkim.delete target=mail2026._domainkey.dk.test" in log


def test_dns_records_include_dkim(server: Server, site: httpx.Client) -> None:
    keys = site.get(f"{A}/domains/dk.test/dkim").json()["keys"]
    assert keys
    found = site.get(f"{A}/domains/dk.test/dns").json()
    records = found["records"]
    assert all(set(r) >= {"name", "type", "value"} for r in records)
    types = {r["type"] for r in records}
    assert {"MX", "TXT"} <= types
    mx = [r for r in records if r["type"] == "MX"]
    assert mx[0]["name"] == "dk.test."
    txt = {(r["name"], r["value"]) for r in records if r["type"] == "TXT"}
    for key in keys:
        assert (key["record"]["name"] + ".", key["record"]["value"]) in txt
    assert any(value.startswith("v=spf1") for _, value in txt)
    assert any(name == "_dmarc.dk.test." for name, _ in txt)
    assert site.get(f"{A}/domains/nowhere.test/dns").status_code == 404
    assert site.get(f"{A}/domains/nowhere.test/dkim").status_code == 404


def test_domain_page_lists_dns_records(server: Server, site: httpx.Client) -> None:
    c, _ = login(server, "postmaster@dk.test", "pm")
    page = c.get("/domains/dk.test")
    assert page.status_code == 200
    assert "DNS records" in page.text and 'id="dns"' in page.text
    title = page.text.split("<title>", 1)[1].split("</title>", 1)[0]
    assert "DNS" not in title and page.text.count('id="dns"') == 1
    assert page.text.index('id="aliases"') < page.text.index('id="dns"')
    key = site.get(f"{A}/domains/dk.test/dkim").json()["keys"][0]
    assert key["record"]["name"] in page.text and key["record"]["value"] in page.text


def test_refusals(server: Server, site: httpx.Client) -> None:
    user, csrf = login(server, "bob@example.test")
    h = {"X-CSRF-Token": csrf}
    assert user.get(f"{A}/domains/example.test/dkim").status_code == 403
    assert user.get(f"{A}/domains/example.test/dns").status_code == 403
    assert user.post(f"{A}/domains/example.test/dkim", json={}, headers=h).status_code == 403
    assert user.delete(f"{A}/domains/example.test/dkim/x", headers=h).status_code == 403
    other, ocsrf = login(server, "postmaster@other.test", "pm")
    oh = {"X-CSRF-Token": ocsrf}
    assert other.get(f"{A}/domains/dk.test/dkim").status_code == 403
    assert other.get(f"{A}/domains/dk.test/dns").status_code == 403
    assert other.post(f"{A}/domains/dk.test/dkim", json={}, headers=oh).status_code == 403
    assert other.delete(f"{A}/domains/dk.test/dkim/x", headers=oh).status_code == 403
    with client(server, token(server.home, "--domain", "other.test", name="o")) as t:
        assert t.get(f"{A}/domains/dk.test/dkim").status_code == 403
        assert t.get(f"{A}/domains/other.test/dkim").status_code == 200
    # CSRF missing on a cookie write
    assert other.post(f"{A}/domains/other.test/dkim", json={}).status_code == 403
    bad = [
        {"algorithm": "rsa", "selector": "bad_selector!"},
        {"algorithm": "dsa"},
        {"selector": "x1"},  # one selector for two algorithms
        {"algorithm": "rsa", "active": "yes"},
    ]
    for data in bad:
        r = site.post(f"{A}/domains/other.test/dkim", json=data)
        assert r.status_code == 422, (data, r.text)
    assert site.post(f"{A}/domains/other.test/dkim", json={"size": 4096}).status_code == 400
    assert site.delete(f"{A}/domains/other.test/dkim/bad_selector!").status_code == 422
    assert site.get(f"{A}/domains/other.test/dkim").json()["keys"] == []
