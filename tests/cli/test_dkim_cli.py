"""``qtoaster dkim``: keygen, list, show, rotate against a real DNS server (dnsmasq), delete,
and the refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tests.dnsserver import DnsServer, Zone

from qtoaster.cli.dkim import EXIT_TEMPORARY
from qtoaster.cli.main import cli
from qtoaster.core.home import Home
from qtoaster.directory.store import create_directory
from qtoaster.mailauth import dkimkeys


class TxtZone(Zone):
    """A zone whose TXT records may hold several strings (an RSA-2048 key needs two)."""

    def config_lines(self) -> list[str]:
        txt, self.txt = self.txt, []
        try:
            lines = super().config_lines()
        finally:
            self.txt = txt
        for name, text in txt:
            parts = [text[i : i + 255] for i in range(0, len(text), 255)]
            lines.append(f"txt-record={name}," + ",".join(f'"{p}"' for p in parts))
        return lines


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    create_directory(home)
    home.control.mkdir()
    for args in (["example.com"], ["alias.example", "--alias-of", "example.com"]):
        result = run(home, "domain", "add", *args)
        assert result.exit_code == 0, result.output
    return home


def settings(home: Home, dns: str, extra: str = "") -> None:
    home.settings_file.write_text(f'[dns]\nnameservers = ["{dns}"]\ntimeout = 5\n{extra}')


def run(home: Home, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args[:2], "--home", str(home.root), *args[2:]])


def keys(home: Home, domain: str = "example.com") -> dict[str, str]:
    return {k.selector: k.state for k in dkimkeys.load_keys(home.root / "dkim", domain)}


def test_keygen_list_show_delete(home: Home) -> None:
    settings(home, "127.0.0.1:9")
    result = run(home, "dkim", "keygen", "Example.COM")
    assert result.exit_code == 0, result.output
    selectors = re.findall(r"made (\S+) ", result.output)
    assert [s[-1] for s in selectors] == ["r", "e"] and len(selectors[0]) == 9
    assert set(keys(home).values()) == {"pending"}
    # Files: directory 0700, key 0600, state file beside them.
    where = home.root / "dkim" / "example.com"
    assert (home.root / "dkim").stat().st_mode & 0o777 == 0o700
    assert (where / f"{selectors[0]}.pem").stat().st_mode & 0o777 == 0o600
    assert (where / "keys.json").is_file()

    # The alias domain signs with its own keys; a chosen selector.
    result = run(
        home, "dkim", "keygen", "alias.example", "--algorithm", "ed25519", "--selector", "s1"
    )
    assert result.exit_code == 0, result.output
    assert keys(home, "alias.example") == {"s1": "pending"}

    result = run(home, "dkim", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("alias.example s1 ed25519-sha256 pending ")
    assert {line.split()[1] for line in lines[1:]} == set(selectors)

    result = run(home, "dkim", "show", "example.com")
    assert result.exit_code == 0, result.output
    rsa_line = next(line for line in result.output.splitlines() if "k=rsa" in line)
    strings = re.findall(r'"([^"]*)"', rsa_line)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert rsa_line.startswith(f"{selectors[0]}._domainkey.example.com. IN TXT ( ")
    key = dkimkeys.load_keys(home.root / "dkim", "example.com")[0]
    assert "".join(strings) == key.txt()

    result = run(home, "dkim", "delete", "example.com", selectors[0])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"deleted {selectors[0]} (rsa-sha256, was pending)")
    assert not (where / f"{selectors[0]}.pem").exists()
    assert list(keys(home)) == [selectors[1]]


def test_refusals(home: Home) -> None:
    settings(home, "127.0.0.1:9")
    result = run(home, "dkim", "keygen", "other.example")
    assert result.exit_code == 1
    assert "other.example is not a hosted domain" in result.output
    assert not (home.root / "dkim" / "other.example").exists()
    result = run(home, "dkim", "rotate", "other.example")
    assert result.exit_code == 1 and "not a hosted domain" in result.output
    result = run(home, "dkim", "keygen", "../etc")
    assert result.exit_code == 1 and "is not a domain name" in result.output
    result = run(home, "dkim", "keygen", "example.com", "--selector", "a;b", "--algorithm", "rsa")
    assert result.exit_code == 1 and "selector 'a;b'" in result.output
    result = run(home, "dkim", "keygen", "example.com", "--selector", "s1")
    assert result.exit_code == 2 and "give --algorithm too" in result.output
    result = run(home, "dkim", "delete", "example.com", "nosuch")
    assert result.exit_code == 1 and "example.com has no key with selector nosuch" in result.output
    result = run(home, "dkim", "show", "example.com")
    assert result.exit_code == 1 and "has no DKIM keys" in result.output


def test_rotate_through_dns(home: Home) -> None:
    # First run: no keys, so new pending ones and their records to publish.
    settings(home, "127.0.0.1:9", '[dkim]\nalgorithms = ["ed25519", "rsa"]\ngrace = 0\n')
    with DnsServer(TxtZone(domains=("example.com",))) as dns:
        settings(home, dns, '[dkim]\nalgorithms = ["ed25519", "rsa"]\ngrace = 0\n')
        result = run(home, "dkim", "rotate", "example.com")
        assert result.exit_code == 0, result.output
        assert result.output.count("pending: publish") == 2
        assert "publish:\n" in result.output
        first = dkimkeys.load_keys(home.root / "dkim", "example.com")
        assert {k.state for k in first} == {"pending"}

        # Not published yet: it waits, and says so.
        result = run(home, "dkim", "rotate", "example.com")
        assert result.exit_code == 0, result.output
        assert result.output.count("not published yet; waiting") == 2
        assert set(keys(home).values()) == {"pending"}

    # Published (one matching, one with another key): only the matching one activates.
    ed = next(k for k in first if k.algorithm == "ed25519-sha256")
    rsa = next(k for k in first if k.algorithm == "rsa-sha256")
    zone = TxtZone(
        domains=("example.com",),
        txt=[
            (ed.record_name(), ed.txt()),
            (rsa.record_name(), "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
        ],
    )
    with DnsServer(zone) as dns:
        settings(home, dns, '[dkim]\nalgorithms = ["ed25519", "rsa"]\ngrace = 0\n')
        result = run(home, "dkim", "rotate", "example.com")
        assert result.exit_code == 0, result.output
        assert f"key {ed.selector} (ed25519-sha256) now active" in result.output
        assert "published but does not match; waiting" in result.output
        assert keys(home) == {ed.selector: "active", rsa.selector: "pending"}

    zone.txt = [(ed.record_name(), ed.txt()), (rsa.record_name(), rsa.txt())]
    with DnsServer(zone) as dns:
        settings(home, dns, '[dkim]\nalgorithms = ["ed25519", "rsa"]\ngrace = 0\n')
        result = run(home, "dkim", "rotate", "example.com")
        assert result.exit_code == 0, result.output
        assert keys(home) == {ed.selector: "active", rsa.selector: "active"}
        result = run(home, "dkim", "rotate", "example.com")
        assert result.output == "example.com: nothing to do\n"

    # An active key older than rotate_after is replaced: new pending keys first; once
    # published, the old key retires; with grace 0 the next run deletes it.
    store = home.root / "dkim"
    for key in dkimkeys.load_keys(store, "example.com"):
        dkimkeys.set_state(store, key, "active", now=key.since - 200 * 86400)
    with DnsServer(zone) as dns:
        settings(home, dns, '[dkim]\nalgorithms = ["ed25519"]\ngrace = 0\n')
        result = run(home, "dkim", "rotate", "example.com")
        assert result.exit_code == 0, result.output
        new = next(k for k in dkimkeys.load_keys(store, "example.com") if k.state == "pending")
        assert new.algorithm == "ed25519-sha256" and new.selector != ed.selector
    zone.txt.append((new.record_name(), new.txt()))
    with DnsServer(zone) as dns:
        settings(home, dns, '[dkim]\nalgorithms = ["ed25519"]\ngrace = 0\n')
        result = run(home, "dkim", "rotate", "example.com")
        assert result.exit_code == 0, result.output
        assert f"key {ed.selector} (ed25519-sha256) now retiring" in result.output
        assert keys(home)[ed.selector] == "retiring" and keys(home)[new.selector] == "active"
        result = run(home, "dkim", "rotate", "example.com")
        assert f"deleted retired key {ed.selector}" in result.output
        assert ed.selector not in keys(home)


def test_rotate_dns_failure_is_temporary(home: Home) -> None:
    # A zone that is not ours answers REFUSED: a failure, not "not published".
    with DnsServer(Zone(domains=("other.test",))) as dns:
        settings(home, dns)
        assert run(home, "dkim", "keygen", "example.com").exit_code == 0
        result = run(home, "dkim", "rotate", "example.com")
    assert result.exit_code == EXIT_TEMPORARY, result.output
    assert "DNS lookup failed; try again later" in result.output
    assert set(keys(home).values()) == {"pending"}


def test_keygen_active_signs_at_once_and_never_beside_an_active_key(home: Home) -> None:
    settings(home, "127.0.0.1:9")
    result = run(home, "dkim", "keygen", "example.com", "--active")
    assert result.exit_code == 0, result.output
    assert set(keys(home).values()) == {"active"}
    assert "signing with them" in result.output
    result = run(home, "dkim", "keygen", "example.com", "--algorithm", "rsa", "--active")
    assert result.exit_code == 1 and "already has an active rsa key" in result.output
    assert len(keys(home)) == 2  # nothing made
