"""mfcheck (spec 9) against a real DNS server (dnsmasq on loopback)."""

from __future__ import annotations

import inspect
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from tests.dnsserver import DnsServer, Zone

from qtoaster.core.errors import ConfigError
from qtoaster.policy.checks.mfcheck import (
    DNS_TEMPORARY,
    NO_SUCH_DOMAIN,
    Existence,
    Mfcheck,
    SenderDomains,
    mfcheck_enabled,
    sender_domain,
)
from qtoaster.policy.pipeline import Pipeline
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict


def _zone(ttl: int = 0) -> Zone:
    return Zone(
        mx=[
            ("mx.test", 10, "mail.mx.test"),
            ("ghostmx.test", 10, "nowhere.ghostmx.test"),  # MX name without address
            ("elsewhere.test", 10, "mail.outside.example"),  # MX name REFUSED: not asked
        ],
        hosts=[
            ("mail.mx.test", "192.0.2.1"),
            ("aonly.test", "192.0.2.2"),
            ("aaaaonly.test", "2001:db8::3"),
        ],
        txt=[("txtonly.test", "exists, but no address")],
        ttl=ttl,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with DnsServer(_zone()) as address:
        yield address


@pytest.fixture
def domains(server: str) -> SenderDomains:
    return SenderDomains([server], timeout=1, lifetime=2)


def facts(sender: str, env: Mapping[str, str] | None = None) -> Facts:
    return Facts(remote_ip="192.0.2.9", local_ip="127.0.0.1", env=env or {}, sender=sender)


async def verdict_of(check: Mfcheck, sender: str, env: Mapping[str, str] | None = None) -> Verdict:
    answer = check.check(Stage.MAIL, facts(sender, env), SessionState())
    return await answer if inspect.isawaitable(answer) else answer


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("someone@mx.test", PASS),
        ("someone@MX.TEST", PASS),
        ("someone@ghostmx.test", PASS),  # spec 9 NOTE: MX names without A are accepted
        ("someone@elsewhere.test", PASS),  # any MX: its name is not resolved
        ("someone@aonly.test", PASS),
        ("someone@aaaaonly.test", PASS),
        ("weird@x@aonly.test", PASS),  # the domain after the LAST "@"
        ("someone@nonexistent.test", Verdict(reply=NO_SUCH_DOMAIN)),
        ("someone@txtonly.test", Verdict(reply=NO_SUCH_DOMAIN)),  # neither MX nor A
        ("aonly.test@nonexistent.test", Verdict(reply=NO_SUCH_DOMAIN)),
        ("someone@bad..label.test", Verdict(reply=NO_SUCH_DOMAIN)),
        ("someone@outside.example", Verdict(reply=DNS_TEMPORARY)),  # REFUSED
    ],
)
async def test_sender_domains(domains: SenderDomains, sender: str, expected: Verdict) -> None:
    assert await verdict_of(Mfcheck(domains, 1), sender) == expected


@pytest.mark.parametrize(
    "sender", ["", "#@[]", "unqualified", "user@", "u@[192.0.2.7]", "u@192.0.2.7", "u@[IPv6:::1]"]
)
async def test_not_checked_or_literal(sender: str) -> None:
    dead = SenderDomains(["127.0.0.1:9"], timeout=0.1, lifetime=0.1)
    answer = Mfcheck(dead, 1).check(Stage.MAIL, facts(sender), SessionState())
    assert answer == PASS  # at once, no DNS asked


def test_replies_are_the_originals() -> None:
    assert (
        NO_SUCH_DOMAIN.render() == b"553 sorry, your envelope sender domain must exist (#5.7.1)\r\n"
    )
    assert DNS_TEMPORARY.render() == b"451 DNS temporary failure (#4.3.0)\r\n"


async def test_dead_server_is_temporary() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers: a timeout
        dead = SenderDomains([f"127.0.0.1:{silent.getsockname()[1]}"], timeout=0.1, lifetime=0.2)
        assert await dead.exists("mx.test") is Existence.UNKNOWN
        assert await verdict_of(Mfcheck(dead, 1), "a@mx.test") == Verdict(reply=DNS_TEMPORARY)


def test_enabled_by_control_file_and_mfcheck_variable(tmp_path: Path) -> None:
    assert not mfcheck_enabled({}, 0)
    assert mfcheck_enabled({}, 1)
    assert mfcheck_enabled({"MFCHECK": "1"}, 0)
    assert mfcheck_enabled({"MFCHECK": "yes"}, 0)
    assert not mfcheck_enabled({"MFCHECK": ""}, 1)
    assert not mfcheck_enabled({"MFCHECK": "0"}, 1)
    assert not mfcheck_enabled({"MFCHECK": " 00 "}, 1)
    dead = SenderDomains(["127.0.0.1:9"])
    (tmp_path / "mfcheck").write_text("1\n")
    assert Mfcheck.from_control_dir(tmp_path, dead)._control_value == 1
    assert Mfcheck.from_control_dir(tmp_path / "missing", dead)._control_value == 0


async def test_off_means_no_lookup(domains: SenderDomains) -> None:
    assert (
        Mfcheck(domains, 0).check(Stage.MAIL, facts("a@nonexistent.test"), SessionState()) == PASS
    )
    on_by_env = Mfcheck(domains, 0)
    verdict = await verdict_of(on_by_env, "a@nonexistent.test", {"MFCHECK": "1"})
    assert verdict.reply == NO_SUCH_DOMAIN
    off_by_env = Mfcheck(domains, 1)
    assert (
        off_by_env.check(Stage.MAIL, facts("a@nonexistent.test", {"MFCHECK": "0"}), SessionState())
        == PASS
    )


def test_sender_domain() -> None:
    assert sender_domain("a@b@c.test") == "c.test"
    assert sender_domain("#@[]") is None
    assert sender_domain("") is None
    assert sender_domain("local") is None
    assert sender_domain("a@[1.2.3.4]") is None


async def test_cached_answers_decide_at_once_without_the_server() -> None:
    zone = _zone(ttl=300)
    server = DnsServer(zone)
    domains = SenderDomains([server.start()], timeout=0.3, lifetime=0.5)
    check = Mfcheck(domains, 1)
    try:
        assert await verdict_of(check, "a@mx.test") == PASS
        assert await verdict_of(check, "a@aonly.test") == PASS
    finally:
        server.stop()
    assert (
        check.check(Stage.MAIL, facts("b@mx.test"), SessionState()) == PASS
    )  # no task: straight from cache
    assert await verdict_of(check, "b@aonly.test") == PASS  # NODATA MX + A, both cached


async def test_through_the_pipeline(domains: SenderDomains) -> None:
    pipeline = Pipeline([Mfcheck(domains, 1)])
    answer = pipeline.run(Stage.MAIL, facts("a@nonexistent.test"))
    assert inspect.isawaitable(answer)
    assert (await answer).reply == NO_SUCH_DOMAIN


def test_bad_nameserver_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        SenderDomains(["nonsense"])
