"""Greylisting and rate limits with a real ``qtoaster run`` and smtplib (issue 18): first
try 451, the retry after the (1 s) delay accepted, the next message of the triplet at
once; limits hit and recovered; each check's tcp.smtp switch; two smtpd workers sharing
the state.  Waits poll with deadlines, never sleep.
"""

from __future__ import annotations

import re
import smtplib
import socket
import time
from pathlib import Path

import pytest

from .harness import Server, make_home, wait_for_mail

pytestmark = pytest.mark.integration

MESSAGE = b"Subject: grey\r\n\r\nbody\r\n"
# 127.0.0.2 is switched off for both checks; everyone else gets the settings.
TCP_SMTP = '127.0.0.2:allow,GREYLIST="0",RATELIMIT="0"\n:allow\n'


def configure(home: Path, extra: str = "") -> None:
    (home / "tcp.smtp").write_text(TCP_SMTP)
    settings = home / "qtoaster.toml"
    settings.write_text(
        settings.read_text()
        + "\n[greylist]\nenabled = true\ndelay = 1\n"
        + "\n[ratelimit]\nenabled = true\n"
        + extra
    )


def try_send(port: int, source: str, sender: str, rcpt: str, body: bytes = MESSAGE) -> int:
    """The reply code to RCPT (250 when the message was also accepted at DATA)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20, source_address=(source, 0)) as client:
        client.ehlo("client.example")
        client.mail(sender)
        code, _ = client.rcpt(rcpt)
        if code != 250:
            return code
        code, _ = client.data(body)
        return code if code != 250 else 250


def test_greylisting_first_try_retry_and_next_message(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    configure(home)
    srv = Server(home, workers=2)
    try:
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=20) as client:
            client.ehlo("client.example")
            client.mail("sender@remote.test")
            code, text = client.rcpt("alice@example.test")
        assert (code, text) == (451, b"4.7.1 greylisted, please try again in 1 seconds (#4.7.1)")
        deadline = started + 20
        while try_send(srv.port, "127.0.0.1", "sender@remote.test", "alice@example.test") != 250:
            assert time.monotonic() < deadline, "the retry was never accepted"
            time.sleep(0.1)  # polling for the retry window, bounded by the deadline
        assert time.monotonic() - started >= 1.0  # not before the delay
        wait_for_mail(home, "alice", b"Subject: grey")
        # The next message of the same triplet: at once.
        assert try_send(srv.port, "127.0.0.1", "sender@remote.test", "alice@example.test") == 250
        # Another sender from the same /24: greylisted (auto-whitelist needs 5 retries).
        assert try_send(srv.port, "127.0.0.3", "other@remote.test", "alice@example.test") == 451
        # GREYLIST="0" for 127.0.0.2: not greylisted.
        assert try_send(srv.port, "127.0.0.2", "third@remote.test", "bob@example.test") == 250
        log = (home / "server.log").read_text(errors="replace")
        assert "reason=greylist" in log and 'why="greylisted net=127.0.0.0/24"' in log
        assert (home / "policy" / "state.sqlite3").is_file()
    finally:
        srv.stop()


def _mails_until_refused(port: int, source: str, limit: int) -> list[int]:
    with smtplib.SMTP("127.0.0.1", port, timeout=20, source_address=(source, 0)) as client:
        client.ehlo("client.example")
        codes = []
        for _ in range(limit + 1):
            codes.append(client.mail("s@remote.test")[0])
            client.rset()
        return codes


def test_messages_per_minute_hit_and_recovered(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    configure(home, "messages_per_minute = 60\n")
    srv = Server(home, workers=2)
    try:
        codes = _mails_until_refused(srv.port, "127.0.0.1", 60)
        assert codes[:60] == [250] * 60 and codes[60] == 451
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=20) as client:
            client.ehlo("client.example")
            code, text = client.mail("s@remote.test")
            assert (code, text) == (
                451,
                b"4.7.1 too many messages from your address, try later (#4.7.1)",
            )
            deadline = time.monotonic() + 10  # one message comes back every second
            while client.mail("s@remote.test")[0] != 250:
                assert time.monotonic() < deadline, "the limit never recovered"
                client.rset()
                time.sleep(0.1)
        # RATELIMIT="0" for 127.0.0.2: no limit.
        assert _mails_until_refused(srv.port, "127.0.0.2", 70) == [250] * 71
        log = (home / "server.log").read_text(errors="replace")
        assert "reason=ratelimit" in log and 'why="messages_per_minute=60"' in log
    finally:
        srv.stop()


def test_recipients_per_message_452(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    configure(home, "recipients_per_message = 2\n")
    (home / "tcp.smtp").write_text('127.0.0.1:allow,GREYLIST="0"\n:allow\n')
    srv = Server(home, workers=1)
    try:
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=20) as client:
            client.ehlo("client.example")
            client.mail("s@remote.test")
            codes = [client.rcpt(f"{u}@example.test") for u in ("alice", "bob", "carol")]
        assert [c for c, _ in codes] == [250, 250, 452]
        assert codes[2][1] == b"4.5.3 too many recipients in this message (#4.5.3)"
    finally:
        srv.stop()


def _greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return sock.makefile("rb").readline()


def test_two_workers_share_the_connection_limit(tmp_path: Path) -> None:
    """20 connections over two workers (SO_REUSEPORT spreads them): exactly the limit is
    greeted, the rest refused with 421, so the workers count in one place."""
    home = make_home(tmp_path)
    configure(home, "connections_per_minute = 5\n")
    srv = Server(home, workers=2)
    try:
        lines = [_greeting(srv.port) for _ in range(20)]
        assert sum(line.startswith(b"220 ") for line in lines) == 5
        refusal = b"421 mx.example.test too many connections from your address per minute"
        assert lines[5:] == [refusal + b" (#4.7.0)\r\n"] * 15
        pids = {
            found.group(1)
            for line in (home / "server.log").read_text(errors="replace").splitlines()
            if " refused " in line and "reason=ratelimit" in line
            for found in [re.search(r" smtpd#\d+\[(\d+)\] ", line)]
            if found
        }
        assert len(pids) == 2, pids  # both workers refused some: they share the count
    finally:
        srv.stop()


def test_two_workers_with_batches_stay_within_the_limit(tmp_path: Path) -> None:
    """A limit of 40 (so batches of 4, policy/reservations.py) over two workers: never more
    than 40 greeted, and at most k - 1 = 3 refused early (what the other worker holds)."""
    home = make_home(tmp_path)
    configure(home, "connections_per_minute = 40\n")
    srv = Server(home, workers=2)
    try:
        lines = [_greeting(srv.port) for _ in range(60)]
        greeted = sum(line.startswith(b"220 ") for line in lines)
        assert 40 - 3 <= greeted <= 40
        assert all(line.startswith((b"220 ", b"421 ")) for line in lines)
    finally:
        srv.stop()
