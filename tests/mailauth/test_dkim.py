"""DKIM verification of every signature: OpenDKIM's and dkimpy's, RSA and Ed25519."""

from __future__ import annotations

from pathlib import Path

import dkim

from qtoaster.mailauth.dkimverify import verify_dkim

from .conftest import DOWN, dnsfunc, opendkim_sign

MESSAGE = (
    b"From: Alice <alice@example.org>\n"
    b"To: bob@example.net\n"
    b"Subject: hello\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\n"
    b"Message-ID: <1@example.org>\n"
    b"\n"
    b"Hello Bob.\n"
)


def test_unsigned_mail_has_no_results() -> None:
    assert verify_dkim(MESSAGE, dnsfunc({})) == []


def test_a_message_signed_by_opendkim_verifies(rsa_key: tuple[Path, bytes, bytes]) -> None:
    path, _pem, record = rsa_key
    signed = opendkim_sign(MESSAGE, path, "example.org", "odk")
    results = verify_dkim(signed, dnsfunc({"odk._domainkey.example.org": record}))
    assert [(r.result, r.domain, r.selector) for r in results] == [("pass", "example.org", "odk")]
    assert results[0].b


def test_opendkim_signature_fails_on_a_changed_body(rsa_key: tuple[Path, bytes, bytes]) -> None:
    path, _pem, record = rsa_key
    signed = opendkim_sign(MESSAGE, path, "example.org", "odk").replace(b"Hello", b"Jello")
    results = verify_dkim(signed, dnsfunc({"odk._domainkey.example.org": record}))
    assert [r.result for r in results] == ["fail"]


def test_dkimpy_rsa_and_ed25519_signatures_both_verify(
    rsa_key: tuple[Path, bytes, bytes], ed_key: tuple[bytes, bytes]
) -> None:
    _path, pem, rsa_record = rsa_key
    ed_private, ed_record = ed_key
    signed = MESSAGE
    signed = dkim.sign(signed, b"rsa", b"example.org", pem) + signed
    signed = (
        dkim.sign(signed, b"ed", b"example.org", ed_private, signature_algorithm=b"ed25519-sha256")
        + signed
    )
    table = {"rsa._domainkey.example.org": rsa_record, "ed._domainkey.example.org": ed_record}
    results = verify_dkim(signed, dnsfunc(table))
    assert [(r.result, r.selector) for r in results] == [("pass", "ed"), ("pass", "rsa")]


def test_several_signatures_one_bad(rsa_key: tuple[Path, bytes, bytes]) -> None:
    _path, pem, record = rsa_key
    good = dkim.sign(MESSAGE, b"rsa", b"example.org", pem)
    # signed over another Subject: a valid signature that does not match this message
    broken = dkim.sign(MESSAGE.replace(b"hello", b"other"), b"rsa", b"list.example", pem)
    bad = dkim.sign(MESSAGE, b"gone", b"example.org", pem)  # no key published
    signed = good + broken + bad + MESSAGE
    table = {"rsa._domainkey.example.org": record, "rsa._domainkey.list.example": record}
    results = verify_dkim(signed, dnsfunc(table))
    assert [(r.result, r.domain, r.selector) for r in results] == [
        ("pass", "example.org", "rsa"),
        ("fail", "list.example", "rsa"),  # signed a different Subject
        ("fail", "example.org", "gone"),
    ]


def test_a_dns_failure_is_a_temperror(rsa_key: tuple[Path, bytes, bytes]) -> None:
    _path, pem, _record = rsa_key
    signed = dkim.sign(MESSAGE, b"rsa", b"example.org", pem) + MESSAGE
    results = verify_dkim(signed, dnsfunc({"rsa._domainkey.example.org": DOWN}))
    assert [r.result for r in results] == ["temperror"]


def test_a_garbled_signature_is_a_permerror() -> None:
    signed = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=x\n" + MESSAGE
    results = verify_dkim(signed, dnsfunc({}))
    assert [(r.result, r.domain, r.selector) for r in results] == [
        ("permerror", "example.org", "x")
    ]
