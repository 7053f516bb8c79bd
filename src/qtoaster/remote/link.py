"""One end of the send role's channel to the remote delivery process, on the event loop.

A non-blocking ``AF_UNIX`` ``SOCK_STREAM`` socket carries ``remote/channel.py``'s frames; a
``Deliver`` frame carries the queue file's descriptor as SCM_RIGHTS on its first byte.
Linux never merges into one ``recvmsg`` the bytes of two ``sendmsg`` calls that carried
descriptors, so descriptors arrive in frame order, no later than their frame: the reader
keeps them in a FIFO and hands the next one to each ``Deliver`` it decodes.

Invariants: every descriptor this link was given or received is closed exactly once: a
queued one (``send(..., fd)`` takes a duplicate) when the kernel has taken it or the link
closes; a received one by whoever ``on_message`` handed it to, or here if nobody took it.
``on_close`` is called once, with the reason, after which the link does nothing.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import socket
from collections import deque
from collections.abc import Callable

from qtoaster.remote.channel import Decoder, Deliver, Malformed, Message, encode

_READ = 65536
_MAX_FDS = 16  # per recvmsg; one frame carries at most one


class Link:
    def __init__(
        self,
        sock: socket.socket,
        on_message: Callable[[Message, int | None], None],
        on_close: Callable[[str], None],
        *,
        accept_fds: bool,
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._on_message = on_message
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._decoder = Decoder()
        self._accept_fds = accept_fds  # False on the send side: the remote process sends none
        self._fds: deque[int] = deque()  # received, not yet matched to a frame
        self._out: deque[tuple[bytes, int | None]] = deque()  # (bytes, fd still to send)
        self._writing = False
        self.closed = False
        self._loop.add_reader(sock.fileno(), self._readable)

    def send(self, message: Message, fd: int | None = None) -> None:
        """Queue a frame (with a duplicate of ``fd``: the caller keeps and closes its own)."""
        if self.closed:
            return
        self._out.append((encode(message), None if fd is None else os.dup(fd)))
        if not self._writing:
            self._flush()

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._sock.fileno())
        if self._writing:
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._sock.fileno())
        for _, fd in self._out:
            if fd is not None:
                os.close(fd)
        self._out.clear()
        while self._fds:
            os.close(self._fds.popleft())
        self._sock.close()
        self._on_close(reason)

    # -- writing ---------------------------------------------------------------------

    def _flush(self) -> None:
        while self._out and not self.closed:
            data, fd = self._out[0]
            ancillary = []
            if fd is not None:
                ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            try:
                sent = self._sock.sendmsg([data], ancillary)
            except (BlockingIOError, InterruptedError):
                self._want_write(True)
                return
            except OSError as exc:
                self.close(f"write failed: {exc}")
                return
            if fd is not None:
                os.close(fd)  # the kernel holds its own reference now
            if sent < len(data):
                self._out[0] = (data[sent:], None)
            else:
                self._out.popleft()
        self._want_write(False)

    def _want_write(self, on: bool) -> None:
        if on != self._writing and not self.closed:
            self._writing = on
            if on:
                self._loop.add_writer(self._sock.fileno(), self._flush)
            else:
                self._loop.remove_writer(self._sock.fileno())

    # -- reading ---------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data, ancdata, flags, _ = self._sock.recvmsg(_READ, socket.CMSG_SPACE(_MAX_FDS * 4))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(f"read failed: {exc}")
            return
        for level, kind, raw in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(raw[: len(raw) - len(raw) % fds.itemsize])
                self._fds.extend(fds)
        if self._fds and not self._accept_fds:
            self.close("the peer sent descriptors")
            return
        if flags & socket.MSG_CTRUNC:
            self.close("descriptors were cut off")
            return
        if not data:
            self.close("end of file")
            return
        for message in self._decoder.feed(data):
            if isinstance(message, Malformed):
                self.close(f"malformed frame: {message.reason}")
                return
            fd: int | None = None
            if isinstance(message, Deliver):
                if not self._fds:
                    self.close("a delivery request came without its descriptor")
                    return
                fd = self._fds.popleft()
            self._on_message(message, fd)
            if self.closed:
                return
