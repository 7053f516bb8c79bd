"""policy.rbl against a real DNS server (dnsmasq on loopback): rblsmtpd's decisions."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Iterator

import pytest
from tests.dnsserver import DnsServer, Zone

from qtoaster.config.endpoints import Source, parse_sources
from qtoaster.core.errors import ConfigError
from qtoaster.core.reply import Reply
from qtoaster.policy.rbl import (
    TEMPORARY_TEXT,
    Block,
    Rbl,
    clean,
    client_address,
    env_decision,
    reversed_name,
)

LISTED = "127.0.0.2"
LISTED_TEXT = "Blocked, see http://rbl.test/query?ip=127.0.0.2"
LONG = "L" * 250
V6_LISTED = "2001:db8::1"
V6_ANTI_AAAA = "2001:db8::2"
V6_ANTI_A = "2001:db8::3"


def nibbles(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer.removesuffix(".ip6.arpa")


def _zone() -> Zone:
    return Zone(
        txt=[
            ("2.0.0.127.rbl.test", LISTED_TEXT),
            ("4.0.0.127.rbl.test", LONG),
            ("5.0.0.127.rbl.test", ""),  # a TXT without text lists nothing
            ("2.0.0.127.other.test", "other list"),
            ("2.0.0.127.err.test", "Error: open resolver"),
            (f"{nibbles(V6_LISTED)}.rbl.test", "v6 listed"),
        ],
        hosts=[
            ("2.0.0.127.rbl.test", "127.0.0.2"),
            ("2.0.0.127.anti.test", "127.0.0.2"),
            ("3.0.0.127.anti.test", "127.0.0.3"),
            ("2.0.0.127.fixed.test", "127.0.0.2"),
            ("2.0.0.127.err.test", "127.255.255.254"),  # the DNSxL refuses to answer
            ("3.0.0.127.err.test", "127.255.255.252"),
            (f"{nibbles(V6_ANTI_AAAA)}.anti.test", "::1"),
            (f"{nibbles(V6_ANTI_A)}.anti.test", "127.0.0.2"),
        ],
    )


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with DnsServer(_zone()) as address:
        yield address


def rbl(
    server: str,
    rbls: list[str],
    antis: tuple[str, ...] | list[str] = (),
    *,
    bounce: bool = False,
    fail_closed: bool = False,
) -> Rbl:
    sources = parse_sources(rbls, antis)
    return Rbl(
        sources,
        nameservers=[server],
        timeout=1,
        deadline=3,
        bounce=bounce,
        fail_closed=fail_closed,
    )


async def test_txt_is_the_message_451_by_default(server: str) -> None:
    assert await rbl(server, ["rbl.test"]).decide(LISTED, {}) == Block(451, LISTED_TEXT, "rbl.test")


async def test_not_listed(server: str) -> None:
    checker = rbl(server, ["rbl.test", "other.test"], ["anti.test"])
    assert await checker.decide("127.0.0.9", {}) is None
    assert await checker.decide("127.0.0.5", {}) is None  # empty TXT


async def test_sources_in_order_first_hit_wins(server: str) -> None:
    found = await rbl(server, ["other.test", "rbl.test"]).decide(LISTED, {})
    assert found == Block(451, "other list", "other.test")


async def test_anti_zone_is_checked_first_and_ends_the_search(server: str) -> None:
    assert await rbl(server, ["rbl.test"], ["anti.test"]).decide(LISTED, {}) is None
    # anti-listed elsewhere, not here: the RBL still decides
    assert await rbl(server, ["rbl.test"], ["nothing.test"]).decide(LISTED, {}) is not None


async def test_bounce_answers_553(server: str) -> None:
    found = await rbl(server, ["rbl.test"], bounce=True).decide(LISTED, {})
    assert found == Block(553, LISTED_TEXT, "rbl.test")
    assert found.reply == Reply(553, LISTED_TEXT)


async def test_fixed_message_form_uses_an_a_record(server: str) -> None:
    checker = rbl(server, ["fixed.test:Go away %IP%, %x; see %IP%"])
    found = await checker.decide(LISTED, {})
    assert found == Block(451, "Go away 127.0.0.2, %x; see 127.0.0.2", "fixed.test")
    assert await checker.decide("127.0.0.3", {}) is None


async def test_message_truncated_to_200(server: str) -> None:
    found = await rbl(server, ["rbl.test"]).decide("127.0.0.4", {})
    assert found is not None and found.text == "L" * 200


async def test_operational_error_answers_never_list(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="qtoaster.policy.rbl"):
        assert await rbl(server, ["err.test"]).decide(LISTED, {}) is None  # TXT + 127.255.255.254
        assert await rbl(server, ["err.test:listed"]).decide("127.0.0.3", {}) is None
        # an anti zone answering an error does not anti-list either
        found = await rbl(server, ["rbl.test"], ["err.test"]).decide(LISTED, {})
    assert found == Block(451, LISTED_TEXT, "rbl.test")
    assert "operational error" in caplog.text


async def test_ipv6_nibbles(server: str) -> None:
    checker = rbl(server, ["rbl.test"], ["anti.test"])
    assert await checker.decide(V6_LISTED, {}) == Block(451, "v6 listed", "rbl.test")
    assert await rbl(server, ["anti.test:anti as rbl"]).decide(V6_ANTI_AAAA, {}) is not None
    assert await rbl(server, ["anti.test:anti as rbl"]).decide(V6_ANTI_A, {}) is not None
    assert await rbl(server, ["rbl.test"], ["anti.test"]).decide(V6_ANTI_AAAA, {}) is None
    assert await checker.decide("2001:db8::9", {}) is None


async def test_ipv4_mapped_client_is_looked_up_as_ipv4(server: str) -> None:
    found = await rbl(server, ["rbl.test"]).decide("::ffff:127.0.0.2", {})
    assert found == Block(451, LISTED_TEXT, "rbl.test")


def test_reversed_names() -> None:
    assert reversed_name(ipaddress.ip_address("192.0.2.1")) == "1.2.0.192"
    # rblsmtpd(1)'s example
    assert reversed_name(ipaddress.ip_address("fe80::1")) == "1." + "0." * 28 + "8.e.f"
    assert client_address("::ffff:192.0.2.1") == ipaddress.ip_address("192.0.2.1")
    assert client_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert client_address("unknown") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", (True, None)),
        ("blocked here", (True, Block(451, "blocked here", "RBLSMTPD"))),
        ("-go away", (True, Block(553, "go away", "RBLSMTPD"))),
        ("-", (True, Block(553, "", "RBLSMTPD"))),
        ("--x", (True, Block(553, "-x", "RBLSMTPD"))),
        ("tab\there é", (True, Block(451, "tab?here ??", "RBLSMTPD"))),
        ("x" * 300, (True, Block(451, "x" * 200, "RBLSMTPD"))),
    ],
)
def test_env_decision(value: str, expected: tuple[bool, Block | None]) -> None:
    assert env_decision({"RBLSMTPD": value}) == expected
    assert env_decision({}) == (False, None)


async def test_rblsmtpd_env_overrides_the_lists(server: str) -> None:
    checker = rbl(server, ["rbl.test"])
    assert await checker.decide(LISTED, {"RBLSMTPD": ""}) is None  # relay clients
    assert await checker.decide("127.0.0.9", {"RBLSMTPD": "-no"}) == Block(553, "no", "RBLSMTPD")
    assert await Rbl([]).decide("127.0.0.9", {"RBLSMTPD": "x"}) == Block(451, "x", "RBLSMTPD")
    assert await Rbl([]).decide(LISTED, {}) is None


async def test_temporary_failure_is_not_listed_and_logged(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    # names outside the server's zones are REFUSED: a temporary failure
    with caplog.at_level(logging.WARNING, logger="qtoaster.policy.rbl"):
        assert await rbl(server, ["elsewhere.example"]).decide(LISTED, {}) is None
    assert "elsewhere.example for 127.0.0.2: temporary DNS failure" in caplog.text
    # a later RBL still lists, but never with 553 (rblsmtpd's flagmustnotbounce)
    found = await rbl(server, ["elsewhere.example", "rbl.test"], bounce=True).decide(LISTED, {})
    assert found == Block(451, LISTED_TEXT, "rbl.test")
    # an anti-RBL lookup failing temporarily counts as anti-listed (-C)
    assert await rbl(server, ["rbl.test"], ["elsewhere.example"]).decide(LISTED, {}) is None


async def test_fail_closed(server: str) -> None:
    temporary = Block(451, TEMPORARY_TEXT, "elsewhere.example")
    checker = rbl(server, ["elsewhere.example"], fail_closed=True, bounce=True)
    assert await checker.decide("127.0.0.9", {}) == temporary
    # a failing anti zone no longer passes the client: the RBL decides, with 451
    found = await rbl(
        server, ["rbl.test"], ["elsewhere.example"], fail_closed=True, bounce=True
    ).decide(LISTED, {})
    assert found == Block(451, LISTED_TEXT, "rbl.test")


async def test_dead_dns_never_blocks() -> None:
    checker = Rbl(
        parse_sources(["rbl.test"], ["anti.test"]),
        nameservers=["127.0.0.1:1"],  # nothing listens: refused, retried until the deadline
        timeout=0.1,
        deadline=0.5,
    )
    started = time.monotonic()
    assert await checker.decide(LISTED, {}) is None
    assert time.monotonic() - started < 2


async def test_a_silent_server_is_cut_by_the_deadline() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        checker = Rbl(
            parse_sources(["rbl.test", "other.test"], ["anti.test"]),
            nameservers=[f"127.0.0.1:{port}"],
            timeout=10,
            deadline=0.3,
        )
        started = time.monotonic()
        assert await checker.decide(LISTED, {}) is None
        assert time.monotonic() - started < 2
        closed = Rbl(
            parse_sources(["rbl.test"], []),
            nameservers=[f"127.0.0.1:{port}"],
            timeout=10,
            deadline=0.3,
            fail_closed=True,
        )
        assert await closed.decide(LISTED, {}) == Block(451, TEMPORARY_TEXT, "rbl.test")
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_answers_are_cached() -> None:
    zone = Zone(txt=[("2.0.0.127.rbl.test", "cached")], ttl=300)
    with DnsServer(zone) as address:
        checker = Rbl(parse_sources(["rbl.test"], []), nameservers=[address], timeout=0.3)
        assert await checker.decide(LISTED, {}) == Block(451, "cached", "rbl.test")
    # the server is gone: the answer comes from the cache
    assert await checker.decide(LISTED, {}) == Block(451, "cached", "rbl.test")


def test_parse_sources() -> None:
    assert parse_sources(["zen.example.", "fixed.example:no %IP%"], ["wl.example"]) == (
        Source("wl.example", anti=True),
        Source("zen.example"),
        Source("fixed.example", message="no %IP%"),
    )
    with pytest.raises(ConfigError) as caught:
        parse_sources(["", "a..b", "ok.example"], ["wl.example:text"])
    assert len(caught.value.problems) == 3
    with pytest.raises(ConfigError):
        Rbl([], nameservers=["not an address:x"])


def test_clean() -> None:
    assert clean(b"ok \x00\x7f\x1b[31m\xff~") == "ok ???[31m?~"
    assert clean(b"a" * 201) == "a" * 200
