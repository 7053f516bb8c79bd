"""The web pages themselves (docs/http.md "Web pages"), one handler per page or form.

- ``/domains``: the site administrator's domains, paged and searched;
- ``/domains/{domain}``: a domain's users (paged in the database, searched, each with a
  quota bar), add a user, its aliases (add, delete), the DNS records it should publish;
- ``/users/{address}``: one user: password, forwarding, vacation reply, spam folder, and
  for administrators its quota and its deletion.

Every change is an action of actions.py (the API's access rules and change log); a form
posts, the answer redirects back with a fixed "done" text (POST/redirect/GET).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from qtoaster.httpd import actions
from qtoaster.httpd.actions import Context
from qtoaster.httpd.api import page as paging
from qtoaster.httpd.channel import OpError
from qtoaster.httpd.web import Visit, form, login_page, logout, redirect, render
from qtoaster.httpd.web import page as route_page

PAGE_SIZE = 50


def _paging(visit: Visit) -> dict[str, Any]:
    found = paging(visit.request)
    if "limit" not in visit.request.query_params:
        found["limit"] = PAGE_SIZE
    return found


def _pages(total: int, offset: int, limit: int) -> dict[str, Any]:
    return {
        "total": total,
        "offset": offset,
        "limit": limit,
        "first": offset + 1 if total else 0,
        "last": min(offset + limit, total),
        "previous": max(offset - limit, 0) if offset > 0 else None,
        "next": offset + limit if offset + limit < total else None,
    }


async def domains_page(visit: Visit) -> Response:
    visit.who.may_site()
    query = _paging(visit)
    found = await actions.domains(visit.ctx, visit.who, **query)
    return render(
        visit.request,
        "domains.html",
        session=visit.session,
        domains=found["items"],
        search=query["search"],
        pages=_pages(found["total"], query["offset"], query["limit"]),
    )


async def domain_page(visit: Visit) -> Response:
    name = visit.request.path_params["domain"].lower()
    query = _paging(visit)
    found = await actions.users(visit.ctx, visit.who, name, usage=True, **query)
    info = await actions.domain(visit.ctx, visit.who, name)
    aliases = await actions.aliases(visit.ctx, visit.who, name)
    grouped: dict[str, list[str]] = {}
    for alias in aliases:
        grouped.setdefault(alias["address"], []).append(alias["target"])
    try:
        dns, dns_error = await actions.dns(visit.ctx, visit.who, name), None
    except OpError as exc:  # the rest of the page is still of use
        dns, dns_error = None, exc.message
    return render(
        visit.request,
        "domain.html",
        session=visit.session,
        domain=info,
        users=found["items"],
        aliases=sorted(grouped.items()),
        dns=dns,
        dns_error=dns_error,
        search=query["search"],
        pages=_pages(found["total"], query["offset"], query["limit"]),
    )


async def user_add(visit: Visit) -> Response:
    domain = visit.request.path_params["domain"].lower()
    data = await form(visit)
    quota = data.get("quota", "").strip() or None
    password = data.get("password") or None
    await actions.add_user(
        visit.ctx, visit.who, domain, data.get("name", "").strip(), password, quota
    )
    return redirect(f"/domains/{domain}", "user.add")


async def alias_add(visit: Visit) -> Response:
    domain = visit.request.path_params["domain"].lower()
    data = await form(visit)
    targets = data.get("targets", "").split()
    if not targets:
        raise OpError(400, "Give at least one target address.")
    local = data.get("name", "").strip()
    await actions.add_alias(visit.ctx, visit.who, domain, local, targets, "keep_copy" in data)
    return redirect(f"/domains/{domain}", "alias.add")


async def alias_delete(visit: Visit) -> Response:
    domain = visit.request.path_params["domain"].lower()
    address = (await form(visit)).get("address", "")
    if address.rpartition("@")[2].lower() != domain:
        raise OpError(400, f"{address}: not an alias of {domain}")
    await actions.delete_forwards(visit.ctx, visit.who, address)
    return redirect(f"/domains/{domain}", "alias.delete")


def _day(iso: str | None, *, end: bool) -> str:
    """An API time as the form's date (an end is exclusive, the form's end day is not)."""
    if iso is None:
        return ""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if end:
        moment -= timedelta(seconds=1)
    return moment.date().isoformat()


def _period(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


async def user_page(visit: Visit) -> Response:
    address = visit.request.path_params["address"].lower()
    info = await actions.user(visit.ctx, visit.who, address)
    vacation = await actions.vacation(visit.ctx, visit.who, address)
    forwards = await actions.forwards(visit.ctx, visit.who, address)
    return render(
        visit.request,
        "user.html",
        session=visit.session,
        user=info,
        domain=address.rpartition("@")[2],
        admin=visit.who.kind != "user",
        vacation=vacation,
        start=_day(vacation["start"], end=False),
        end=_day(vacation["end"], end=True),
        period=_period(vacation["period"]),
        forwards=[f["target"] for f in forwards],
        keep_copy=any(f["keep_copy"] for f in forwards),
    )


def _address(visit: Visit) -> str:
    return str(visit.request.path_params["address"]).lower()


async def user_quota(visit: Visit) -> Response:
    quota = (await form(visit)).get("quota", "").strip()
    if not quota:
        raise OpError(400, "Give a quota: 500M, 1G, 10M,1000C or NOQUOTA.")
    await actions.set_user(visit.ctx, visit.who, _address(visit), {"quota": quota})
    return redirect(f"/users/{_address(visit)}", "quota")


async def user_password(visit: Visit) -> Response:
    data = await form(visit)
    password = data.get("password", "")
    if not password:
        raise OpError(400, "Give the new password.")
    if password != data.get("again", ""):
        raise OpError(400, "The two passwords differ.")
    await actions.set_user(visit.ctx, visit.who, _address(visit), {"password": password})
    return redirect(f"/users/{_address(visit)}", "password")


async def user_forwards(visit: Visit) -> Response:
    data = await form(visit)
    targets = data.get("targets", "").split()
    keep = "keep_copy" in data
    await actions.set_forwards(visit.ctx, visit.who, _address(visit), targets, keep)
    return redirect(f"/users/{_address(visit)}", "forwards")


async def user_vacation(visit: Visit) -> Response:
    data = await form(visit)
    address = _address(visit)
    if "off" in data:
        await actions.vacation_off(visit.ctx, visit.who, address)
        return redirect(f"/users/{address}", "vacation.off")
    setting = {
        "enabled": "enabled" in data,
        "subject": data.get("subject", "").strip(),
        "body": data.get("body", "").replace("\r\n", "\n"),
        "start": data.get("start") or None,
        "end": data.get("end") or None,
        "period": data.get("period", "").strip() or None,
    }
    await actions.set_vacation(visit.ctx, visit.who, address, setting)
    return redirect(f"/users/{address}", "vacation")


async def user_spam(visit: Visit) -> Response:
    folder = (await form(visit)).get("spam_folder", "")
    await actions.set_user(visit.ctx, visit.who, _address(visit), {"spam_folder": folder})
    return redirect(f"/users/{_address(visit)}", "spam")


async def user_delete(visit: Visit) -> Response:
    address = _address(visit)
    await actions.delete_user(visit.ctx, visit.who, address)
    return redirect(f"/domains/{address.rpartition('@')[2]}", "user.delete")


def routes(ctx: Context) -> list[BaseRoute]:
    """The pages' routes, for api.make_app(pages=...)."""
    get = [
        ("/domains", domains_page),
        ("/domains/{domain}", domain_page),
        ("/users/{address}", user_page),
    ]
    post = [
        ("/logout", logout),
        ("/domains/{domain}/users", user_add),
        ("/domains/{domain}/aliases", alias_add),
        ("/domains/{domain}/aliases/delete", alias_delete),
        ("/users/{address}/quota", user_quota),
        ("/users/{address}/password", user_password),
        ("/users/{address}/forwards", user_forwards),
        ("/users/{address}/vacation", user_vacation),
        ("/users/{address}/spam", user_spam),
        ("/users/{address}/delete", user_delete),
    ]
    found: list[BaseRoute] = [Route("/", login_page(ctx), methods=["GET", "POST"])]
    found += [Route(path, route_page(ctx, h), methods=["GET"]) for path, h in get]
    found += [Route(path, route_page(ctx, h), methods=["POST"]) for path, h in post]
    return found
