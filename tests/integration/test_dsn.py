"""DSN (RFC 3461) against a real ``qtoaster run``, from Python's smtplib (swaks 20201014 has
no option for DSN parameters: its --to splits on commas and ends the address with ``>``)."""

from __future__ import annotations

import smtplib

import pytest

from .harness import Server, wait_for_mail

pytestmark = pytest.mark.integration


def test_notify_success_gives_a_success_notice(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.has_extn("dsn")
        refused = client.sendmail(
            "bob@example.test",
            ["alice@example.test"],
            b"Subject: dsn-success-probe\r\n\r\nhi\r\n",
            mail_options=["RET=HDRS", "ENVID=probe+2B1"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;alice+40example.test"],
        )
        assert refused == {}
        code, _ = client.docmd("RCPT TO:<alice@example.test> NOTIFY=NEVER,SUCCESS")
        assert code == 503 or code == 501  # no transaction open, or the grammar: never 250
    wait_for_mail(server.home, "alice", b"Subject: dsn-success-probe")
    notice = wait_for_mail(server.home, "bob", b"Successful Mail Delivery Report")
    assert b"Action: delivered" in notice
    assert b"Original-Envelope-Id: probe+1" in notice
    assert b"Original-Recipient: rfc822; alice@example.test" in notice
    assert b"Subject: dsn-success-probe" in notice  # the header comes back
