"""What a login asks for, done once for the API (api.py) and the web pages (web.py).

Each action checks the login's scope with access.py, asks the executor
(httpd/channel.py) to do the work, and logs a change that succeeded as
``http.change who=... what=... target=...``.  The API parses JSON into these arguments, the
pages parse forms; neither decides who may do what itself.

Invariants: no action reaches the executor before its access check; a refusal is an
:class:`~qtoaster.httpd.channel.OpError` carrying the HTTP status; addresses and domains
are lower-cased before they are compared or logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from qtoaster.auth.client import AuthClient
from qtoaster.core.logfields import fields
from qtoaster.httpd.access import Principal, Sessions, principal_for_login
from qtoaster.httpd.channel import AdminChannel, OpError

log = logging.getLogger("qtoaster.http")
USER_SETTABLE = ("password", "spam_folder")  # what a user may change of itself
ADMIN_SETTABLE = (*USER_SETTABLE, "quota", "flags_add", "flags_clear")
SPAM_FOLDERS = ("junk", "inbox")


@dataclass
class Context:
    channel: AdminChannel
    auth: AuthClient
    admins: tuple[str, ...]
    sessions: Sessions


def changed(who: Principal, what: str, target: str) -> None:
    log.info("http.change %s", fields(who=who.name, what=what, target=target))


def _domain_of(address: str) -> str:
    return address.lower().rpartition("@")[2]


async def password_login(ctx: Context, user: str, password: str, client: str) -> Principal:
    """The login of ``user`` if the auth role accepts ``password`` (service ``http``, so
    the throttle of SMTP and POP3 counts failures); 401 or 503 otherwise."""
    answer = await ctx.auth.verify(
        service="http", mechanism="PLAIN", user=user, secret=password, ip=client
    )
    if answer.temporary:
        log.warning("auth.unavailable %s", fields(client=client, error=answer.reason))
        raise OpError(503, "logins are not possible right now; try again later")
    if not answer.ok:
        log.info(
            "login.failed %s",
            fields(service="http", user=user, client=client, reason=answer.reason),
        )
        raise OpError(401, "wrong user or password")
    log.info("login.ok %s", fields(service="http", user=answer.user, client=client))
    return principal_for_login(answer.user, ctx.admins)


async def domains(ctx: Context, who: Principal, **page: Any) -> Any:
    if who.kind == "user":
        raise OpError(403, "this needs a site or domain administrator")
    only = None if who.kind == "site" else who.domain
    return await ctx.channel.call("domains_list", only=only, **page)


async def domain(ctx: Context, who: Principal, name: str) -> Any:
    who.may_domain(name)
    return await ctx.channel.call("domain_show", name=name)


async def users(ctx: Context, who: Principal, domain: str, usage: bool = False, **page: Any) -> Any:
    """A page of ``domain``'s users (``usage``: with each one's Maildir++ usage)."""
    who.may_administer(domain)
    return await ctx.channel.call("users_page" if usage else "users_list", domain=domain, **page)


async def add_user(
    ctx: Context, who: Principal, domain: str, local: str, password: str | None, quota: Any
) -> Any:
    who.may_administer(domain)
    if not local or "@" in local:
        raise OpError(400, "name: give the local part (alice for alice@DOMAIN)")
    result = await ctx.channel.call(
        "user_add", address=f"{local}@{domain}", password=password, quota=quota
    )
    changed(who, "user.add", result["address"])
    return result


async def user(ctx: Context, who: Principal, address: str) -> Any:
    who.may_user(address)
    return await ctx.channel.call("user_show", address=address)


async def set_user(ctx: Context, who: Principal, address: str, changes: dict[str, Any]) -> Any:
    """Change what ``changes`` names: a user only its password and spam folder."""
    who.may_user(address)
    allowed = USER_SETTABLE if who.kind == "user" else ADMIN_SETTABLE
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise OpError(403 if who.kind == "user" else 400, f"cannot set: {', '.join(unknown)}")
    if "password" in changes and not isinstance(changes["password"], str):
        raise OpError(400, "password: a string")
    if "spam_folder" in changes and changes["spam_folder"] not in SPAM_FOLDERS:
        raise OpError(400, "spam_folder: junk or inbox")
    rest = {k: v for k, v in changes.items() if k != "spam_folder"}
    result = None
    if rest or "spam_folder" not in changes:
        result = await ctx.channel.call("user_set", address=address, **rest)
    if "spam_folder" in changes:
        result = await ctx.channel.call(
            "user_spam_folder", address=address, spam_folder=changes["spam_folder"]
        )
    assert result is not None
    changed(who, "user.set " + ",".join(sorted(changes)), result["address"])
    return result


async def delete_user(ctx: Context, who: Principal, address: str) -> Any:
    who.may_administer(_domain_of(address))
    result = await ctx.channel.call("user_delete", address=address)
    changed(who, "user.delete", result["deleted"])
    return result


async def aliases(ctx: Context, who: Principal, domain: str) -> Any:
    who.may_administer(domain)
    return await ctx.channel.call("aliases_list", domain=domain)


async def add_alias(
    ctx: Context, who: Principal, domain: str, local: str, targets: list[str], keep_copy: bool
) -> Any:
    who.may_administer(domain)
    if not local or "@" in local:
        raise OpError(400, "name: give the local part of the alias")
    address = f"{local}@{domain}".lower()
    result = await ctx.channel.call(
        "alias_add", address=address, targets=targets, keep_copy=keep_copy
    )
    changed(who, "alias.add", address)
    return {"address": address, "targets": result}


async def forwards(ctx: Context, who: Principal, address: str) -> Any:
    address = address.lower()
    who.may_user(address)
    return await ctx.channel.call("aliases_list", domain=_domain_of(address), address=address)


async def set_forwards(
    ctx: Context, who: Principal, address: str, targets: list[str], keep_copy: bool
) -> Any:
    """Replace the address's targets (a user's own forwarding); none removes them."""
    current = await forwards(ctx, who, address)
    address = address.lower()
    if current:
        await ctx.channel.call("alias_delete", address=address)
    result = []
    if targets:
        result = await ctx.channel.call(
            "alias_add", address=address, targets=targets, keep_copy=keep_copy
        )
    changed(who, "alias.set", address)
    return result


async def delete_forwards(ctx: Context, who: Principal, address: str) -> Any:
    address = address.lower()
    who.may_user(address)
    result = await ctx.channel.call("alias_delete", address=address)
    changed(who, "alias.delete", address)
    return result


async def vacation(ctx: Context, who: Principal, address: str) -> Any:
    who.may_user(address)
    return await ctx.channel.call("vacation_show", address=address)


VACATION_FIELDS = ("enabled", "subject", "body", "start", "end", "period")


async def set_vacation(ctx: Context, who: Principal, address: str, data: dict[str, Any]) -> Any:
    """Replace the vacation setting with ``data`` (VACATION_FIELDS; docs/http.md)."""
    who.may_user(address)
    unknown = sorted(set(data) - set(VACATION_FIELDS))
    if unknown:
        raise OpError(400, f"unknown vacation fields: {', '.join(unknown)}")
    result = await ctx.channel.call("vacation_set", address=address, **data)
    changed(who, "vacation.set", address.lower())
    return result


async def vacation_off(ctx: Context, who: Principal, address: str) -> Any:
    who.may_user(address)
    result = await ctx.channel.call("vacation_off", address=address)
    changed(who, "vacation.off", address.lower())
    return result


async def dkim(ctx: Context, who: Principal, domain: str) -> Any:
    """The domain's DKIM keys with the TXT record of each (docs/dkim.md)."""
    who.may_administer(domain)
    return await ctx.channel.call("dkim_list", domain=domain)


DKIM_FIELDS = ("algorithm", "selector", "active")


async def add_dkim(ctx: Context, who: Principal, domain: str, data: dict[str, Any]) -> Any:
    """New keys, as ``qtoaster dkim keygen`` (DKIM_FIELDS; docs/http.md); each logged
    with its record's name, ``SELECTOR._domainkey.DOMAIN``."""
    who.may_administer(domain)
    unknown = sorted(set(data) - set(DKIM_FIELDS))
    if unknown:
        raise OpError(400, f"unknown fields: {', '.join(unknown)}")
    result = await ctx.channel.call("dkim_add", domain=domain, **data)
    for key in result["keys"]:
        changed(who, "dkim.add", key["record"]["name"])
    return result


async def delete_dkim(ctx: Context, who: Principal, domain: str, selector: str) -> Any:
    who.may_administer(domain)
    result = await ctx.channel.call("dkim_delete", domain=domain, selector=selector)
    changed(who, "dkim.delete", result["deleted"]["record"]["name"])
    return result


async def dns(ctx: Context, who: Principal, domain: str) -> Any:
    """Every record the domain should publish, as ``qtoaster dns records`` (docs/dns.md)."""
    who.may_administer(domain)
    return await ctx.channel.call("dns_records", domain=domain)
