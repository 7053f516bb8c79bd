"""The toaster's anti-spam and anti-virus checks end to end (issue 7), against a started
server: qregex, mfcheck, tarpit, signatures, QMAILQUEUE, clamd, spamd and rblsmtpd, each
with its control file and with the per-connection variable from tcp.smtp.

Real components: dnsmasq serves the sender domains and the blocklist, clamd runs with a
signature database the tests write (EICAR), spamd with Debian's shipped rules (GTUBE).
Clients are smtplib and swaks; per-client variables are chosen by connecting from
different loopback source addresses (127.0.0.x), each with its own tcp.smtp rule.
"""

from __future__ import annotations

import base64
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from tests.clamdserver import EICAR, ClamdServer
from tests.dnsserver import DnsServer, Zone
from tests.spamdserver import GTUBE, SpamdServer

from .harness import DEAD_DNS, Server, maildir_files, make_home, wait_for_mail, wait_until

PE_HEADER = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" * 8  # "TVqQAAMAA..."
LISTED = "127.0.0.2"  # in the blocklist, no RBLSMTPD: blocked with the TXT text
ENV_BLOCKED = "127.0.0.3"  # RBLSMTPD="-go away": blocked, 553
EXEMPT = "127.0.0.4"  # listed too, but RBLSMTPD="": never blocked
QQ_CLIENT = "127.0.0.5"  # QMAILQUEUE set to a simscan-style wrapper
NOBADHELO = "127.0.0.6"
TARPIT = "127.0.0.7"  # TARPITCOUNT=2, TARPITDELAY=1
EXECOK = "127.0.0.8"  # EXECUTABLEOK
NOSCAN = "127.0.0.9"  # CLAMD="0", SPAMD="0"
QQ_REJECT = "127.0.0.10"  # QMAILQUEUE exits 31


def zone() -> Zone:
    return Zone(
        domains=("test",),
        mx=[("example.test", 10, "mx.example.test"), ("exists.test", 10, "mx.exists.test")],
        hosts=[
            ("mx.example.test", "127.0.0.1"),
            ("mx.exists.test", "127.0.0.1"),
            ("aonly.test", "127.0.0.1"),
        ],
        txt=[
            ("2.0.0.127.rbl.test", "listed: see http://rbl.test/"),
            ("4.0.0.127.rbl.test", "listed too"),
        ],
    )


@pytest.fixture(scope="module")
def dns() -> Iterator[str]:
    server = DnsServer(zone())
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def clamd() -> Iterator[ClamdServer]:
    with ClamdServer(unix=False) as server:
        yield server


@pytest.fixture(scope="module")
def spamd() -> Iterator[SpamdServer]:
    with SpamdServer() as server:
        yield server


def wrapper(home: Path, name: str, body: str) -> Path:
    path = home / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def configure(home: Path, dns: str, clamd: str, spamd: str, on_unavailable: str = "accept") -> None:
    settings = home / "qtoaster.toml"
    text = settings.read_text().replace(f'nameservers = ["{DEAD_DNS}"]', f'nameservers = ["{dns}"]')
    text = text.replace("rbl = []", 'rbl = ["rbl.test"]')
    text += (
        f'\n[clamd]\naddress = "{clamd}"\ntimeout = 10\non_unavailable = "{on_unavailable}"\n'
        f'\n[spamd]\naddress = "{spamd}"\ntimeout = 20\nreject_score = 100\n'
        f'on_unavailable = "{on_unavailable}"\n'
    )
    settings.write_text(text)
    control = home / "control"
    (control / "badhelo").write_text("!\\.\n")
    (control / "badmailfrom").write_text("# the seed's examples\n.*spammer.*\n!@\n")
    (control / "badmailto").write_text("[!%#:*^(){}]\n@.*@\n")
    (control / "mfcheck").write_text("1\n")
    (control / "signatures").write_text("TVqQAAMAA\nTVpQAAIAA\n")
    qinject = f"exec {sys.executable} -m qtoaster queue-inject"
    # Run by smtpd (its own user under root): it writes where anyone may, not in the home.
    (home / "qq-out").mkdir(mode=0o777)
    (home / "qq-out").chmod(0o777)
    good = wrapper(
        home, "qq-wrapper", f'echo "$TCPREMOTEIP" > "$QTOASTER_HOME/qq-out/ran"\n{qinject}'
    )
    bad = wrapper(home, "qq-reject", "exit 31")
    rules = [
        f'{ENV_BLOCKED}:allow,RBLSMTPD="-go away"',
        f'{EXEMPT}:allow,RBLSMTPD="",RELAYCLIENT=""',
        f'{QQ_CLIENT}:allow,RELAYCLIENT="",QMAILQUEUE="{good}"',
        f'{QQ_REJECT}:allow,RELAYCLIENT="",QMAILQUEUE="{bad}"',
        f'{NOBADHELO}:allow,RELAYCLIENT="",NOBADHELO=""',
        f'{TARPIT}:allow,RELAYCLIENT="",TARPITCOUNT="2",TARPITDELAY="1"',
        f'{EXECOK}:allow,RELAYCLIENT="",EXECUTABLEOK="1"',
        f'{NOSCAN}:allow,RELAYCLIENT="",CLAMD="0",SPAMD="0"',
    ]
    tcp = home / "tcp.smtp"
    tcp.write_text("\n".join(rules) + "\n" + tcp.read_text())


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, dns: str, clamd: ClamdServer, spamd: SpamdServer
) -> Iterator[Server]:
    home = make_home(tmp_path_factory.mktemp("antispam"))
    configure(home, dns, clamd.address, spamd.address)
    srv = Server(home)
    yield srv
    srv.stop()


def client(
    server: Server, source: str = "127.0.0.1", helo: str = "client.example.test"
) -> smtplib.SMTP:
    smtp = smtplib.SMTP(timeout=30, local_hostname=helo, source_address=(source, 0))
    smtp.connect("127.0.0.1", server.port)
    return smtp


def log_has(server: Server, needle: str) -> None:
    log = server.home / "server.log"
    wait_until(lambda: needle in log.read_text(errors="replace"), 20, needle)


# -- qregex -------------------------------------------------------------------------


def test_badhelo_is_reported_at_rcpt_and_nobadhelo_lifts_it(server: Server) -> None:
    with client(server, helo="nodot") as smtp:
        smtp.ehlo("nodot")
        assert smtp.mail("alice@example.test")[0] == 250
        assert smtp.rcpt("bob@example.test") == (
            553,
            b"5.7.1 sorry, your HELO host name has been denied (#5.7.1)",
        )
    with client(server, NOBADHELO, helo="nodot") as smtp:
        smtp.ehlo("nodot")
        smtp.mail("alice@example.test")
        assert smtp.rcpt("bob@example.test")[0] == 250
    log_has(server, "reason=qregex")


def test_badmailfrom_and_badmailto(server: Server) -> None:
    with client(server) as smtp:
        smtp.ehlo()
        assert smtp.mail("big.spammer@exists.test")[0] == 250  # remembered, not reported
        code, text = smtp.rcpt("bob@example.test")
        assert (code, text.endswith(b"sorry, your envelope sender has been denied (#5.7.1)")) == (
            553,
            True,
        )
        smtp.rset()
        smtp.mail("alice@example.test")
        code, text = smtp.rcpt("a%b@example.test")
        assert code == 553 and b"envelope recipient has been denied" in text
        assert smtp.rcpt("bob@example.test")[0] == 250  # the transaction goes on


# -- mfcheck --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "code"),
    [
        ("x@exists.test", 250),
        ("x@aonly.test", 250),
        ("x@nxsender.test", 553),
        ("", 250),
        ("x@[127.0.0.1]", 250),
    ],
)
def test_mfcheck(server: Server, sender: str, code: int) -> None:
    with client(server) as smtp:
        smtp.ehlo()
        got, text = smtp.mail(sender)
        assert got == code, text
        if code == 553:
            assert text.endswith(b"sorry, your envelope sender domain must exist (#5.7.1)")


# -- tarpit ---------------------------------------------------------------------------


def test_tarpit_delays_late_recipients_without_stalling_others(server: Server) -> None:
    timings: list[float] = []
    with client(server, TARPIT) as smtp:
        smtp.ehlo()
        smtp.mail("alice@example.test")
        for rcpt in ("alice@example.test", "bob@example.test", "carol@example.test"):
            began = time.monotonic()
            assert smtp.rcpt(rcpt)[0] == 250
            timings.append(time.monotonic() - began)
        # While this session is tarpitted, another one is answered at once.
        other: list[float] = []

        def elsewhere() -> None:
            with client(server) as quick:
                began = time.monotonic()
                quick.ehlo()
                other.append(time.monotonic() - began)

        thread = threading.Thread(target=elsewhere)
        began = time.monotonic()
        thread.start()
        assert smtp.rcpt("alice@example.test")[0] == 250
        timings.append(time.monotonic() - began)
        thread.join(30)
    assert timings[0] < 0.5
    assert all(t >= 0.9 for t in timings[1:])  # from the 2nd accepted RCPT on: 1 s each
    assert other and other[0] < 0.5


# -- signatures -----------------------------------------------------------------------


def test_executable_attachment_refused_after_the_dot_with_swaks(
    server: Server, tmp_path: Path
) -> None:
    exe = tmp_path / "setup.exe"
    exe.write_bytes(PE_HEADER)
    args = ["swaks", "--server", f"127.0.0.1:{server.port}", "--from", "alice@example.test"]
    args += ["--to", "bob@example.test", "--attach", f"@{exe}", "--attach-type"]
    args += ["application/octet-stream", "--helo", "client.example.test"]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert "552 5.3.4 we don't accept email with executable content (#5.3.4)" in refused.stdout
    log_has(server, "reason=signatures")
    allowed = subprocess.run(
        [*args, "--local-interface", EXECOK], capture_output=True, text=True, timeout=60
    )
    assert allowed.returncode == 0, allowed.stdout
    assert "<-  250 2.0.0 ok " in allowed.stdout


def nested_message(depth: int) -> bytes:
    """An executable attachment inside *depth* multiparts, each in the one before."""
    exe = base64.encodebytes(PE_HEADER).replace(b"\n", b"\r\n")
    head = [b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: deep\r\n"]
    tail = [b"epilogue\r\n"]
    for level in range(depth):
        boundary = b"b%d" % level
        head.append(b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n")
        head.append(b"--" + boundary + b"\r\n")
        tail.append(b"--" + boundary + b"--\r\n")
    part = b"Content-Type: application/octet-stream\r\n"
    part += b"Content-Transfer-Encoding: base64\r\n\r\n" + exe
    return b"".join(head) + part + b"".join(reversed(tail))


@pytest.mark.parametrize(
    ("depth", "text", "why"),
    [
        (64, b"we don't accept email with executable content", 'why="executable content"'),
        (200, b"nested deeper than 64 MIME levels", 'why="mime nested too deep"'),
        (10_000, b"nested deeper than 64 MIME levels", 'why="mime nested too deep"'),
    ],
)
def test_nested_executable_is_never_passed_unscanned(
    server: Server, depth: int, text: bytes, why: str
) -> None:
    # issue 12 item 4: an executable nested 64 levels deep and more got 250.
    with client(server) as smtp, pytest.raises(smtplib.SMTPDataError) as err:
        smtp.sendmail("alice@example.test", ["bob@example.test"], nested_message(depth))
    assert err.value.smtp_code == 552
    assert text in err.value.smtp_error
    log_has(server, why)


# -- QMAILQUEUE -----------------------------------------------------------------------


def test_qmailqueue_wrapper_queues_through_queue_inject(server: Server) -> None:
    with client(server, QQ_CLIENT) as smtp:
        smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: via qq\r\n\r\nhi\r\n")
    assert (server.home / "qq-out" / "ran").read_text().strip() == QQ_CLIENT
    wait_for_mail(server.home, "bob", b"Subject: via qq")


def test_qmailqueue_exit_code_becomes_the_reply(server: Server) -> None:
    with client(server, QQ_REJECT) as smtp, pytest.raises(smtplib.SMTPDataError) as err:
        smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: no\r\n\r\nx\r\n")
    assert err.value.smtp_code == 554
    assert err.value.smtp_error.endswith(b"mail server permanently rejected message (#5.3.0)")


# -- clamd and spamd ----------------------------------------------------------------


def attachment_message(payload: bytes, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.test", "bob@example.test", subject
    msg.set_content("see attached\n")
    msg.add_attachment(payload, maintype="application", subtype="octet-stream", filename="x")
    return msg.as_bytes(policy=SMTP)  # CRLF: a bare LF would get qmail's 451


def test_clamd_refuses_a_virus_and_names_it_in_the_log(server: Server) -> None:
    with client(server) as smtp, pytest.raises(smtplib.SMTPDataError) as err:
        smtp.sendmail("alice@example.test", ["bob@example.test"], attachment_message(EICAR, "v"))
    assert err.value.smtp_code == 554
    assert b"virus" in err.value.smtp_error
    log_has(server, "reason=clamd")
    log_has(server, "Qtoaster-Test.EICAR")
    with client(server, NOSCAN) as smtp:  # CLAMD="0" from tcp.smtp
        smtp.sendmail("alice@example.test", ["bob@example.test"], attachment_message(EICAR, "ok"))


def test_spamd_scores_ham_and_refuses_gtube(server: Server) -> None:
    ham = b"Subject: lunch\r\n\r\nShall we meet for lunch on Friday at noon?\r\n"
    with client(server) as smtp:
        smtp.sendmail("alice@example.test", ["carol@example.test"], ham)
    data = wait_for_mail(server.home, "carol", b"Subject: lunch")
    assert b"X-Spam-Status: No, score=" in data and b"X-Spam-Score: " in data
    assert data.index(b"X-Spam-Status") < data.index(b"Subject: lunch")
    spam = f"Subject: buy\r\n\r\n{GTUBE}\r\n".encode()
    with client(server) as smtp, pytest.raises(smtplib.SMTPDataError) as err:
        smtp.sendmail("alice@example.test", ["carol@example.test"], spam)
    assert err.value.smtp_code == 554 and b"spam" in err.value.smtp_error
    log_has(server, "reason=spamd")


def test_scanner_down_tempfails_or_accepts_as_configured(tmp_path: Path, dns: str) -> None:
    dead = "127.0.0.1:9"
    for mode, code in (("tempfail", 451), ("accept", 250)):
        home = make_home(tmp_path / mode)
        configure(home, dns, dead, dead, on_unavailable=mode)
        srv = Server(home)
        try:
            with client(srv) as smtp:
                smtp.ehlo()
                smtp.mail("alice@example.test")
                smtp.rcpt("bob@example.test")
                got, _ = smtp.data(b"Subject: unscanned\r\n\r\nx\r\n")
            assert got == code
            if code == 250:
                wait_for_mail(home, "bob", b"Subject: unscanned")
        finally:
            srv.stop()


# -- rblsmtpd -------------------------------------------------------------------------


def raw_dialog(server: Server, source: str, lines: list[bytes]) -> list[bytes]:
    import socket

    with socket.create_connection(("127.0.0.1", server.port), 30, (source, 0)) as sock:
        f = sock.makefile("rb")
        replies = [f.readline()]
        for line in lines:
            sock.sendall(line + b"\r\n")
            replies.append(f.readline())
    return replies


def test_listed_client_gets_rblsmtpds_dialog(server: Server) -> None:
    replies = raw_dialog(
        server,
        LISTED,
        [b"HELO me.test", b"MAIL FROM:<a@example.test>", b"RCPT TO:<bob@example.test>", b"QUIT"],
    )
    assert replies == [
        b"220 rblsmtpd.local\r\n",
        b"250 rblsmtpd.local\r\n",
        b"250 rblsmtpd.local\r\n",
        b"451 listed: see http://rbl.test/\r\n",
        b"221 rblsmtpd.local\r\n",
    ]
    log_has(server, "refused session=")
    log_has(server, "reason=rblsmtpd code=451")


def test_rblsmtpd_variable_blocks_or_exempts(server: Server) -> None:
    blocked = raw_dialog(server, ENV_BLOCKED, [b"RCPT TO:<bob@example.test>"])
    assert blocked == [b"220 rblsmtpd.local\r\n", b"553 go away\r\n"]
    with client(server, EXEMPT) as smtp:  # listed, but RBLSMTPD="" exempts it
        smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: exempt\r\n\r\nx\r\n")
    wait_for_mail(server.home, "bob", b"Subject: exempt")


def test_clean_client_is_not_screened_out(server: Server) -> None:
    before = len(maildir_files(server.home, "alice"))
    with client(server) as smtp:
        smtp.sendmail("bob@example.test", ["alice@example.test"], b"Subject: clean\r\n\r\nx\r\n")
    wait_until(lambda: len(maildir_files(server.home, "alice")) > before, 20, "clean mail")


def test_attachment_payload_is_the_pe_signature() -> None:
    assert base64.b64encode(PE_HEADER).startswith(b"TVqQAAMAA")
