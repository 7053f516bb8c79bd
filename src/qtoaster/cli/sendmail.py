"""``qtoaster-sendmail`` / ``qtoaster sendmail``: the sendmail interface, qmail-inject style.

Flags as qmail's sendmail wrapper takes them (getopt string ``vimte:f:p:o:B:F:EJxb:``
plus N:, R:, V:, X:, L: accepted and ignored): ``-f sender``, ``-F fullname``, ``-t``
(recipients from To/Cc/Bcc, Bcc removed; command-line recipients are added to them),
``-i``/``-oi`` (a lone ``.`` does not end the input), ``-oXXX`` ignored, ``-bm`` the
default; ``-bs``/``-bp`` are refused; ``-h`` or ``--help`` among the options prints
:data:`USAGE` and exits 0.  Parsed by hand: click would mangle ``-oi``.

The message gets what qmail-inject adds when missing: ``Date:``, ``Message-ID:`` and
``From:``.  Envelope sender: ``-f`` (which also sets QMAILUSER/QMAILHOST and drops
the name variables, spec 23.3), else QMAILSUSER/QMAILUSER/MAILUSER/USER/LOGNAME @
QMAILSHOST/QMAILHOST/MAILHOST/control/me.  An envelope address (sender or recipient,
from the arguments or from -t) holding CR, LF or NUL is refused: ``bad address syntax``,
exit 100.  Exit 0 when queued; 100 permanent, 111
temporary error, with a message on stderr (qmail-inject's convention).
"""

from __future__ import annotations

import getpass
import itertools
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import BinaryIO

import click

from qtoaster.cli.inject import queue_fsync, unsafe_address
from qtoaster.core.envelope import Envelope, decode, encode
from qtoaster.core.errors import ConfigError, QtoasterError, QueueError
from qtoaster.core.home import Home
from qtoaster.queue import exitcodes
from qtoaster.queue.format import date822, received_line
from qtoaster.queue.store import QueueStore, commit_message

EXIT_PERMANENT = 100
EXIT_TEMPORARY = 111
_WITH_ARGUMENT = set("efpoBFbNRVXL")
_IGNORED = set("vimxEJ")


# What parse_args accepts, said plainly: keep it in step with the parser below.
USAGE = """\
usage: qtoaster sendmail [--home DIR] [-f SENDER] [-F FULLNAME] [-t] [-i] [--] [RECIPIENT...]

Queue the message read on stdin (qmail-inject style: Date, Message-ID and From are added
when missing).

  --home DIR    the qtoaster home (default: $QTOASTER_HOME, else ./qtoaster-home)
  -f SENDER     envelope sender (-f '<>' for none)
  -F FULLNAME   the name in the From: line added when the message has none
  -t            recipients also from To, Cc and Bcc (Bcc is removed)
  -i, -oi       a line holding only "." does not end the message
  -bm           deliver mail (the default); -bs and -bp are not supported
  -h, --help    this text
  ignored: -v -m -x -E -J, -e/-p/-B/-N/-R/-V/-X/-L with their argument, other -oX
  exit status: 0 queued, 100 permanent error, 111 temporary error (qmail-inject's)
"""


class UsageError(QtoasterError):
    pass


@dataclass
class Options:
    sender: str | None = None
    fullname: str | None = None
    from_headers: bool = False
    dot_ends: bool = True
    recipients: list[str] = field(default_factory=list)
    home: str | None = None
    help: bool = False


def parse_args(args: Sequence[str]) -> Options:
    """sendmail's command line, getopt style: clusters, ``-fADDR`` or ``-f ADDR``, ``--``."""
    opts = Options()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if arg in ("-h", "--help"):
            opts.help = True  # sendmail's -h (hop count) is not qmail's either: help
            i += 1
            continue
        if arg == "--home" or arg.startswith("--home="):
            if arg == "--home":
                i += 1
                if i >= len(args):
                    raise UsageError("--home needs a directory")
            opts.home = arg[7:] if arg.startswith("--home=") else args[i]
            i += 1
            continue
        if not arg.startswith("-") or arg == "-":
            break
        pos = 1
        while pos < len(arg):
            letter = arg[pos]
            pos += 1
            if letter in _WITH_ARGUMENT:
                if pos < len(arg):
                    value, pos = arg[pos:], len(arg)
                else:
                    i += 1
                    if i >= len(args):
                        raise UsageError(f"option -{letter} needs an argument")
                    value = args[i]
                _apply(opts, letter, value)
            elif letter == "t":
                opts.from_headers = True
            elif letter == "i":
                opts.dot_ends = False
            elif letter not in _IGNORED:
                raise UsageError(f"unknown option -{letter}")
        i += 1
    opts.recipients.extend(args[i:])
    return opts


def _apply(opts: Options, letter: str, value: str) -> None:
    if letter == "f":
        opts.sender = "" if value in ("<>", "") else value.strip("<>")
    elif letter == "F":
        opts.fullname = value
    elif letter == "o" and value.startswith("i"):
        opts.dot_ends = False  # -oi: "." alone is text, like -i
    elif letter == "b" and value[:1] in ("s", "p"):
        raise UsageError(f"-b{value}: not supported; use qtoaster queue list or SMTP")
    elif letter == "b" and value[:1] != "m":
        raise UsageError(f"unknown mode -b{value}")


def read_message(stream: BinaryIO, dot_ends: bool) -> list[bytes]:
    """Lines ending in LF (one is added to a last line without); without -i a line
    holding only ``.`` ends the input."""
    lines = []
    for raw in stream:
        line = raw.rstrip(b"\r\n") + b"\n"  # CRLF from the caller becomes LF in the queue
        if dot_ends and line == b".\n":
            break
        lines.append(line)
    return lines


def split_header(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Header lines (continuations kept with their field) and the rest, blank line included."""
    for n, line in enumerate(lines):
        if line in (b"\n", b""):
            return lines[:n], lines[n:]
        if line[:1] in (b" ", b"\t") and n > 0:
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not name or any(c <= 32 or c > 126 for c in name):
            return lines[:n], [b"\n", *lines[n:]]
    return lines, [b"\n"] if lines else []


def header_fields(header: list[bytes]) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value) for every field."""
    fields: list[tuple[str, str]] = []
    for line in header:
        text = decode(line)
        if text[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + " " + text.strip())
        else:
            name, _, value = text.partition(":")
            fields.append((name.strip().lower(), value.strip()))
    return fields


def drop_fields(header: list[bytes], name: str) -> list[bytes]:
    kept: list[bytes] = []
    dropping = False
    for line in header:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.split(b":", 1)[0].strip().lower() == name.encode()
        if not dropping:
            kept.append(line)
    return kept


def identity(opts: Options, env: Mapping[str, str], me: str) -> tuple[str, str, str | None]:
    """(envelope sender, From: address, full name) the qmail-inject way."""
    env = dict(env)
    if opts.sender:  # spec 23.3: -f wins over the environment
        for variable in ("QMAILNAME", "MAILNAME", "NAME", "QMAILHOST", "MAILHOST"):
            env.pop(variable, None)
        user, _, host = opts.sender.rpartition("@")
        env["QMAILUSER"], env["QMAILHOST"] = (user, host) if user else (opts.sender, me)

    def first(*names: str) -> str | None:
        return next((env[n] for n in names if env.get(n)), None)

    user = first("QMAILUSER", "MAILUSER", "USER", "LOGNAME") or getpass.getuser()
    host = first("QMAILHOST", "MAILHOST") or me
    from_address = f"{user}@{host}"
    sender = f"{first('QMAILSUSER') or user}@{first('QMAILSHOST') or host}"
    if opts.sender is not None:
        sender = opts.sender
    fullname = opts.fullname or first("QMAILNAME", "NAME", "MAILNAME")
    return sender, from_address, fullname


def _addresses(values: list[str]) -> list[tuple[str, str]]:
    """The addresses of To/Cc/Bcc the way qmail-inject reads them, on every Python: the
    CVE-2023-27043 backports (Debian's 3.11.2) made getaddresses strict by default and give
    ('', '') for what older releases read leniently. Strictness protects a reader of
    untrusted mail; here the sender names the recipients anyway, so it guards nothing, and
    the envelope is checked for CR, LF and NUL afterwards whatever the parser did."""
    try:
        return getaddresses(values, strict=False)  # type: ignore[call-arg,unused-ignore]
    except TypeError:  # a Python without the backport: lenient already
        return getaddresses(values)


def compose(
    opts: Options, lines: list[bytes], env: Mapping[str, str], me: str, now: float
) -> tuple[Envelope, list[bytes]]:
    """The envelope and the message with the header fields qmail-inject adds."""
    header, rest = split_header(lines)
    fields = header_fields(header)
    present = {name for name, _ in fields}
    sender, from_address, name = identity(opts, env, me)
    recipients = list(opts.recipients)
    if opts.from_headers:
        values = [v for n, v in fields if n in ("to", "cc", "bcc")]
        recipients += [addr for _, addr in _addresses(values) if addr]
        header = drop_fields(header, "bcc")
    if not recipients:
        raise UsageError("no recipients")
    envelope = Envelope(sender, tuple(recipients))
    bad = unsafe_address(envelope)
    if bad is not None:
        # CR/LF would end a header line in Return-Path or Delivered-To; NUL ends the
        # address in the queue's envelope.  -f, the arguments and -t's headers alike.
        raise UsageError(f"bad address syntax: {bad!r}")
    added = []
    if "date" not in present:
        added.append(f"Date: {date822(now)}\n")
    if "message-id" not in present:
        added.append(f"Message-ID: <{int(now)}.{os.getpid()}.qmail@{me}>\n")
    if "from" not in present:
        added.append(f"From: {name} <{from_address}>\n" if name else f"From: {from_address}\n")
    message = header + [encode(a) for a in added] + rest
    return envelope, message


def run(
    args: Sequence[str], stdin: BinaryIO, env: Mapping[str, str], home: Home | None = None
) -> int:
    """The whole command; returns the exit status (messages go to stderr)."""
    try:
        opts = parse_args(args)
    except UsageError as exc:
        return _fail(str(exc), EXIT_PERMANENT)
    if opts.help:
        sys.stdout.write(USAGE)
        return 0
    home = home or Home.resolve(opts.home)
    from qtoaster.config.control import read_line

    me = read_line(home.control / "me")
    if not me:
        return _fail(f"unable to read controls ({home.control / 'me'})", EXIT_TEMPORARY)
    if not (home.queue / "mess").is_dir():
        return _fail(f"{home.queue}: no queue here", EXIT_TEMPORARY)
    try:
        store = QueueStore(home.queue, fsync=queue_fsync(home))
        now = store.clock.time()
        lines = read_message(stdin, opts.dot_ends)
        envelope, message = compose(opts, lines, env, me, now)
        head = received_line(f"by uid {os.getuid()}", os.getpid(), now)
        commit_message(
            store, envelope, f"sendmail uid {os.getuid()}", itertools.chain((head,), message)
        )
    except UsageError as exc:
        return _fail(str(exc), EXIT_PERMANENT)
    except ConfigError as exc:
        return _fail(f"unable to read configuration: {exc}", EXIT_TEMPORARY)
    except QueueError as exc:
        permanent = exitcodes.is_permanent(exc.code)
        return _fail(
            exitcodes.text_for(exc.code)[1:], EXIT_PERMANENT if permanent else EXIT_TEMPORARY
        )
    except OSError as exc:
        return _fail(f"unable to read the message: {exc}", EXIT_TEMPORARY)
    return 0


def _fail(message: str, status: int) -> int:
    print(f"sendmail: fatal: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``qtoaster-sendmail`` console script."""
    sys.exit(run(sys.argv[1:] if argv is None else argv, sys.stdin.buffer, os.environ))


@click.command(
    "sendmail",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sendmail(args: tuple[str, ...]) -> None:
    """sendmail-compatible injection: [--home DIR] [-f sender] [-F name] [-t] [-i] [rcpt...]"""
    sys.exit(run(args, sys.stdin.buffer, os.environ))
