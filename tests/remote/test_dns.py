"""remote.dns against a real DNS server (dnsmasq on loopback): MX rules and qmail's texts."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Awaitable, Iterator

import dns.flags
import dns.message
import dns.query
import pytest
from tests.dnsserver import DnsServer, Zone

from qtoaster.config.endpoints import parse_nameserver
from qtoaster.core.errors import ConfigError
from qtoaster.remote.dns import (
    AMBIGUOUS_MX,
    NO_MX,
    TEMP_DNS,
    DnsFailure,
    MailHost,
    Resolver,
)
from qtoaster.remote.ipme import local_addresses

ME = "192.0.2.99"  # injected as this machine's address
LOCAL = frozenset({ME, "2001:db8::99"})
BIG = 40  # MX / A records: the UDP answer exceeds 512 bytes


def _zone() -> Zone:
    mx = [
        ("a.test", 10, "mx1.a.test"),
        *(("a.test", 20, f"mx{n}.a.test") for n in (2, 3, 4)),
        ("a.test", 30, "mx5.a.test"),
        ("null.test", 0, "."),
        ("noaddr.test", 10, "ghost1.noaddr.test"),
        ("noaddr.test", 20, "ghost2.noaddr.test"),
        ("partial.test", 10, "ghost.partial.test"),
        ("partial.test", 20, "mx1.a.test"),
        ("soft.test", 10, "host.elsewhere.example"),
        ("softpartial.test", 10, "host.elsewhere.example"),
        ("softpartial.test", 20, "mx1.a.test"),
        ("me.test", 10, "mx1.a.test"),
        ("me.test", 20, "self.test"),
        ("me.test", 30, "mx5.a.test"),
        ("mebest.test", 10, "self.test"),
        ("mebest.test", 20, "mx1.a.test"),
        ("meequal.test", 10, "self.test"),
        ("meequal.test", 10, "mx1.a.test"),
        ("iptarget.test", 10, "192.0.2.77"),
        *(
            ("big.test", n, f"mx{n}.with-a-long-label-to-fill-the-packet.big.test")
            for n in range(BIG)
        ),
    ]
    hosts = [
        ("mx1.a.test", "192.0.2.1"),
        ("mx1.a.test", "2001:db8::1"),
        ("mx2.a.test", "192.0.2.2"),
        ("mx3.a.test", "192.0.2.3"),
        ("mx4.a.test", "192.0.2.4"),
        ("mx5.a.test", "2001:db8::5"),
        ("implicit.test", "192.0.2.50"),
        ("implicit.test", "2001:db8::50"),
        ("self.test", ME),
        *(
            (f"mx{n}.with-a-long-label-to-fill-the-packet.big.test", "192.0.2.8")
            for n in range(BIG)
        ),
        *(("biga.test", f"192.0.2.{n + 100}") for n in range(BIG)),
    ]
    return Zone(mx=mx, hosts=hosts, txt=[("empty.test", "no mail here")])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with DnsServer(_zone()) as address:
        yield address


@pytest.fixture
def resolver(server: str) -> Resolver:
    return Resolver([server], timeout=2, lifetime=4, rng=random.Random(7), local_ips=LOCAL)


async def _failure(coro: Awaitable[object]) -> DnsFailure:
    with pytest.raises(DnsFailure) as caught:
        await coro
    return caught.value


async def test_mx_lowest_preference_first_with_a_and_aaaa(resolver: Resolver) -> None:
    hosts = await resolver.mail_hosts("a.test")
    assert hosts[0] == MailHost("mx1.a.test", 10, ("192.0.2.1", "2001:db8::1"))
    assert sorted(h.name for h in hosts[1:4]) == ["mx2.a.test", "mx3.a.test", "mx4.a.test"]
    assert {h.preference for h in hosts[1:4]} == {20}
    assert hosts[4] == MailHost("mx5.a.test", 30, ("2001:db8::5",))  # AAAA only


async def test_equal_preferences_are_shuffled_by_the_rng(server: str) -> None:
    def middle(hosts: list[MailHost]) -> tuple[str, ...]:
        return tuple(h.name for h in hosts[1:4])

    orders = set()
    for seed in range(12):
        resolver = Resolver([server], rng=random.Random(seed), local_ips=LOCAL)
        first = await resolver.mail_hosts("a.test")
        again = await Resolver([server], rng=random.Random(seed), local_ips=LOCAL).mail_hosts(
            "a.test"
        )
        assert middle(first) == middle(again)  # same seed, same order
        assert (first[0].name, first[-1].name) == ("mx1.a.test", "mx5.a.test")
        orders.add(middle(first))
    assert len(orders) > 2


async def test_implicit_mx_uses_the_domains_addresses(resolver: Resolver) -> None:
    assert await resolver.mail_hosts("implicit.test") == [
        MailHost("implicit.test", 0, ("192.0.2.50", "2001:db8::50"))
    ]
    assert await resolver.mail_hosts("IMPLICIT.test.") == [
        MailHost("IMPLICIT.test.", 0, ("192.0.2.50", "2001:db8::50"))
    ]


async def test_null_mx_is_permanent(resolver: Resolver) -> None:
    failure = await _failure(resolver.mail_hosts("null.test"))
    assert not failure.temporary
    assert failure.report == "Domain null.test does not accept mail (null MX). (#5.1.10)"


async def test_nxdomain_is_permanent_with_the_host_name(resolver: Resolver) -> None:
    failure = await _failure(resolver.mail_hosts("nope.test"))
    assert not failure.temporary
    assert failure.report == "Sorry, I couldn't find any host named nope.test. (#5.1.2)"


async def test_no_mx_and_no_address_is_permanent_like_dns_ip(resolver: Resolver) -> None:
    failure = await _failure(resolver.mail_hosts("empty.test"))  # exists: TXT only
    assert (failure.temporary, failure.report) == (
        False,
        "Sorry, I couldn't find any host named empty.test. (#5.1.2)",
    )


async def test_mx_names_without_addresses(resolver: Resolver) -> None:
    failure = await _failure(resolver.mail_hosts("noaddr.test"))
    assert (failure.temporary, failure.report) == (False, NO_MX)
    assert NO_MX == "Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)"
    assert await resolver.mail_hosts("partial.test") == [
        MailHost("mx1.a.test", 20, ("192.0.2.1", "2001:db8::1"))
    ]


async def test_temporary_failures(resolver: Resolver) -> None:
    # Names outside the server's zone are REFUSED: a temporary failure.
    failure = await _failure(resolver.mail_hosts("elsewhere.example"))
    assert (failure.temporary, failure.report) == (True, TEMP_DNS)
    assert TEMP_DNS == "Sorry, I couldn't find any host by that name. (#4.1.2)"
    failure = await _failure(resolver.mail_hosts("soft.test"))  # its only MX name: soft
    assert (failure.temporary, failure.report) == (True, TEMP_DNS)
    # dns_mxip: a soft MX name does not matter when another MX has addresses
    assert [h.name for h in await resolver.mail_hosts("softpartial.test")] == ["mx1.a.test"]


async def test_oversize_mx_answer_is_fetched_over_tcp(server: str, resolver: Resolver) -> None:
    host, port = parse_nameserver(server)
    udp = dns.query.udp(dns.message.make_query("big.test", "MX"), host, port=port, timeout=2)
    assert udp.flags & dns.flags.TC  # the UDP answer did not fit: TCP is needed
    hosts = await resolver.mail_hosts("big.test")
    assert [h.preference for h in hosts] == list(range(BIG))
    assert all(h.addresses == ("192.0.2.8",) for h in hosts)


async def test_oversize_a_answer(resolver: Resolver) -> None:
    expected = {f"192.0.2.{n + 100}" for n in range(BIG)}
    [host] = await resolver.mail_hosts("biga.test")
    assert set(host.addresses) == expected and len(host.addresses) == BIG
    assert set(await resolver.host_addresses("biga.test")) == expected


@pytest.mark.parametrize(
    ("literal", "address"),
    [
        ("[192.0.2.7]", "192.0.2.7"),
        ("192.0.2.7", "192.0.2.7"),
        ("[IPv6:2001:DB8::7]", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
    ],
)
async def test_ip_literals_skip_dns(literal: str, address: str) -> None:
    resolver = Resolver(["127.0.0.1:1"], timeout=0.2, lifetime=0.2, local_ips=LOCAL)
    assert await resolver.mail_hosts(literal) == [MailHost(literal, 0, (address,))]
    assert await resolver.host_addresses(literal) == (address,)


async def test_an_mx_naming_an_ip_address_is_used_as_it_is(resolver: Resolver) -> None:
    # qmail's dns_ipplus scans the MX name as an IP first (RFC 5321 5.1 forbids it, but
    # qmail delivers, and so do we).
    assert await resolver.mail_hosts("iptarget.test") == [
        MailHost("192.0.2.77", 10, ("192.0.2.77",))
    ]


async def test_ipme_keeps_only_strictly_better_mxs(resolver: Resolver) -> None:
    hosts = await resolver.mail_hosts("me.test")  # 10 other, 20 me, 30 other
    assert [(h.name, h.preference) for h in hosts] == [("mx1.a.test", 10)]
    for domain in ("mebest.test", "meequal.test", f"[{ME}]"):
        failure = await _failure(resolver.mail_hosts(domain))
        assert (failure.temporary, failure.report) == (False, AMBIGUOUS_MX)
    assert AMBIGUOUS_MX == (
        "Sorry. Although I'm listed as a best-preference MX or A for that host,\n"
        "it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)"
    )


async def test_ipme_defaults_to_this_machine() -> None:
    ips = local_addresses()
    assert {"127.0.0.1", "0.0.0.0", "::1"} <= ips
    assert "127.0.0.2" not in ips  # not the whole of 127/8
    resolver = Resolver(["127.0.0.1:1"])
    assert (await _failure(resolver.mail_hosts("[127.0.0.1]"))).report == AMBIGUOUS_MX
    assert await resolver.mail_hosts("[127.0.0.2]") == [MailHost("[127.0.0.2]", 0, ("127.0.0.2",))]


async def test_relay_addresses_have_no_mx_lookup_and_no_ipme(resolver: Resolver) -> None:
    assert await resolver.host_addresses("mx1.a.test") == ("192.0.2.1", "2001:db8::1")
    assert await resolver.host_addresses("self.test") == (ME,)  # routed: ipme not applied
    failure = await _failure(resolver.host_addresses("a.test"))  # MX only, no A
    assert failure.report == "Sorry, I couldn't find any host named a.test. (#5.1.2)"
    failure = await _failure(resolver.host_addresses("gone.test"))
    assert (failure.temporary, failure.report) == (
        False,
        "Sorry, I couldn't find any host named gone.test. (#5.1.2)",
    )
    failure = await _failure(resolver.host_addresses("relay.elsewhere.example"))
    assert (failure.temporary, failure.report) == (True, TEMP_DNS)


@pytest.mark.parametrize("name", ["", ".", "a..b", "x" * 64 + ".test", "bad\udcff.test"])
async def test_names_dns_cannot_carry_are_permanent(resolver: Resolver, name: str) -> None:
    failure = await _failure(resolver.mail_hosts(name))
    assert not failure.temporary and failure.report.endswith("(#5.1.2)")


async def test_dead_nameserver_is_temporary_within_the_lifetime() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens: ICMP port unreachable, the server is dropped at once.
    started = time.monotonic()
    resolver = Resolver([f"127.0.0.1:{port}"], timeout=0.2, lifetime=0.3, local_ips=LOCAL)
    failure = await _failure(resolver.mail_hosts("a.test"))
    assert (failure.temporary, failure.report) == (True, TEMP_DNS)
    assert time.monotonic() - started < 2


async def test_silent_nameserver_times_out_temporarily() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        resolver = Resolver([address], timeout=0.2, lifetime=0.3, local_ips=LOCAL)
        failure = await _failure(resolver.host_addresses("mx1.a.test"))
        assert (failure.temporary, failure.report) == (True, TEMP_DNS)
        assert time.monotonic() - started < 2


async def test_one_cache_serves_every_lookup() -> None:
    zone = Zone(mx=[("c.test", 5, "mx.c.test")], hosts=[("mx.c.test", "192.0.2.5")], ttl=300)
    server = DnsServer(zone)
    resolver = Resolver([server.start()], timeout=0.3, lifetime=0.5, local_ips=LOCAL)
    try:
        expected = [MailHost("mx.c.test", 5, ("192.0.2.5",))]
        assert await resolver.mail_hosts("c.test") == expected
    finally:
        server.stop()
    assert await resolver.mail_hosts("c.test") == expected  # server gone: from the cache
    assert await resolver.host_addresses("mx.c.test") == ("192.0.2.5",)


def test_nameserver_forms() -> None:
    assert parse_nameserver("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_nameserver("192.0.2.1:5300") == ("192.0.2.1", 5300)
    assert parse_nameserver("::1") == ("::1", 53)
    assert parse_nameserver("[::1]:5300") == ("::1", 5300)
    assert parse_nameserver("[2001:db8::1]") == ("2001:db8::1", 53)
    for bad in ("192.0.2.1:0", "[::1", "[::1]x", "host.example", "192.0.2.1:x"):
        with pytest.raises(ValueError):
            parse_nameserver(bad)
    with pytest.raises(ConfigError) as caught:
        Resolver(["192.0.2.1", "nonsense", "[::1]:99999"])
    assert len(caught.value.problems) == 2
