"""The HTTP-01 responder (net/challenge.py): a real process, queried with httpx."""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path

import httpx
import pytest

from qtoaster.net.challenge import PREFIX, Responder, ResponderError

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTH = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_serves_published_tokens_only() -> None:
    with Responder("127.0.0.1", 0) as responder:
        base = f"http://127.0.0.1:{responder.port}"
        assert httpx.get(base + PREFIX + TOKEN).status_code == 404  # not yet published
        responder.publish(TOKEN, KEYAUTH)
        answer = httpx.get(base + PREFIX + TOKEN)
        assert answer.status_code == 200 and answer.text == KEYAUTH
        assert answer.headers["content-type"] == "text/plain"
        assert httpx.head(base + PREFIX + TOKEN).status_code == 200
        for path in ("/", PREFIX, PREFIX + TOKEN + "x", "/etc/passwd", PREFIX + "../" + TOKEN):
            assert httpx.get(base + path).status_code == 404, path
        assert httpx.post(base + PREFIX + TOKEN).status_code == 501
        with socket.create_connection(("127.0.0.1", responder.port)) as sock:
            sock.settimeout(10)
            sock.sendall(b"GET / HTTP/2.0\r\n\r\n")
            answer = b"".join(iter(lambda: sock.recv(4096), b""))  # until it closes
            assert b"Error code: 505" in answer  # http.server's own refusal
        proc = responder.proc
        assert proc is not None
        if os.geteuid() == 0:
            assert _uid(proc.pid) == pwd.getpwnam("nobody").pw_uid
    assert proc.returncode == 0  # stopped when its stdin closed


def test_refuses_a_token_that_is_not_base64url() -> None:
    with Responder("127.0.0.1", 0) as responder, pytest.raises(ResponderError):
        responder.publish("../x", "../x.y")


def test_port_in_use_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ResponderError, match=f"cannot listen on 127.0.0.1:{port}: "):
            Responder("127.0.0.1", port).__enter__()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_listener() -> None:
    try:
        probe = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no ::1 on this host")
    probe.close()
    with Responder("::1", 0) as responder:
        responder.publish(TOKEN, KEYAUTH)
        answer = httpx.get(f"http://[::1]:{responder.port}{PREFIX}{TOKEN}")
        assert answer.text == KEYAUTH
