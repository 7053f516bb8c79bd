"""``qtoaster queue-inject``: the qmail-queue protocol (qmail-queue(8), spec 13-14).

The message arrives on fd 0, then the envelope ``F<sender>\\0(T<rcpt>\\0)*\\0`` on
fd 1; the answer is only the exit code, from qmail-queue's table (queue.exitcodes):
0 queued; 11 address too long; 91 bad envelope (also CR or LF in an address, which
would end a header line in Return-Path or Delivered-To); 53 write error or disk full;
54 read error (also an envelope cut short, as qmail-queue's die_read); 55 bad
configuration; 61 no queue in the home; 81 internal bug.

Invariants: the message is read completely before the envelope (the writer sends them
in that order and may block on fd 0 otherwise); it waits in an unnamed temporary file
in ``queue/tmp`` so nothing is left after a crash; the commit goes through the same
QueueStore code as smtpd; it needs no running server.  Nothing is written to fd 1.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from typing import BinaryIO

import click

from qtoaster.cli.options import home_option
from qtoaster.core.address import breaks_envelope
from qtoaster.core.envelope import Envelope
from qtoaster.core.errors import ConfigError, QueueError
from qtoaster.core.home import Home
from qtoaster.queue import exitcodes
from qtoaster.queue.format import MAX_ADDRESS, EnvelopeError, received_line, scan_envelope
from qtoaster.queue.store import QueueStore, commit_message

_CHUNK = 65536


def queue_fsync(home: Home) -> bool:
    """``[queue] fsync`` from qtoaster.toml (true when the file is absent)."""
    if not home.settings_file.exists():
        return True
    from qtoaster.config.settings import load_settings

    return load_settings(home.settings_file).fsync


def unsafe_address(envelope: Envelope) -> str | None:
    """The first address holding CR, LF or NUL (core.address.breaks_envelope), else None."""
    return next((a for a in (envelope.sender, *envelope.recipients) if breaks_envelope(a)), None)


def read_envelope(fd: int) -> Envelope:
    """Read fd until the envelope's terminating NUL; EnvelopeError(11|91|54)."""
    raw = b""
    while True:
        scanned = scan_envelope(raw)
        if scanned is not None:
            if unsafe_address(scanned[0]) is not None:
                # qmail-queue took any byte but NUL; a CR or LF is a header injection.
                raise EnvelopeError(exitcodes.BAD_ENVELOPE, "CR or LF in an envelope address")
            return scanned[0]
        try:
            chunk = os.read(fd, _CHUNK)
        except OSError as exc:
            raise EnvelopeError(exitcodes.READ_ERROR, f"reading envelope: {exc}") from None
        if not chunk:
            raise EnvelopeError(exitcodes.READ_ERROR, "envelope cut short")
        raw += chunk
        if len(raw) > 64 * 1024 * 1024 + MAX_ADDRESS:
            raise EnvelopeError(exitcodes.BAD_ENVELOPE, "envelope too large")


def _copy_message(fd: int, into: BinaryIO) -> None:
    while True:
        try:
            chunk = os.read(fd, _CHUNK)
        except OSError as exc:
            raise QueueError(exitcodes.READ_ERROR, f"reading message: {exc}") from None
        if not chunk:
            return
        try:
            into.write(chunk)
        except OSError as exc:
            raise QueueError(exitcodes.WRITE_ERROR, f"spooling message: {exc}") from None


def inject(home: Home, message_fd: int = 0, envelope_fd: int = 1) -> int:
    """Queue one message the qmail-queue way; return qmail-queue's exit code."""
    try:
        fsync = queue_fsync(home)
    except ConfigError:
        return exitcodes.CONFIG_ERROR
    if not (home.queue / "mess").is_dir():
        return exitcodes.HOME_ERROR
    store = QueueStore(home.queue, fsync=fsync)
    uid = os.getuid()
    try:
        with tempfile.TemporaryFile(dir=store.tmp) as spooled:
            _copy_message(message_fd, spooled)
            envelope = read_envelope(envelope_fd)
            spooled.seek(0)
            head = received_line(f"by uid {uid}", os.getpid(), store.clock.time())
            body = iter(lambda: spooled.read(_CHUNK), b"")
            commit_message(store, envelope, f"inject uid {uid}", itertools.chain((head,), body))
    except EnvelopeError as exc:
        return exc.code
    except QueueError as exc:
        return exc.code
    except OSError:
        return exitcodes.WRITE_ERROR
    except Exception:
        return exitcodes.INTERNAL_BUG
    return exitcodes.OK


@click.command("queue-inject")
@home_option
def queue_inject(home: Home) -> None:
    """Queue a message: message on fd 0, envelope on fd 1 (qmail-queue's protocol)."""
    sys.exit(inject(home))
