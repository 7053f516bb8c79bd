"""The http role's executor: the CLI's operations, asked for over the role's channel
(httpd/channel.py, decision 0025), in the child the executor forks for a burst of
requests (cli/adminfork.py).

The http role parses HTTP as its own user and decides who may do what; this process,
forked by it before it dropped root, does what it is asked with the CLI's code (the
directory, control/rcpthosts, the queue, the token file) and gives what it wrote the
roles' owners as a CLI command run as root does, but without walking domains/: an
operation names the directories it made there (``Executor.made``), and only those get the
mailbox owner, so a write costs the same in a domain of 10,000 users as in one of ten.
It reads only its end of a socketpair:
one JSON request per line, one answer per line, until the channel closes or stays idle.

Invariants: every operation validates its arguments (the same checks as the CLI's: the
directory's names, vpopmail's quota syntax); a failure is an answer with an HTTP status,
never a crash; mail is removed only under ``HOME/domains/`` (dirsupport.remove_mail).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from qtoaster.cli import mailauthops
from qtoaster.cli.adminfork import requests
from qtoaster.cli.controlfiles import edit_rcpthosts
from qtoaster.cli.dirsupport import FLAG_NAMES, credentials_url, database_url, remove_mail
from qtoaster.cli.userbatch import BatchLine, store_batch
from qtoaster.cli.uservacation import parse_period, parse_when
from qtoaster.config.settings import RoleUsers, load_settings
from qtoaster.core.errors import ConfigError, QtoasterError
from qtoaster.core.home import Home
from qtoaster.directory.model import VACATION_PERIOD, Vacation
from qtoaster.directory.schema import UserFlag
from qtoaster.directory.store import (
    NO_FLAGS,
    Directory,
    DirectoryError,
    DomainInfo,
    UserInfo,
    valid_address,
)
from qtoaster.httpd import tokens
from qtoaster.httpd.channel import OpError, encode
from qtoaster.maildir.quota import QuotaSyntaxError, parse_quota, read_maildirsize
from qtoaster.queue.format import BadQueueFile
from qtoaster.queue.store import NoSuchMessage, QueueStore
from qtoaster.supervisor import accounts, ownership

FLAGS = {name: flag for flag, name in FLAG_NAMES}
MAX_BATCH = 10000  # users in one users_batch request
Op = Callable[["Executor", dict[str, Any]], Any]
OPS: dict[str, Op] = {}
WRITES: set[str] = set()


def op(name: str, *, writes: bool = False) -> Callable[[Op], Op]:
    def register(func: Op) -> Op:
        OPS[name] = func
        if writes:
            WRITES.add(name)
        return func

    return register


def _status(exc: DirectoryError) -> int:
    text = str(exc)
    if text.startswith(("unknown ", "no such ")):
        return 404
    if "already exists" in text:
        return 409
    return 422


def _quota(text: str) -> tuple[int | None, int | None]:
    try:
        quota = parse_quota(text)
    except QuotaSyntaxError as exc:
        raise OpError(422, f"invalid {exc}") from exc
    return quota.bytes, quota.messages


def _flags(names: list[str]) -> UserFlag:
    flags = NO_FLAGS
    for name in names:
        if name not in FLAGS:
            raise OpError(422, f"unknown flag {name!r} (known: {', '.join(FLAGS)})")
        flags |= FLAGS[name]
    return flags


def domain_json(info: DomainInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "alias_of": info.alias_of,
        "default_quota": info.default_quota,
        "max_users": info.max_users,
        "catchall": info.unknown_user,
        "users": info.users,
        "aliases": info.aliases,
        "alias_domains": list(info.alias_domains),
        "created": info.created,
    }


def user_json(info: UserInfo, *, usage: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "address": info.address,
        "quota": info.quota,
        "quota_messages": info.quota_messages,
        "flags": [name for flag, name in FLAG_NAMES if info.flags & flag],
        "has_password": info.has_password,
        "created": info.created,
        "spam_folder": "junk" if info.junk_spam else "inbox",
    }
    if usage:
        found = read_maildirsize(info.maildir)
        out["usage"] = None
        if found is not None:
            out["usage"] = {"bytes": found[1].bytes, "messages": found[1].messages}
    return out


class Executor:
    def __init__(self, home: Home) -> None:
        self.home = home
        self.directory = Directory.open(
            home, database_url(home), credentials_url=credentials_url(home)
        )
        self.owners = _role_users(home)
        self.made: list[Path] = []  # what the current write made under domains/

    def answer(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
            func = OPS[request["op"]]
            args = request.get("args") or {}
            if not isinstance(args, dict):
                raise TypeError("args is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            return encode({"error": f"bad request to the executor: {exc}", "status": 400})
        self.made = []
        try:
            result = func(self, args)
        except OpError as exc:
            return encode({"error": exc.message, "status": exc.status})
        except DirectoryError as exc:
            return encode({"error": str(exc), "status": _status(exc)})
        except (QtoasterError, OSError, click.ClickException) as exc:
            return encode({"error": str(exc), "status": 503})
        finally:
            if request.get("op") in WRITES:
                self.give_owners()
        return encode({"ok": result})

    def give_owners(self) -> None:
        """After a write, as a CLI command run as root: the home's layout (a few dozen
        paths), and the mailbox owner for what the operation made under domains/."""
        if self.owners is not None:
            ownership.apply(self.home, self.owners, mailboxes=False)
            ownership.own_mail_trees(self.home, self.owners, self.made)


def _role_users(home: Home) -> RoleUsers | None:
    """The roles' accounts when running as root in a home that has them (else nothing is
    given owners: a home without its accounts is left alone, as cli/options.give_owners)."""
    if os.geteuid() != 0 or not home.settings_file.is_file():
        return None
    try:
        users = load_settings(home.settings_file).users
    except ConfigError:
        return None
    return None if accounts.check_accounts(users) else users


def serve_executor(home: Home, sock: socket.socket, idle: float | None = None) -> None:
    """Answer the http role until it closes the channel or, with ``idle``, until it has
    been silent that many seconds with no request partly read (cli/adminfork.py)."""
    executor = Executor(home)
    try:
        with sock:
            for line in requests(sock, idle):
                sock.sendall(executor.answer(line))
    finally:
        executor.directory.close()


# -- operations ------------------------------------------------------------------------


@op("token_check")
def _token_check(ex: Executor, args: dict[str, Any]) -> Any:
    found = tokens.check(tokens.tokens_file(ex.home.root), str(args["token"]))
    return None if found is None else {"name": found.name, "scope": found.scope}


@op("status")
def _status_op(ex: Executor, args: dict[str, Any]) -> Any:
    store = QueueStore(ex.home.queue)
    return {
        "domains": len(ex.directory.domains()),
        "queue": {"messages": len(store.ids()), "held": len(store.held())},
    }


@op("domains_list")
def _domains_list(ex: Executor, args: dict[str, Any]) -> Any:
    names = ex.directory.domains()
    search = str(args.get("search", "")).lower()
    only = args.get("only")
    names = [n for n in names if search in n and (only is None or n == only)]
    offset, limit = int(args.get("offset", 0)), int(args.get("limit", 50))
    return {"total": len(names), "items": names[offset : offset + limit]}


@op("domain_show")
def _domain_show(ex: Executor, args: dict[str, Any]) -> Any:
    info = ex.directory.domain(str(args["name"]))
    if info is None:
        raise OpError(404, f"unknown domain: {args['name']}")
    return domain_json(info)


@op("domain_add", writes=True)
def _domain_add(ex: Executor, args: dict[str, Any]) -> Any:
    name = str(args["name"]).lower()
    quota = args.get("default_quota")
    default = None if quota is None else _quota(str(quota))[0]
    ex.directory.add_domain(name, default_quota=default, max_users=args.get("max_users"))
    ex.made.append(ex.home.domains / name)  # a new domain: its whole tree is ours
    ex.directory.add_user(f"postmaster@{name}", args.get("postmaster_password"))
    edit_rcpthosts(ex.home, add=name)
    return _domain_show(ex, {"name": name})


@op("domain_delete", writes=True)
def _domain_delete(ex: Executor, args: dict[str, Any]) -> Any:
    info = ex.directory.domain(str(args["name"]))
    if info is None:
        raise OpError(404, f"unknown domain: {args['name']}")
    ex.directory.delete_domain(info.name)
    for hosted in (info.name, *info.alias_domains):
        edit_rcpthosts(ex.home, remove=hosted)
    if info.alias_of is None:
        remove_mail(ex.home, ex.home.domains / info.name)
    return {"deleted": info.name}


@op("domain_catchall", writes=True)
def _domain_catchall(ex: Executor, args: dict[str, Any]) -> Any:
    ex.directory.set_domain(str(args["name"]), unknown_user=str(args["catchall"]))
    return _domain_show(ex, args)


@op("users_list")
def _users_list(ex: Executor, args: dict[str, Any]) -> Any:
    total, page = ex.directory.user_page(
        str(args["domain"]),
        search=str(args.get("search", "")),
        offset=int(args.get("offset", 0)),
        limit=int(args.get("limit", 50)),
    )
    return {"total": total, "items": [user_json(u) for u in page]}


def _user(ex: Executor, address: str) -> UserInfo:
    info = ex.directory.user(address)
    if info is None:
        raise OpError(404, f"unknown user: {address}")
    return info


@op("user_show")
def _user_show(ex: Executor, args: dict[str, Any]) -> Any:
    return user_json(_user(ex, str(args["address"])), usage=True)


@op("user_add", writes=True)
def _user_add(ex: Executor, args: dict[str, Any]) -> Any:
    address = str(args["address"])
    password = args.get("password")
    if password == "":
        raise OpError(422, "the password is empty")
    if args.get("quota") is None:
        ex.directory.add_user(address, password)
    else:
        size, messages = _quota(str(args["quota"]))
        ex.directory.add_user(address, password, size, quota_messages=messages)
    info = _user(ex, address)
    ex.made.append(info.maildir.parent)
    return user_json(info)


def _batch_entry(domain: str, number: int, item: Any) -> BatchLine:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise OpError(422, f"user {number}: give an object with the name (local part)")
    name, password, quota = item["name"], item.get("password"), item.get("quota")
    if "@" in name:
        raise OpError(422, f"user {number}: name is the local part (alice for alice@{domain})")
    if password is not None and not isinstance(password, str):
        raise OpError(422, f"user {number}: password: a string")
    try:
        local, host = valid_address(f"{name}@{domain}")
        limits = None if quota is None else parse_quota(str(quota))
    except DirectoryError as exc:
        raise OpError(422, f"user {number}: {exc}") from exc
    except QuotaSyntaxError as exc:
        raise OpError(422, f"user {number}: invalid {exc}") from exc
    return BatchLine(number, f"{local}@{host}", password or None, limits)


@op("users_batch", writes=True)
def _users_batch(ex: Executor, args: dict[str, Any]) -> Any:
    """Many users of one domain at once, all or none, as ``user add --from-file``: the
    passwords hashed on every core, one transaction, one ownership pass."""
    domain = str(args["domain"]).lower()
    items = args.get("users")
    if not isinstance(items, list) or not items:
        raise OpError(422, "users: give a list of at least one user")
    if len(items) > MAX_BATCH:
        raise OpError(422, f"users: at most {MAX_BATCH} in one request")
    entries = [_batch_entry(domain, n, item) for n, item in enumerate(items, 1)]
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.address in seen:
            raise OpError(
                422, f"user {entry.number}: {entry.address} is already user {seen[entry.address]}"
            )
        seen[entry.address] = entry.number
    try:
        store_batch(ex.directory, entries)
    except click.ClickException as exc:
        text = exc.message.replace("line ", "user ", 1)
        status = 409 if "already exists" in text else 404 if "unknown domain" in text else 422
        raise OpError(status, text) from exc
    ex.made += [ex.home.maildir(domain, e.address.partition("@")[0]).parent for e in entries]
    return {"domain": domain, "added": [e.address for e in entries]}


@op("user_delete", writes=True)
def _user_delete(ex: Executor, args: dict[str, Any]) -> Any:
    info = _user(ex, str(args["address"]))
    ex.directory.delete_user(info.address)
    remove_mail(ex.home, info.maildir.parent)
    return {"deleted": info.address}


@op("user_set", writes=True)
def _user_set(ex: Executor, args: dict[str, Any]) -> Any:
    info = _user(ex, str(args["address"]))
    if "password" in args:
        if args["password"] == "":
            raise OpError(422, "the password is empty")
        ex.directory.set_password(info.address, args["password"])
    changes: dict[str, Any] = {}
    if "quota" in args:
        changes["quota"], changes["quota_messages"] = _quota(str(args["quota"]))
    add = _flags(list(args.get("flags_add", [])))
    clear = _flags(list(args.get("flags_clear", [])))
    if changes or add or clear:
        ex.directory.set_user(info.address, add_flags=add, clear_flags=clear, **changes)
    return user_json(_user(ex, info.address), usage=True)


@op("aliases_list")
def _aliases_list(ex: Executor, args: dict[str, Any]) -> Any:
    found = ex.directory.aliases(str(args["domain"]))
    address = args.get("address")
    if address is not None:
        found = [a for a in found if a.address == str(address).lower()]
    return [{"address": a.address, "target": a.target, "keep_copy": a.keep_copy} for a in found]


@op("alias_add", writes=True)
def _alias_add(ex: Executor, args: dict[str, Any]) -> Any:
    targets = args.get("targets")
    if not isinstance(targets, list) or not targets:
        raise OpError(422, "targets: give a list of at least one address")
    ex.directory.add_alias(
        str(args["address"]), [str(t) for t in targets], bool(args.get("keep_copy"))
    )
    domain = str(args["address"]).rpartition("@")[2]
    return _aliases_list(ex, {"domain": domain, "address": args["address"]})


@op("alias_delete", writes=True)
def _alias_delete(ex: Executor, args: dict[str, Any]) -> Any:
    targets = args.get("targets")
    removed = ex.directory.delete_alias(str(args["address"]), targets)
    return {"deleted": removed}


def _store(ex: Executor) -> QueueStore:
    if not (ex.home.queue / "mess").is_dir():
        raise OpError(503, "no queue in this home")
    return QueueStore(ex.home.queue)


@op("queue_list")
def _queue_list(ex: Executor, args: dict[str, Any]) -> Any:
    store = _store(ex)
    held = store.held()
    items: list[dict[str, Any]] = []
    for qid in store.ids():
        try:
            msg = store.load(qid)
        except NoSuchMessage:
            continue
        except BadQueueFile as exc:
            items.append({"id": qid, "unreadable": str(exc)})
            continue
        items.append(
            {
                "id": qid,
                "sender": msg.envelope.sender,
                "recipients": list(msg.envelope.recipients),
                "size": msg.size,
                "birth": msg.birth,
                "held": qid in held,
            }
        )
    return items


@op("queue_action", writes=True)
def _queue_action(ex: Executor, args: dict[str, Any]) -> Any:
    store = _store(ex)
    qid, action = str(args["id"]), str(args["action"])
    if qid not in store.ids():
        raise OpError(404, f"msg {qid}: not in the queue")
    if action == "hold":
        store.hold(qid)
        store.notify(f"~{qid}")
    elif action == "release":
        if not store.release(qid):
            raise OpError(409, f"msg {qid}: not held")
        store.notify(f"~{qid}")
    elif action == "retry":
        if qid in store.held():
            raise OpError(409, f"msg {qid}: held, not retried; release it first")
        store.notify(f"!{qid}")
    elif action == "delete":
        store.release(qid)
        try:
            store.delete(qid)
        except NoSuchMessage:
            raise OpError(404, f"msg {qid}: not in the queue") from None
    else:
        raise OpError(404, f"unknown queue action {action!r}")
    return {"id": qid, "done": action}


def channel_socket(fd: int) -> socket.socket:
    return socket.socket(fileno=fd)


# -- the web pages' and the self-service operations (docs/http.md) ---------------------


@op("users_page")
def _users_page(ex: Executor, args: dict[str, Any]) -> Any:
    """As users_list, with each user's Maildir++ usage (the pages' quota bars)."""
    total, page = ex.directory.user_page(
        str(args["domain"]),
        search=str(args.get("search", "")),
        offset=int(args.get("offset", 0)),
        limit=int(args.get("limit", 50)),
    )
    return {"total": total, "items": [user_json(u, usage=True) for u in page]}


@op("user_spam_folder", writes=True)
def _user_spam_folder(ex: Executor, args: dict[str, Any]) -> Any:
    folder = args.get("spam_folder")
    if folder not in ("junk", "inbox"):
        raise OpError(422, "spam_folder: junk or inbox")
    info = ex.directory.set_user(str(args["address"]), junk_spam=folder == "junk")
    return user_json(info, usage=True)


def vacation_json(vacation: Vacation | None) -> dict[str, Any]:
    """The API's shape of a setting: times as ISO 8601 UTC (end exclusive), period in s."""
    if vacation is None:
        vacation = Vacation(False, "", "")

    def iso(seconds: int | None) -> str | None:
        if seconds is None:
            return None
        return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")

    return {
        "enabled": vacation.enabled,
        "subject": vacation.subject,
        "body": vacation.body,
        "start": iso(vacation.starts),
        "end": iso(vacation.ends),
        "period": vacation.period,
    }


def _when(value: Any, *, end: bool) -> int | None:
    """A date (UTC day; an end date includes its day), an ISO time, or None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise OpError(422, f"{'end' if end else 'start'}: a date (YYYY-MM-DD) or an ISO time")
    try:
        return parse_when(value.replace("Z", "+00:00"), end=end)
    except click.BadParameter as exc:
        raise OpError(422, f"{'end' if end else 'start'}: {exc.message}") from None


def _period(value: Any) -> int:
    if value is None:
        return VACATION_PERIOD
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return parse_period(str(value))
    except click.BadParameter as exc:
        raise OpError(422, f"period: {exc.message}") from None


@op("vacation_show")
def _vacation_show(ex: Executor, args: dict[str, Any]) -> Any:
    return vacation_json(ex.directory.vacation(str(args["address"])))


@op("vacation_set", writes=True)
def _vacation_set(ex: Executor, args: dict[str, Any]) -> Any:
    """Replace the setting; absent fields take their defaults (on, no bounds, 7 days)."""
    subject, body = args.get("subject", ""), args.get("body", "")
    if not isinstance(subject, str) or not isinstance(body, str):
        raise OpError(422, "subject and body: strings")
    vacation = Vacation(
        enabled=bool(args.get("enabled", True)),
        subject=subject,
        body=body,
        starts=_when(args.get("start"), end=False),
        ends=_when(args.get("end"), end=True),
        period=_period(args.get("period")),
    )
    return vacation_json(ex.directory.set_vacation(str(args["address"]), vacation))


@op("vacation_off", writes=True)
def _vacation_off(ex: Executor, args: dict[str, Any]) -> Any:
    return vacation_json(ex.directory.vacation_off(str(args["address"])))


# -- DKIM keys and DNS records (cli/mailauthops.py) -------------------------------------


@op("dkim_list")
def _dkim_list(ex: Executor, args: dict[str, Any]) -> Any:
    return mailauthops.dkim_list(ex.home, ex.directory, str(args["domain"]))


@op("dkim_add", writes=True)
def _dkim_add(ex: Executor, args: dict[str, Any]) -> Any:
    return mailauthops.dkim_add(ex.home, ex.directory, str(args["domain"]), args)


@op("dkim_delete", writes=True)
def _dkim_delete(ex: Executor, args: dict[str, Any]) -> Any:
    return mailauthops.dkim_delete(
        ex.home, ex.directory, str(args["domain"]), str(args["selector"])
    )


@op("dns_records")
def _dns_records(ex: Executor, args: dict[str, Any]) -> Any:
    return mailauthops.dns_records(ex.home, ex.directory, str(args["domain"]))
