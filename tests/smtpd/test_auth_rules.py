"""smtpd/auth.py: what a session offers and how AUTH starts (spec 6.1, 6.2; RFC 4954)."""

from __future__ import annotations

import pytest

from qtoaster.core.reply import Reply
from qtoaster.protocols import sasl
from qtoaster.protocols.sasl import Mechanism, SaslServer
from qtoaster.smtpd import auth


def test_clear_text_offers_only_cram_and_starttls() -> None:
    offered = auth.offer(tls_active=False, tls_available=True, allow_plaintext=False, cram=True)
    assert offered.starttls and offered.mechanisms == (Mechanism.CRAM_MD5,)
    assert auth.ehlo_lines("mx.test", offered, 0) == [
        "mx.test",
        "STARTTLS",
        "AUTH CRAM-MD5",
        "AUTH=CRAM-MD5",
        "PIPELINING",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SIZE 0",
        "SMTPUTF8",
        "CHUNKING",
        "BINARYMIME",
        "DSN",
    ]


def test_tls_offers_the_seed_order_and_no_starttls() -> None:
    offered = auth.offer(tls_active=True, tls_available=True, allow_plaintext=False, cram=True)
    lines = auth.ehlo_lines("mx.test", offered, 1000)
    assert lines[1:3] == ["AUTH LOGIN CRAM-MD5 PLAIN", "AUTH=LOGIN CRAM-MD5 PLAIN"]
    assert "STARTTLS" not in lines
    assert lines[-1] == "REQUIRETLS"  # RFC 8689 3: only once TLS is on


def test_nothing_to_offer_means_no_auth_line() -> None:
    offered = auth.offer(tls_active=False, tls_available=False, allow_plaintext=False, cram=False)
    assert auth.ehlo_lines("mx.test", offered, 0)[1] == "PIPELINING"


def test_allow_plaintext() -> None:
    offered = auth.offer(tls_active=False, tls_available=False, allow_plaintext=True, cram=False)
    assert offered.mechanisms == (Mechanism.LOGIN, Mechanism.PLAIN)


@pytest.mark.parametrize(
    ("name", "authenticated", "in_transaction", "expected"),
    [
        ("PLAIN", True, False, sasl.ALREADY_AUTHENTICATED),
        ("PLAIN", False, True, sasl.AUTH_IN_TRANSACTION),
        ("FOO", False, False, sasl.AUTH_UNIMPLEMENTED),
        ("", False, False, sasl.AUTH_UNIMPLEMENTED),
        ("plain", False, False, auth.ENCRYPTION_REQUIRED),
        ("LOGIN", False, False, auth.ENCRYPTION_REQUIRED),
    ],
)
def test_begin_refusals_in_qmail_order(
    name: str, authenticated: bool, in_transaction: bool, expected: Reply
) -> None:
    offered = auth.offer(tls_active=False, tls_available=True, allow_plaintext=False, cram=False)
    result = auth.begin(
        name, offered, authenticated=authenticated, in_transaction=in_transaction, hostname="h"
    )
    assert result == expected


def test_begin_cram_challenge_names_the_host() -> None:
    offered = auth.offer(tls_active=False, tls_available=False, allow_plaintext=False, cram=True)
    server = auth.begin(
        "cram-md5", offered, authenticated=False, in_transaction=False, hostname="mx.test"
    )
    assert isinstance(server, SaslServer)
    step = server.start(None)
    assert isinstance(step, sasl.Challenge)
    import base64

    challenge = base64.b64decode(step.text)
    assert challenge.startswith(b"<") and challenge.endswith(b"@mx.test>")


@pytest.mark.parametrize(
    ("sender", "allowed"),
    [
        ("alice@example.com", True),
        ("ALICE@Example.COM", True),
        ("alice-lists@example.com", True),
        ("", True),
        ("alicex@example.com", False),
        ("bob@example.com", False),
        ("alice@other.example", False),
    ],
)
def test_submission_sender_restriction(sender: str, allowed: bool) -> None:
    assert auth.sender_allowed(sender, "alice@example.com") is allowed
