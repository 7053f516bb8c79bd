"""Slow clients (issue 12 item 2): a command line, a message and a TLS handshake each have
a deadline that input arriving byte by byte does not push back.

One server (timeoutsmtpd 2 s, POP3 timeout 2 s, data_min_rate 100 B/s) on SQLite: the
deadlines are the server's, not the directory's. A client sends one byte at a time, paced
by waiting up to PACE seconds for the server's answer, so it keeps sending until the
server speaks or hangs up; every test is bounded by LIMIT seconds.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Iterator
from typing import BinaryIO

import pytest

from .harness import Server, maildir_files, make_home, qt

pytestmark = pytest.mark.integration

TIMEOUT = 2  # timeoutsmtpd and [pop3d] timeout of this home
PACE = 0.5  # seconds between two bytes of a dribbling client
LIMIT = 15.0  # a test gives up after this: the server never cut the client off
SWEEP = 1.0  # net.serve looks for overdue sessions once a second


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = make_home(tmp_path_factory.mktemp("slow"))
    (home / "control" / "timeoutsmtpd").write_text(f"{TIMEOUT}\n")
    settings = home / "qtoaster.toml"
    text = settings.read_text()
    # init writes both settings with their defaults: replaced here.
    text = text.replace("data_min_rate = 500\n", "data_min_rate = 100\n", 1)
    text = text.replace("timeout = 1200\n", f"timeout = {TIMEOUT}\n", 1)
    settings.write_text(text)
    srv = Server(home, "--smtps", "127.0.0.1:0", "--pop3", "127.0.0.1:0", "--pop3s",
                 "127.0.0.1:0", workers=1)  # fmt: skip
    yield srv
    srv.stop()


def dribble(sock: socket.socket, data: bytes, step: int = 1) -> tuple[bytes, float]:
    """Send ``data`` ``step`` bytes every PACE seconds until the server answers or closes;
    what it said (b"" for a plain close) and the seconds it took."""
    start = time.monotonic()
    for i in range(0, len(data), step):
        if time.monotonic() - start > LIMIT:
            break
        try:
            sock.sendall(data[i : i + step])
        except OSError:  # closed under us: what it said is read below
            break
        ready, _, _ = select.select([sock], [], [], PACE)
        if ready:
            break
    else:
        raise AssertionError("the server let the whole slow input through")
    return read_all(sock), time.monotonic() - start


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (bounded by LIMIT)."""
    sock.settimeout(LIMIT)
    out = b""
    try:
        while chunk := sock.recv(4096):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=LIMIT)


def start_data(sock: socket.socket, recipient: bytes) -> BinaryIO:
    """Greeting, HELO, MAIL, RCPT and DATA up to the 354; the reader of the replies."""
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220 ")
    for command in (b"HELO c.test", b"MAIL FROM:<a@b.test>", b"RCPT TO:<" + recipient + b">"):
        sock.sendall(command + b"\r\n")
        assert f.readline().startswith(b"250 ")
    sock.sendall(b"DATA\r\n")
    assert f.readline().startswith(b"354 ")
    return f


def test_smtp_command_dribbled_byte_by_byte_times_out(slow_server: Server) -> None:
    with connect(slow_server.port) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        # A legal line, but 44 bytes at 2 a second: it would take 22 s to arrive.
        said, took = dribble(sock, b"HELO " + b"x" * 37 + b"\r\n")
    assert said == b"451 timeout (#4.4.2)\r\n"
    assert TIMEOUT - 0.5 < took < TIMEOUT + SWEEP + 1.5


def test_smtp_timeout_counts_from_the_last_command(slow_server: Server) -> None:
    """Commands that arrive whole keep a session going, however long it lasts."""
    with connect(slow_server.port) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        for _ in range(5):
            sock.sendall(b"NOOP\r\n")
            assert f.readline().startswith(b"250 ")
            select.select([sock], [], [], PACE)  # pacing: the server says nothing meanwhile
        sock.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"221 ")


def test_pop3_user_dribbled_byte_by_byte_times_out(slow_server: Server) -> None:
    with connect(slow_server.ports["pop3"]) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"+OK ")
        said, took = dribble(sock, b"USER " + b"x" * 37 + b"\r\n")
    assert said == b""  # qmail-popup's timeout: it just exits
    assert TIMEOUT - 0.5 < took < TIMEOUT + SWEEP + 1.5


def test_slow_data_is_cut_off_and_nothing_queued(slow_server: Server) -> None:
    home = slow_server.home
    before = len(maildir_files(home, "alice"))
    with connect(slow_server.port) as sock:
        start_data(sock, b"alice@example.test")
        # 10 bytes every 0.5 s is 20 B/s: every read is well within timeoutsmtpd, but the
        # whole is below data_min_rate (100 B/s), so it must end at about 2 + 0.2 t < t.
        body = b"Subject: slow\r\n\r\n" + b"x" * 400 + b"\r\n.\r\n"
        said, took = dribble(sock, body, step=10)
    assert said == b"451 timeout (#4.4.2)\r\n"
    assert took < TIMEOUT / (1 - 20 / 100) + SWEEP + 1.5
    assert qt(home, "queue", "stat").stdout.decode().startswith("messages in queue: 0")
    assert len(maildir_files(home, "alice")) == before


def test_data_at_a_good_rate_is_accepted(slow_server: Server) -> None:
    """Above data_min_rate a message may take longer than timeoutsmtpd."""
    with connect(slow_server.port) as sock:
        f = start_data(sock, b"bob@example.test")
        # 300 B/s for 3 s (over timeoutsmtpd): 2 + 900/100 s are allowed.
        start = time.monotonic()
        for _ in range(6):
            sock.sendall(b"y" * 148 + b"\r\n")
            select.select([sock], [], [], PACE)  # pacing; nothing is said meanwhile
        sock.sendall(b".\r\n")
        assert f.readline().startswith(b"250 ")
        assert time.monotonic() - start > TIMEOUT


def client_hello() -> bytes:
    """The first flight of a TLS client (its ClientHello), to dribble."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="mx.example.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("kind", ["smtps", "pop3s"])
def test_implicit_tls_silent_client_is_closed_at_the_handshake_deadline(
    slow_server: Server, kind: str
) -> None:
    with connect(slow_server.ports[kind]) as sock:
        start = time.monotonic()
        assert read_all(sock) == b""
        assert time.monotonic() - start < TIMEOUT + 2.5


@pytest.mark.parametrize("kind", ["smtps", "pop3s"])
def test_implicit_tls_dribbled_hello_is_closed_at_the_handshake_deadline(
    slow_server: Server, kind: str
) -> None:
    with connect(slow_server.ports[kind]) as sock:
        said, took = dribble(sock, client_hello(), step=2)
    assert said == b""
    assert took < TIMEOUT + 2.5


@pytest.mark.parametrize(
    ("kind", "greeting", "command", "answer"),
    [
        ("smtp", b"220 ", b"STARTTLS", b"220 "),
        ("pop3", b"+OK ", b"STLS", b"+OK"),
    ],
)
def test_starttls_dribbled_hello_is_closed_at_the_handshake_deadline(
    slow_server: Server, kind: str, greeting: bytes, command: bytes, answer: bytes
) -> None:
    with connect(slow_server.ports[kind]) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(greeting)
        if kind == "smtp":
            sock.sendall(b"EHLO slow.test\r\n")
            while f.readline()[3:4] == b"-":
                pass
        sock.sendall(command + b"\r\n")
        assert f.readline().startswith(answer)
        said, took = dribble(sock, client_hello(), step=2)
    assert said == b""
    assert took < TIMEOUT + 2.5
