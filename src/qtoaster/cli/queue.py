"""``qtoaster queue list|stat|show|delete|retry|hold|release``: look at and operate the queue.

Works with or without a running server: it reads ``queue/mess`` and ``queue/state``
directly (docs/queue.md).  ``list`` follows qmail-qread: one line per message, then one
per recipient marked ``done`` (final result recorded), ``local`` or ``remote``.

``retry``, ``hold`` and ``release`` tell a running queue manager through the trigger
FIFO (qmail-send's SIGALRM for retry); a hold is a mark in ``queue/hold/`` that survives
restarts, so they work whether or not the server is running.  ``retry`` of a held
message is refused (exit 1, naming ``queue release``): the manager would skip it.

Invariants: nothing here writes messages except ``delete``, which asks first (or takes
``--yes``); an unknown id is a one-line error and exit status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from qtoaster.cli.options import home_option
from qtoaster.core.domain import domain_key
from qtoaster.core.home import Home
from qtoaster.queue import state
from qtoaster.queue.format import BadQueueFile, date822
from qtoaster.queue.store import NoSuchMessage, QueuedMessage, QueueStore


def _store(home: Home) -> QueueStore:
    if not (home.queue / "mess").is_dir():
        raise click.ClickException(f"{home.queue}: no queue here (create one with qtoaster init)")
    return QueueStore(home.queue)


def _classifier(home: Home) -> Callable[[str], tuple[str, str]]:
    """recipient -> (rewritten address, "local" | "remote"), as the manager decides.

    Best effort: without readable controls every recipient is shown as it was queued.
    """
    try:
        from qtoaster.config.control import load_controls
        from qtoaster.send.loader import rewrite

        controls = load_controls(home.control)
    except Exception:
        return lambda rcpt: (rcpt, "remote" if "@" in rcpt else "local")
    hosted: Callable[[str], bool] = frozenset().__contains__
    if home.database.exists():
        try:
            from qtoaster.directory.store import Directory

            hosted = Directory.open(home).hosts_domain
        except Exception:
            pass  # the directory is optional here: locals still classify

    def classify(rcpt: str) -> tuple[str, str]:
        address = rewrite(rcpt, controls.envnoathost, controls.percenthack)
        domain = domain_key(address.rpartition("@")[2])
        local = domain in controls.locals or domain in controls.virtualdomains or hosted(domain)
        return address, "local" if local else "remote"

    return classify


def _describe(
    store: QueueStore, qid: str, classify: Callable[[str], tuple[str, str]], held: bool = False
) -> str:
    try:
        msg = store.load(qid)
        done = state.read_state(store.state_path(qid)).done
    except BadQueueFile as exc:
        return f"msg {qid}: unreadable ({exc})"
    lines = [
        f"{date822(msg.birth).replace('-0000', 'GMT')}  msg {qid}: {msg.size} bytes"
        f" from <{msg.envelope.sender}>  ({msg.origin}){'  HELD' if held else ''}"
    ]
    for idx, rcpt in enumerate(msg.envelope.recipients):
        address, kind = classify(rcpt)
        lines.append(f"  {'done' if idx in done else kind:<6}  {address}")
    return "\n".join(lines)


@click.group()
def queue() -> None:
    """Inspect and operate the mail queue."""


@queue.command("list")
@home_option
def list_(home: Home) -> None:
    """Every queued message and its recipients (like qmail-qread)."""
    store = _store(home)
    classify = _classifier(home)
    held = store.held()
    for qid in store.ids():
        try:
            click.echo(_describe(store, qid, classify, qid in held))
        except NoSuchMessage:
            continue  # delivered while we were listing


@queue.command("stat")
@home_option
def stat_(home: Home) -> None:
    """How many messages are queued (like qmail-qstat)."""
    store = _store(home)
    click.echo(f"messages in queue: {len(store.ids())}")
    # qmail-qstat's second line; our commit is also the preprocessing, so always 0.
    click.echo("messages in queue but not yet preprocessed: 0")


@queue.command()
@click.argument("qid")
@home_option
def show(home: Home, qid: str) -> None:
    """The envelope, then the message, of one queued message."""
    store = _store(home)
    msg = _load(store, qid)
    click.echo(f"From: <{msg.envelope.sender}>")
    for rcpt in msg.envelope.recipients:
        click.echo(f"To: <{rcpt}>")
    click.echo(f"Origin: {msg.origin}\nBirth: {date822(msg.birth)}\n")
    with open(msg.path, "rb") as stream:
        stream.seek(msg.body_offset)
        out = sys.stdout.buffer
        while chunk := stream.read(65536):
            out.write(chunk)
        out.flush()


@queue.command()
@click.argument("qid")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@home_option
def delete(home: Home, qid: str, yes: bool) -> None:
    """Remove one message from the queue without delivering or bouncing it."""
    store = _store(home)
    msg = _load(store, qid)
    if not yes:
        click.confirm(
            f"delete msg {qid} from <{msg.envelope.sender}> "
            f"({len(msg.envelope.recipients)} recipients)?",
            abort=True,
        )
    store.release(qid)
    try:
        store.delete(qid)
    except NoSuchMessage:
        raise click.ClickException(f"msg {qid}: not in the queue (delivered meanwhile?)")
    click.echo(f"deleted msg {qid}")


@queue.command()
@click.argument("qid", required=False)
@click.option("--all", "everything", is_flag=True, help="every queued message")
@home_option
def retry(home: Home, qid: str | None, everything: bool) -> None:
    """Deliver now instead of at the next scheduled retry (qmail-send's SIGALRM)."""
    store = _store(home)
    if everything == (qid is not None):
        raise click.UsageError("give one message id or --all")
    held = store.held()
    if qid is not None:
        _load(store, qid)
        if qid in held:
            # The manager skips held messages: saying "retry requested" would be untrue.
            raise click.ClickException(
                f"msg {qid}: held, not retried; release it first: qtoaster queue release {qid}"
            )
    store.notify(f"!{qid or '*'}")
    click.echo(f"retry requested for {f'msg {qid}' if qid else 'every message'}")
    held_queued = sorted(held.intersection(store.ids())) if qid is None else []
    if held_queued:
        click.echo(
            f"{len(held_queued)} held, not retried (qtoaster queue release ID...): "
            + " ".join(held_queued)
        )


@queue.command()
@click.argument("qids", nargs=-1, required=True)
@home_option
def hold(home: Home, qids: tuple[str, ...]) -> None:
    """Stop delivering these messages until released (they stay queued)."""
    store = _store(home)
    for qid in qids:
        try:
            store.hold(qid)
        except NoSuchMessage:
            raise click.ClickException(f"msg {qid}: not in the queue")
        store.notify(f"~{qid}")
        click.echo(f"held msg {qid}")


@queue.command()
@click.argument("qids", nargs=-1, required=True)
@home_option
def release(home: Home, qids: tuple[str, ...]) -> None:
    """Deliver held messages again (at their next scheduled retry; retry for now)."""
    store = _store(home)
    for qid in qids:
        if not store.release(qid):
            raise click.ClickException(f"msg {qid}: not held")
        store.notify(f"~{qid}")
        click.echo(f"released msg {qid}")


def _load(store: QueueStore, qid: str) -> QueuedMessage:
    try:
        return store.load(qid)
    except NoSuchMessage:
        raise click.ClickException(f"msg {qid}: not in the queue")
    except BadQueueFile as exc:
        print(f"msg {qid}: unreadable: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
