"""The HTTP-01 responder of ``qtoaster cert acme`` (RFC 8555 8.3), in a process of its own.

The parent (root: port 80) binds the listening socket and starts
``python -m qtoaster.net.challenge FD USER`` with that socket; the child drops to USER
(``nobody`` by default, core/privilege.py) before it accepts anything, then serves HTTP
with the standard library's ``http.server`` (no HTTP parsing of ours). It answers only
``GET``/``HEAD /.well-known/acme-challenge/TOKEN`` for the tokens the parent published,
with the key authorization as ``text/plain``; anything else is 404.

Parent and child speak over the child's stdin/stdout, one line each way: the child says
``ready`` once it dropped root; the parent writes ``TOKEN KEYAUTH`` and the child answers
``ok TOKEN`` once it serves it (so the CA is told to look only then). EOF on stdin stops
the child. Invariants: the child is a new program (exec), so none of the parent's memory
(the account key, the new private key) is in it; it never runs as root once it reads the
network; it holds nothing but the published key authorizations, which are public.
"""

from __future__ import annotations

import os
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import IO, ClassVar

from qtoaster.core.errors import QtoasterError
from qtoaster.core.privilege import drop, lookup, running_as_root

PREFIX = "/.well-known/acme-challenge/"
TOKEN = re.compile(r"[A-Za-z0-9_-]+")  # base64url, RFC 8555 8.3
START_TIMEOUT = 10.0
REQUEST_TIMEOUT = 10  # seconds a client may take to send its request


class ResponderError(QtoasterError):
    """The responder could not listen or start; ``str()`` says why."""


class Responder:
    """``with Responder(host, port) as r: r.publish(token, keyauth)``."""

    def __init__(self, host: str, port: int, user: str = "nobody") -> None:
        self.host, self.port, self.user = host, port, user
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Responder:
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.create_server((self.host, self.port), family=family)
        except OSError as exc:
            where = f"[{self.host}]" if ":" in self.host else self.host
            raise ResponderError(f"http-01: cannot listen on {where}:{self.port}: {exc.strerror}")
        with sock:
            self.port = sock.getsockname()[1]
            self.proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(sock.fileno()), self.user],
                pass_fds=(sock.fileno(),),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        try:
            self._expect("ready")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def publish(self, token: str, validation: str) -> None:
        """Serve *validation* at the token's path; returns once the child serves it."""
        if not TOKEN.fullmatch(token) or not TOKEN.fullmatch(validation.replace(".", "")):
            raise ResponderError(f"http-01: refusing to publish token {token!r}")
        stdin = self._pipe(self.proc.stdin if self.proc else None)
        stdin.write(f"{token} {validation}\n")
        stdin.flush()
        self._expect(f"ok {token}")

    def _pipe(self, pipe: IO[str] | None) -> IO[str]:
        if pipe is None:
            raise ResponderError("http-01: the responder is not running")
        return pipe

    def _expect(self, line: str) -> None:
        stdout = self._pipe(self.proc.stdout if self.proc else None)
        with selectors.DefaultSelector() as sel:
            sel.register(stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + START_TIMEOUT
            while (left := deadline - time.monotonic()) > 0:
                if sel.select(left):
                    got = stdout.readline()
                    if got.strip() == line:
                        return
                    if not got:
                        break
        raise ResponderError(f"http-01: the responder did not answer {line!r} (see above)")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()  # EOF: the child stops serving and exits
            except BrokenPipeError:
                pass
        try:
            proc.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class _Handler(BaseHTTPRequestHandler):
    server_version = "qtoaster-acme"
    timeout = REQUEST_TIMEOUT
    tokens: ClassVar[dict[str, str]] = {}  # a new dict per server, in serve()

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        token = self.path[len(PREFIX) :] if self.path.startswith(PREFIX) else ""
        validation = self.tokens.get(token)
        if validation is None:
            self.send_error(404)
            return
        data = validation.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the CA's requests are not the operator's business; failures are the CA's


def serve(listener: socket.socket, user: str) -> None:
    """The child: drop root, announce readiness, serve until stdin closes."""
    if running_as_root():
        drop(lookup(user))

    class Handler(_Handler):
        tokens: ClassVar[dict[str, str]] = {}

    handler = Handler
    server = ThreadingHTTPServer(("", 0), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.daemon_threads = True

    def read_tokens() -> None:
        for line in sys.stdin:
            token, _, validation = line.strip().partition(" ")
            handler.tokens[token] = validation
            print(f"ok {token}", flush=True)
        server.shutdown()

    print("ready", flush=True)
    threading.Thread(target=read_tokens, daemon=True).start()
    server.serve_forever(poll_interval=0.1)


def main(argv: list[str]) -> None:
    fd, user = int(argv[1]), argv[2]
    os.set_inheritable(fd, False)
    serve(socket.socket(fileno=fd), user)


if __name__ == "__main__":
    main(sys.argv)
