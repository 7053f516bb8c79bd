"""The workers' side of the auth role's socket: an asyncio client, one connection per worker.

smtpd and pop3d no longer read credentials (decision 0007); they ask the auth role
(qtoaster.authd) over ``run/auth/auth.sock`` in the protocol of auth.protocol. Requests are
pipelined on one connection (each waits on its own future, answered by ``id``, in any
order): a login waiting out the throttle's delay holds up no other.

Invariants:
- never raises for a missing, dead or misbehaving auth role: :meth:`AuthClient.verify`
  answers ``temporary`` (the worker replies ``454`` / ``-ERR [SYS/TEMP]``) and
  :meth:`AuthClient.mechanisms` None; never an acceptance;
- a connection that fails fails every request on it and is dropped; the next request
  connects again (the supervisor restarts a dead auth role).

:func:`redeem` is the mailbox broker's (a blocking call from its threads): a pop3 or imap login's
ticket for that user's address and Maildir. :func:`srs` is the send role's (blocking, from
local delivery's threads): a forward's sender rewritten, an SRS recipient reversed;
:meth:`AuthClient.srs_reverse` is smtpd's check of an SRS recipient at RCPT.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
from pathlib import Path

from qtoaster.auth.protocol import (
    MAX_LINE,
    MechanismsRequest,
    MechanismsResponse,
    ProtocolError,
    RedeemRequest,
    RedeemResponse,
    Request,
    Response,
    SrsRequest,
    SrsResponse,
    VerifyRequest,
    VerifyResponse,
    decode_response,
    encode_request,
    socket_path,
)
from qtoaster.core.errors import TemporaryFailure
from qtoaster.core.home import Home
from qtoaster.mailauth.srs import KeyRing, LocalSrs, SrsError, SrsService, key_path

log = logging.getLogger("qtoaster.auth")
# Beyond the throttle's longest delay (30 s) and an argon2 check under load.
VERIFY_TIMEOUT = 90.0
MECHANISMS_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
REDEEM_TIMEOUT = 10.0
SRS_TIMEOUT = 10.0


class AuthClient:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._ids = itertools.count(1)
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._connecting = asyncio.Lock()

    async def verify(
        self,
        *,
        service: str,
        mechanism: str,
        user: str,
        secret: str,
        challenge: bytes = b"",
        ip: str,
    ) -> VerifyResponse:
        """The auth role's answer; ``temporary`` if it could not be asked."""
        request = VerifyRequest(next(self._ids), service, mechanism, user, secret, challenge, ip)
        try:
            response = await self._ask(request, VERIFY_TIMEOUT)
        except (OSError, TimeoutError, ProtocolError) as exc:
            return VerifyResponse(request.id, False, True, "", f"auth role unavailable: {exc}")
        if not isinstance(response, VerifyResponse):
            return VerifyResponse(request.id, False, True, "", "auth role answered nonsense")
        return response

    async def mechanisms(self) -> MechanismsResponse | None:
        """Whether CRAM-MD5 / APOP can be offered now; None if the auth role is away."""
        try:
            response = await self._ask(MechanismsRequest(next(self._ids)), MECHANISMS_TIMEOUT)
        except (OSError, TimeoutError, ProtocolError):
            return None
        return response if isinstance(response, MechanismsResponse) else None

    async def srs_reverse(self, address: str) -> SrsResponse:
        """The auth role's check of an SRS address; ``temporary`` if it could not be asked."""
        request = SrsRequest(next(self._ids), "srs-reverse", address)
        try:
            response = await self._ask(request, SRS_TIMEOUT)
        except (OSError, TimeoutError, ProtocolError) as exc:
            return SrsResponse(request.id, False, True, "", f"auth role unavailable: {exc}")
        if not isinstance(response, SrsResponse):
            return SrsResponse(request.id, False, True, "", "auth role answered nonsense")
        return response

    async def _ask(self, request: Request, timeout: float) -> Response:
        writer = await self._connect()
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = future
        try:
            writer.write(encode_request(request))
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            self._pending.pop(request.id, None)

    async def _connect(self) -> asyncio.StreamWriter:
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path), limit=MAX_LINE + 1),
                CONNECT_TIMEOUT,
            )
            self._writer = writer
            asyncio.get_running_loop().create_task(self._read(reader, writer))
            return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Hand each answer to its request; at the end, fail what is left on this one."""
        problem: Exception = ConnectionResetError("auth role closed the connection")
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                response = decode_response(line)
                future = self._pending.get(response.id) if response.id is not None else None
                if future is not None and not future.done():
                    future.set_result(response)
        except (OSError, ValueError) as exc:  # ProtocolError, too long a line, a reset
            problem = exc
            log.warning("auth auth role connection: %s", exc)
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            for future in list(self._pending.values()):
                if not future.done():
                    future.set_exception(ConnectionResetError(str(problem)))

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def redeem(path: Path, ticket: str, timeout: float = REDEEM_TIMEOUT) -> RedeemResponse:
    """Blocking: the auth role's answer for ``ticket`` (``ok`` false: unknown, used,
    expired, or not ours to redeem); OSError or ProtocolError when it cannot be asked."""
    response = _ask_blocking(path, RedeemRequest(1, ticket), timeout)
    if not isinstance(response, RedeemResponse):
        raise ProtocolError("auth role answered nonsense")
    return response


def srs(
    path: Path, op: str, address: str, domain: str = "", timeout: float = SRS_TIMEOUT
) -> SrsResponse:
    """Blocking: ``srs-forward`` (``address`` rewritten at ``domain``) or ``srs-reverse``;
    OSError or ProtocolError when the auth role cannot be asked."""
    response = _ask_blocking(path, SrsRequest(1, op, address, domain), timeout)
    if not isinstance(response, SrsResponse):
        raise ProtocolError("auth role answered nonsense")
    return response


def _ask_blocking(path: Path, request: Request, timeout: float) -> Response:
    """One request on a connection of its own (the callers are threads)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        sock.sendall(encode_request(request))
        data = b""
        while not data.endswith(b"\n"):
            piece = sock.recv(4096)
            if not piece or len(data) > MAX_LINE:
                raise ConnectionResetError("auth role closed the connection")
            data += piece
    return decode_response(data)


class AuthRoleSrs:
    """mailauth.srs.SrsService asked of the auth role (blocking: local delivery's threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _ask(self, op: str, address: str, domain: str = "") -> SrsResponse:
        try:
            response = srs(self.path, op, address, domain)
        except (OSError, ProtocolError) as exc:
            raise TemporaryFailure(f"auth role unavailable: {exc}") from exc
        if response.temporary:
            raise TemporaryFailure(f"auth role: {response.reason}")
        return response

    def forward(self, sender: str, domain: str) -> str:
        response = self._ask("srs-forward", sender, domain)
        if not response.ok:
            raise ValueError(response.reason)
        return response.address

    def reverse(self, address: str) -> str:
        response = self._ask("srs-reverse", address)
        if not response.ok:
            raise SrsError(response.reason, address)
        return response.address


def srs_service(home: Home, max_age_days: int) -> SrsService:
    """In-process when this process may read the key (one user for every role: not
    started as root, or a test); else the auth role, which alone reads it under root."""
    path = key_path(home)
    if os.access(path, os.R_OK):
        return LocalSrs(KeyRing(path), max_age_days)
    return AuthRoleSrs(socket_path(home))
