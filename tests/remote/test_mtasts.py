"""MTA-STS parsing (RFC 8461 3.1-3.3) and the HTTP answer reader, without a network."""

from __future__ import annotations

import asyncio

import pytest

from qtoaster.remote.mtasts import MAX_POLICY, PolicyError, parse_policy, parse_txt, read_response

POLICY = (
    "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
    "mx: *.example.net\r\nmax_age: 604800\r\n"
)


def test_parse_txt() -> None:
    assert parse_txt(["v=STSv1; id=20160831085700Z;"]) == "20160831085700Z"
    assert parse_txt(["v=spf1 -all", "v=STSv1; id=abc"]) == "abc"
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # two records: none
    assert parse_txt(["v=STSv1; id=not-alnum!"]) is None
    assert parse_txt([]) is None


def test_parse_policy_and_mx_patterns() -> None:
    policy = parse_policy(POLICY, "example.com", "1", 1000.0)
    assert (policy.mode, policy.max_age, policy.mx) == (
        "enforce",
        604800,
        ("mail.example.com", "*.example.net"),
    )
    assert policy.allows("mail.example.com") and policy.allows("MX1.example.net.")
    assert not policy.allows("a.b.example.net")  # one label only
    assert not policy.allows("example.net") and not policy.allows("evil.example.com")
    assert not policy.expired(1000.0 + 604799) and policy.expired(1000.0 + 604800)
    assert policy.label == "MTA-STS policy of example.com (enforce)"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("mode: enforce\nmx: a.example\nmax_age: 1\n", "version"),
        ("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", "mode"),
        ("version: STSv1\nmode: enforce\nmax_age: 1\n", "without any mx"),
        ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: soon\n", "max_age"),
        ("version: STSv1\nmode: enforce\nmx: a/b\nmax_age: 1\n", "not a host name"),
        ("version STSv1\n", "without a colon"),
    ],
)
def test_bad_policies(text: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem):
        parse_policy(text, "example.com", "1", 0.0)


def test_max_age_is_capped_at_a_year() -> None:
    text = "version: STSv1\nmode: none\nmax_age: 99999999999\n"
    with pytest.raises(PolicyError):
        parse_policy(text, "example.com", "1", 0.0)  # 11 digits: not a valid max_age
    policy = parse_policy("version: STSv1\nmode: none\nmax_age: 9999999999\n", "e.com", "1", 0)
    assert policy.max_age == 31557600


def _read(raw: bytes) -> str:
    async def run() -> str:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_response(reader)

    return asyncio.run(run())


def test_read_response() -> None:
    body = POLICY.encode()
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    assert _read(head.encode() + body) == POLICY
    chunked = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"5\r\nhello\r\n0\r\n\r\n"
    assert _read(chunked) == "hello"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"HTTP/1.1 301 Moved\r\nLocation: https://x/\r\n\r\n", "status 301"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\nx", "text/html"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"x" * (MAX_POLICY + 1),
            "over 65536",
        ),
        (b"SSH-2.0-OpenSSH\r\n", "not an HTTP answer"),
    ],
)
def test_bad_responses(raw: bytes, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem):
        _read(raw)
