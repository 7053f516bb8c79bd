"""The srs RCPT check (policy/checks/srs.py) and chkuser's word for SRS local parts."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from tests.policy.test_chkuser import FakeControls, FakeLookups

from qtoaster.core.errors import TemporaryFailure
from qtoaster.mailauth.srs import Srs
from qtoaster.policy.checks.chkuser import NO_MAILBOX, Chkuser, ChkuserSettings
from qtoaster.policy.checks.srs import INVALID, UNAVAILABLE, SrsCheck
from qtoaster.policy.verdict import PASS, Facts, SessionState, Stage, Verdict

SRS = Srs((b"key",))


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


async def _reverse(address: str) -> str:
    return SRS.reverse(address)


async def _away(address: str) -> str:
    raise TemporaryFailure("auth role unavailable")


def _facts(rcpt: str) -> Facts:
    return Facts(remote_ip="192.0.2.9", local_ip="127.0.0.1", env={}, recipient=rcpt)


async def _ask(check: SrsCheck | Chkuser, rcpt: str) -> Verdict:
    answer = check.check(Stage.RCPT, _facts(rcpt), SessionState())
    return await answer if inspect.isawaitable(answer) else answer


def _check(executor: ThreadPoolExecutor, reverse=_reverse) -> SrsCheck:  # type: ignore[no-untyped-def]
    return SrsCheck(reverse, lambda domain: domain == "example.com", executor)


async def test_valid_address_passes_unchanged(executor: ThreadPoolExecutor) -> None:
    address = SRS.forward("bob@sender.test", "example.com")
    assert await _ask(_check(executor), address) == PASS


async def test_forged_and_malformed_are_550(executor: ThreadPoolExecutor) -> None:
    forged = Srs((b"other",)).forward("bob@sender.test", "example.com")
    verdict = await _ask(_check(executor), forged)
    assert verdict.reply == INVALID and verdict.why == "bad SRS hash"
    assert INVALID.code == 550 and "invalid SRS address (#5.1.1)" in INVALID.text
    verdict = await _ask(_check(executor), "SRS0=junk@example.com")
    assert verdict.reply == INVALID and verdict.why == "malformed SRS address"


async def test_expired_is_550(executor: ThreadPoolExecutor) -> None:
    old = SRS.forward("bob@sender.test", "example.com", now=1000.0)
    verdict = await _ask(_check(executor), old)
    assert verdict.reply == INVALID and verdict.why == "expired SRS timestamp"


async def test_unavailable_is_451(executor: ThreadPoolExecutor) -> None:
    address = SRS.forward("bob@sender.test", "example.com")
    verdict = await _ask(_check(executor, _away), address)
    assert verdict.reply == UNAVAILABLE and UNAVAILABLE.code == 451


async def test_other_addresses_and_domains_are_not_checked(executor: ThreadPoolExecutor) -> None:
    check = _check(executor, _away)  # would say 451 if asked
    assert await _ask(check, "alice@example.com") == PASS
    assert await _ask(check, "SRS0=x=AA=a=b@backup.test") == PASS  # not delivered here


async def test_chkuser_accepts_srs_local_parts_only_when_told(
    executor: ThreadPoolExecutor,
) -> None:
    address = "SRS0=abcd=AA=sender.test=bob@mx.test"

    def make(srs: bool) -> Chkuser:
        settings = ChkuserSettings(mode="always", delay=0, increase=0)
        return Chkuser(FakeControls(), FakeLookups(), executor, settings, lambda f: 0, srs=srs)

    assert (await _ask(make(True), address)).reply is None
    assert (await _ask(make(False), address)).reply == NO_MAILBOX
