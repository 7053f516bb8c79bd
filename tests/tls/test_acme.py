"""The renewal decision of ``cert acme`` (tls/acme.py): pure, with certificates made here."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from acme import messages
from cryptography import x509

from qtoaster.tls import acme, certs

START = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
URL = "https://ca.example/dir"


def cert(days: int = 90) -> x509.Certificate:
    # self_signed starts an hour early and lasts days + 1 hour: lifetime = days + 2 hours
    pem = certs.self_signed("mx.example.test", days=days, not_before=START)
    return x509.load_pem_x509_certificates(pem)[0]


def record(c: x509.Certificate, names: tuple[str, ...] = ("mx.example.test",)) -> acme.Record:
    return acme.Record(URL, names, acme.fingerprint(c))


def test_renewal_time_is_a_third_of_the_lifetime_before_expiry() -> None:
    c = cert(90)
    lifetime = c.not_valid_after_utc - c.not_valid_before_utc
    assert acme.renewal_time(c) == c.not_valid_after_utc - lifetime / 3


def test_more_than_a_third_left_keeps_the_certificate() -> None:
    c = cert(90)
    just_before = acme.renewal_time(c) - dt.timedelta(seconds=1)
    decision = acme.decide(c, record(c), URL, ["mx.example.test"], just_before)
    assert not decision.renew
    assert decision.reason.startswith("valid until ")


def test_a_third_left_renews() -> None:
    c = cert(90)
    for now in (acme.renewal_time(c), c.not_valid_after_utc + dt.timedelta(days=1)):
        decision = acme.decide(c, record(c), URL, ["mx.example.test"], now)
        assert decision.renew and "a third or less left" in decision.reason


def test_names_compared_as_a_set_ignoring_case() -> None:
    c = cert()
    r = record(c, ("mx.example.test", "smtp.example.test"))
    names = ["SMTP.example.test", "mx.example.test"]
    assert not acme.decide(c, r, URL, names, START).renew
    decision = acme.decide(c, r, URL, ["mx.example.test"], START)
    assert decision.renew and "is for mx.example.test, smtp.example.test" in decision.reason


def test_not_ours_other_ca_or_none_renews() -> None:
    c, other = cert(), cert()
    assert acme.decide(None, None, URL, ["mx.example.test"], START).reason == (
        "no certificate is installed"
    )
    for r in (None, record(other)):
        decision = acme.decide(c, r, URL, ["mx.example.test"], START)
        assert decision.renew and "not obtained by cert acme" in decision.reason
    decision = acme.decide(c, record(c), "https://other.example/dir", ["mx.example.test"], START)
    assert decision.renew and f"is from {URL}" in decision.reason


def test_record_round_trip_and_broken_record(tmp_path: Path) -> None:
    path = tmp_path / "certificate.json"
    r = acme.Record(URL, ("a.example", "b.example"), "00ff")
    acme.save_record(path, r)
    assert acme.load_record(path) == r
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("{not json")
    assert acme.load_record(path) is None
    assert acme.load_record(tmp_path / "missing") is None


def test_account_key_made_once_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "acme" / "account.key"
    first = acme.account_key(path)
    assert acme.account_key(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_installed_leaf_reads_no_key(tmp_path: Path) -> None:
    path = tmp_path / "servercert.pem"
    assert acme.installed_leaf(path) is None
    path.write_bytes(certs.self_signed("mx.example.test"))
    leaf = acme.installed_leaf(path)
    assert leaf is not None and certs.dns_names(leaf) == ["mx.example.test"]


def test_rate_limit_and_other_refusals_are_readable() -> None:
    limited = messages.Error.with_code("rateLimited", detail="too many certificates")
    assert acme._refusal(limited) == (
        "the CA refused: rate limit reached: too many certificates (try again later)"
    )
    refused = messages.Error.with_code("rejectedIdentifier", detail="no such name")
    assert acme._refusal(refused) == "the CA refused: rejectedIdentifier: no such name"
