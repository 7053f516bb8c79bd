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

:func:`redeem` is the mailbox broker's (a blocking call from its threads): a pop3 login's
ticket for that user's address and Maildir.
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
    VerifyRequest,
    VerifyResponse,
    decode_response,
    encode_request,
)

log = logging.getLogger("qtoaster.auth")
# Beyond the throttle's longest delay (30 s) and an argon2 check under load.
VERIFY_TIMEOUT = 90.0
MECHANISMS_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
REDEEM_TIMEOUT = 10.0


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
            log.warning("auth role connection: %s", exc)
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
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        sock.sendall(encode_request(RedeemRequest(1, ticket)))
        data = b""
        while not data.endswith(b"\n"):
            piece = sock.recv(4096)
            if not piece or len(data) > MAX_LINE:
                raise ConnectionResetError("auth role closed the connection")
            data += piece
    response = decode_response(data)
    if not isinstance(response, RedeemResponse):
        raise ProtocolError("auth role answered nonsense")
    return response
