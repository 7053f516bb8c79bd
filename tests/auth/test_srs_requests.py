"""The auth role's srs-forward and srs-reverse: codec, server (peer checks, key), clients."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from qtoaster.auth.client import AuthClient, AuthRoleSrs, srs, srs_service
from qtoaster.auth.protocol import (
    ProtocolError,
    SrsRequest,
    SrsResponse,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    socket_path,
)
from qtoaster.authd.server import AuthServer
from qtoaster.cli.newhome import init_home
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.mailauth.srs import BAD_HASH, LocalSrs, SrsError, key_path


def test_golden_lines() -> None:
    forward = SrsRequest(10, "srs-forward", "alice@example.org", "fwd.example")
    line = (
        b'{"address":"YWxpY2VAZXhhbXBsZS5vcmc=","domain":"fwd.example",'
        b'"id":10,"op":"srs-forward"}\n'
    )
    assert encode_request(forward) == line
    assert decode_request(line) == forward
    reverse = SrsRequest(11, "srs-reverse", "SRS0=x@fwd.example")
    assert decode_request(encode_request(reverse)) == reverse
    answer = SrsResponse(11, False, False, "", BAD_HASH)
    line = b'{"id":11,"ok":false,"reason":"bad SRS hash","srs":"","temporary":false}\n'
    assert encode_response(answer) == line
    assert decode_response(line) == answer


@pytest.mark.parametrize(
    "line",
    [
        b'{"id":1,"op":"srs-forward","address":"YQ=="}\n',  # no domain
        b'{"id":1,"op":"srs-reverse","address":"!!"}\n',  # bad base64
        b'{"id":1,"op":"srs-reverse"}\n',
        b'{"id":1,"ok":true,"temporary":false,"srs":3,"reason":""}\n',
    ],
)
def test_bad_lines_raise_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        if b'"op"' in line:
            decode_request(line)
        else:
            decode_response(line)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    init_home(home, "mx.example.test", smtp=["127.0.0.1:0"])
    return home


async def _ask(path: Path, op: str, address: str, domain: str = "") -> SrsResponse:
    return await asyncio.to_thread(srs, path, op, address, domain)


async def test_server_forwards_and_reverses(home: Home) -> None:
    assert key_path(home).stat().st_mode & 0o777 == 0o600  # made by init
    server = AuthServer(home)
    await server.start()
    path = socket_path(home)
    try:
        made = await _ask(path, "srs-forward", "alice@example.org", "fwd.example")
        assert made.ok and made.address.startswith("SRS0=")
        assert made.address.endswith("=example.org=alice@fwd.example")
        back = await _ask(path, "srs-reverse", made.address)
        assert (back.ok, back.address) == (True, "alice@example.org")
        forged = made.address.replace("=alice@", "=mallory@")
        refused = await _ask(path, "srs-reverse", forged)
        assert (refused.ok, refused.temporary, refused.reason) == (False, False, BAD_HASH)
        client = AuthClient(path)
        try:
            answer = await client.srs_reverse(made.address)
            assert answer.ok and answer.address == "alice@example.org"
        finally:
            await client.close()
        # the blocking client as local delivery uses it
        role = AuthRoleSrs(path)
        assert await asyncio.to_thread(role.reverse, made.address) == "alice@example.org"
        with pytest.raises(SrsError) as caught:
            await asyncio.to_thread(role.reverse, "SRS0=x@fwd.example")
        assert caught.value.reason == "malformed SRS address"
    finally:
        await server.close()


async def test_peers_that_may_not_ask_are_answered_temporary(home: Home) -> None:
    me = os.getuid()
    # This process is neither the send role's uid (forward) nor smtpd's (reverse).
    server = AuthServer(home, redeemer=me + 1, srs_checker=me + 2)
    await server.start()
    try:
        for op in ("srs-forward", "srs-reverse"):
            answer = await _ask(socket_path(home), op, "alice@example.org", "fwd.example")
            assert (answer.ok, answer.temporary) == (False, True)
            assert answer.reason == "not allowed to this peer"
    finally:
        await server.close()
    # smtpd's uid may reverse but not forward
    server = AuthServer(home, redeemer=me + 1, srs_checker=me)
    await server.start()
    try:
        forward = await _ask(socket_path(home), "srs-forward", "a@example.org", "fwd.example")
        assert forward.temporary
        reverse = await _ask(socket_path(home), "srs-reverse", "SRS0=x@fwd.example")
        assert (reverse.temporary, reverse.reason) == (False, "malformed SRS address")
    finally:
        await server.close()


async def test_missing_key_is_temporary(home: Home) -> None:
    key_path(home).unlink()
    server = AuthServer(home)
    await server.start()
    try:
        answer = await _ask(socket_path(home), "srs-forward", "a@example.org", "fwd.example")
        assert answer.temporary and answer.reason.startswith("no SRS key")
        with pytest.raises(TemporaryFailure):
            await asyncio.to_thread(AuthRoleSrs(socket_path(home)).forward, "a@b.c", "d.e")
    finally:
        await server.close()


def test_auth_role_away_is_temporary(home: Home) -> None:
    with pytest.raises(TemporaryFailure):
        AuthRoleSrs(socket_path(home)).forward("alice@example.org", "fwd.example")


def test_service_in_process_when_the_key_is_readable(home: Home) -> None:
    assert isinstance(srs_service(home, 21), LocalSrs)
    key_path(home).unlink()
    assert isinstance(srs_service(home, 21), AuthRoleSrs)
