"""DMARC (RFC 7489): record discovery, alignment, sp=, pct=, DNS failures."""

from __future__ import annotations

import pytest

from qtoaster.mailauth.dkimverify import DkimResult
from qtoaster.mailauth.dmarc import evaluate, organizational_domain, parse_record
from qtoaster.mailauth.spf import SpfResult

from .conftest import DOWN, txtfunc

REJECT = {"_dmarc.example.org": [b"v=DMARC1; p=reject; sp=quarantine"]}


def spf(result: str, address: str = "bounce@example.org") -> SpfResult:
    return SpfResult(result, address)


def dkim(result: str, domain: str = "example.org") -> DkimResult:
    return DkimResult(result, domain, "sel")


def test_organizational_domain_from_the_public_suffix_list() -> None:
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("mail.example.org") == "example.org"


def test_record_parsing() -> None:
    record = parse_record("v=DMARC1; p=quarantine; pct=20; adkim=s; aspf=s; sp=none")
    assert record is not None
    assert (record.p, record.sp, record.pct, record.adkim, record.aspf) == (
        "quarantine",
        "none",
        20,
        "s",
        "s",
    )
    assert parse_record("v=DMARC1; rua=mailto:x@example.org") is None  # no p=
    assert parse_record("v=spf1 -all") is None


@pytest.mark.parametrize(
    ("spf_result", "dkim_results", "expected"),
    [
        (spf("pass"), [], "pass"),  # SPF aligned
        (spf("fail"), [dkim("pass")], "pass"),  # DKIM aligned
        (spf("pass", "x@other.example"), [dkim("pass", "other.example")], "fail"),  # unaligned
        (spf("pass", "x@bounce.example.org"), [], "pass"),  # relaxed: same org domain
        (spf("softfail"), [dkim("fail")], "fail"),
    ],
)
def test_aligned_and_unaligned_from(
    spf_result: SpfResult, dkim_results: list[DkimResult], expected: str
) -> None:
    result = evaluate("example.org", spf_result, dkim_results, txtfunc(dict(REJECT)))
    assert result.result == expected
    assert result.policy == "reject"
    assert result.disposition == ("reject" if expected == "fail" else "none")


def test_strict_alignment_wants_the_same_domain() -> None:
    table = {"_dmarc.example.org": [b"v=DMARC1; p=reject; adkim=s; aspf=s"]}
    relaxed_would_pass = [dkim("pass", "mail.example.org")]
    result = evaluate(
        "example.org", spf("pass", "x@bounce.example.org"), relaxed_would_pass, txtfunc(table)
    )
    assert result.result == "fail"


def test_no_record_is_none() -> None:
    assert evaluate("example.org", spf("fail"), [], txtfunc({})).result == "none"


def test_a_subdomain_gets_sp_from_the_organisational_record() -> None:
    result = evaluate("news.example.org", spf("fail"), [], txtfunc(dict(REJECT)))
    assert (result.result, result.policy, result.disposition) == (
        "fail",
        "quarantine",
        "quarantine",
    )


def test_a_subdomain_record_of_its_own_wins() -> None:
    table = {**REJECT, "_dmarc.news.example.org": [b"v=DMARC1; p=none"]}
    result = evaluate("news.example.org", spf("fail"), [], txtfunc(table))
    assert (result.result, result.policy) == ("fail", "none")


def test_pct_0_applies_reject_as_quarantine_and_pct_100_as_reject() -> None:
    zero = {"_dmarc.example.org": [b"v=DMARC1; p=reject; pct=0"]}
    full = {"_dmarc.example.org": [b"v=DMARC1; p=reject; pct=100"]}
    for chance in (0.0, 0.5, 0.999):
        assert (
            evaluate("example.org", spf("fail"), [], txtfunc(zero), lambda c=chance: c).disposition
            == "quarantine"
        )
        assert (
            evaluate("example.org", spf("fail"), [], txtfunc(full), lambda c=chance: c).disposition
            == "reject"
        )
    quarantine_zero = {"_dmarc.example.org": [b"v=DMARC1; p=quarantine; pct=0"]}
    assert evaluate("example.org", spf("fail"), [], txtfunc(quarantine_zero)).disposition == "none"


def test_dns_failure_of_the_record_is_temperror() -> None:
    result = evaluate("example.org", spf("pass"), [], txtfunc({"_dmarc.example.org": DOWN}))
    assert (result.result, result.policy) == ("temperror", "unknown")


def test_an_aligned_identifier_that_could_not_be_checked_is_temperror() -> None:
    result = evaluate("example.org", spf("temperror"), [], txtfunc(dict(REJECT)))
    assert result.result == "temperror"
    # ... but one that could never align does not matter
    result = evaluate(
        "example.org", spf("fail"), [dkim("temperror", "other.example")], txtfunc(dict(REJECT))
    )
    assert result.result == "fail"


def test_two_records_are_no_policy() -> None:
    table = {"_dmarc.example.org": [b"v=DMARC1; p=reject", b"v=DMARC1; p=none"]}
    assert evaluate("example.org", spf("fail"), [], txtfunc(table)).result == "none"
