"""The weighted DNSBL score (policy/dnsbl.py) and its check (policy/checks/dnsbl.py), with
a fake resolver (the zones as a dict) and a fake clock for the cache; the real DNS path is
tests/integration/test_pregreet_dnsbl.py's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, cast

import dns.asyncresolver
import dns.name
import dns.resolver
import pytest
from dns.rdtypes.IN.A import A

from qtoaster.config.screensettings import DnsblSettings, parse_site
from qtoaster.core.clock import FakeClock
from qtoaster.policy.checks.dnsbl import DnsblCheck
from qtoaster.policy.checks.greylist import Greylist
from qtoaster.policy.checks.pregreet import Pregreet
from qtoaster.policy.dnsbl import Dnsbl
from qtoaster.policy.verdict import Facts, SessionState, Stage, Verdict


class FakeResolver:
    """Answers A queries from ``records`` (name -> addresses); ``hang`` never answers."""

    def __init__(self, records: dict[str, list[str]], hang: set[str] | None = None) -> None:
        self.records = records
        self.hang = hang or set()
        self.asked: list[str] = []

    async def resolve(self, name: dns.name.Name, rdtype: str, search: bool = False) -> list[A]:
        text = name.to_text(omit_final_dot=True)
        self.asked.append(text)
        if any(text.endswith(zone) for zone in self.hang):
            await asyncio.Event().wait()
        if text not in self.records:
            raise dns.resolver.NXDOMAIN
        return [A(1, 1, address) for address in self.records[text]]


SITES = ("black.test*3", "grey.test=127.0.0.[2..3]*1", "white.test*-5")


def scorer(records: dict[str, list[str]], **kw: Any) -> tuple[Dnsbl, FakeResolver, FakeClock]:
    settings = DnsblSettings(
        sites=tuple(parse_site(s) for s in SITES),
        threshold=kw.pop("threshold", 1),
        allow_threshold=kw.pop("allow_threshold", -1),
        timeout=kw.pop("timeout", 1.0),
    )
    resolver, clock = FakeResolver(records, **kw), FakeClock()
    fake = cast(dns.asyncresolver.Resolver, resolver)
    return Dnsbl(settings, clock=clock, resolver=fake), resolver, clock


async def test_weights_add_up_and_filters_decide() -> None:
    dnsbl, _, _ = scorer(
        {
            "2.0.0.192.black.test": ["127.0.0.2"],
            "2.0.0.192.grey.test": ["127.0.0.2"],
            "3.0.0.192.grey.test": ["127.0.0.9"],  # outside the filter: not listed
            "4.0.0.192.white.test": ["127.0.10.2"],
            "5.0.0.192.black.test": ["127.255.255.254"],  # an operational error
        }
    )
    score = await dnsbl.score("192.0.0.2")
    assert score.total == 4 and score.blocked_by() == "black.test, grey.test"
    assert (await dnsbl.score("192.0.0.3")).total == 0
    assert (await dnsbl.score("192.0.0.4")).total == -5
    assert (await dnsbl.score("192.0.0.5")).total == 0


async def test_scores_are_cached_for_cache_seconds() -> None:
    dnsbl, resolver, clock = scorer({"2.0.0.192.black.test": ["127.0.0.2"]})
    await dnsbl.score("192.0.0.2")
    assert len(resolver.asked) == 3 and dnsbl.cached("192.0.0.2") is not None
    await dnsbl.score("192.0.0.2")
    assert len(resolver.asked) == 3  # from the cache
    clock.advance(60)
    assert dnsbl.cached("192.0.0.2") is None
    await dnsbl.score("192.0.0.2")
    assert len(resolver.asked) == 6


async def test_a_site_that_does_not_answer_counts_zero() -> None:
    dnsbl, _, _ = scorer({"2.0.0.192.grey.test": ["127.0.0.3"]}, hang={"black.test"}, timeout=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await dnsbl.score("192.0.0.2")).total == 1
    assert loop.time() - started < 1.0


async def test_ipv6_clients_by_nibbles() -> None:
    nibbles = "1.0.0.0." + "0." * 20 + "8.b.d.0.1.0.0.2"  # RFC 5782 2.4
    dnsbl, _, _ = scorer({f"{nibbles}.black.test": ["127.0.0.2"]})
    assert (await dnsbl.score("2001:db8::1")).total == 3
    assert (await dnsbl.score("::ffff:192.0.0.7")).total == 0  # asked as 192.0.0.7


async def _verdict(answer: Verdict | Awaitable[Verdict]) -> Verdict:
    return await answer if isinstance(answer, Awaitable) else answer


async def test_the_check_refuses_at_rcpt_and_allows_past_the_screens() -> None:
    dnsbl, _, _ = scorer(
        {"2.0.0.192.black.test": ["127.0.0.2"], "4.0.0.192.white.test": ["127.0.0.2"]},
        threshold=2,
    )
    check = DnsblCheck(dnsbl)
    listed, state = Facts("192.0.0.2", "127.0.0.1", {}), SessionState()
    assert (await _verdict(check.check(Stage.CONNECT, listed, state))).reply is None
    refusal = check.check(Stage.RCPT, listed, state)
    assert isinstance(refusal, Verdict) and refusal.reply is not None
    assert refusal.reply.render(True) == (
        b"550 5.7.1 Service unavailable; client [192.0.0.2] blocked using black.test (#5.7.1)\r\n"
    )
    assert refusal.why == "score=3"
    white, state = Facts("192.0.0.4", "127.0.0.1", {}), SessionState()
    await _verdict(check.check(Stage.CONNECT, white, state))
    assert state.dnsbl.allowed and state.dnsbl.blocked is None
    state.early.pregreet = True
    assert Pregreet().check(Stage.RCPT, white, state).reply is None  # the screens skip it
    assert Greylist.check(cast(Greylist, None), Stage.RCPT, white, state).reply is None


@pytest.mark.parametrize(
    ("env", "listener"),
    [
        ({"DNSBL": "0"}, "smtp"),
        ({"DNSBL": ""}, "smtp"),
        ({"RELAYCLIENT": ""}, "smtp"),
        ({}, "submission"),
    ],
)
async def test_who_is_not_scored(env: dict[str, str], listener: str) -> None:
    dnsbl, resolver, _ = scorer({"2.0.0.192.black.test": ["127.0.0.2"]})
    state = SessionState()
    facts = Facts("192.0.0.2", "127.0.0.1", env, listener=listener)
    assert DnsblCheck(dnsbl).check(Stage.CONNECT, facts, state).reply is None  # type: ignore[union-attr]
    assert resolver.asked == [] and state.dnsbl.blocked is None
