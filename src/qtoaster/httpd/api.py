"""The JSON API under /api/v1 (docs/http.md): routes, logins, refusals, the change log.

Each handler finds the request's :class:`~qtoaster.httpd.access.Principal` (a Bearer token,
else the session cookie), checks the login's scope, and asks the executor
(httpd/channel.py) to do the work.  Errors are ``{"error": TEXT}`` with 400 (malformed
JSON or parameter), 401 (no or bad login), 403 (outside the login's scope, CSRF token
missing), 404, 405, 409 (exists already, not held), 422 (a value the directory refuses).

Invariants: every change that succeeded is logged once, ``http.change who=... what=...``,
with the login that made it; a password login goes through the auth role (service
``http``), so the login throttle of SMTP and POP3 applies to it too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from qtoaster.httpd import actions
from qtoaster.httpd.access import Principal, csrf_ok, principal_for_token
from qtoaster.httpd.actions import Context, changed
from qtoaster.httpd.channel import OpError

log = logging.getLogger("qtoaster.http")
COOKIE = "qtoaster_session"
SAFE = ("GET", "HEAD", "OPTIONS")
MAX_LIMIT = 500


Handler = Callable[[Request, Context, Principal], Awaitable[Any]]


def error(status: int, text: str) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=status)


async def body(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise OpError(400, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise OpError(400, "the body is not a JSON object")
    return data


def page(request: Request) -> dict[str, Any]:
    try:
        offset = int(request.query_params.get("offset", "0"))
        limit = int(request.query_params.get("limit", "50"))
    except ValueError:
        raise OpError(400, "offset and limit are integers") from None
    if offset < 0 or not 0 < limit <= MAX_LIMIT:
        raise OpError(400, f"offset >= 0 and 0 < limit <= {MAX_LIMIT}")
    return {"offset": offset, "limit": limit, "search": request.query_params.get("search", "")}


async def principal(request: Request, ctx: Context) -> Principal:
    """The login of ``request`` (401 without one); CSRF checked for cookie logins."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise OpError(401, "Authorization: give Bearer TOKEN")
        found = await ctx.channel.call("token_check", token=token.strip())
        if found is None:
            raise OpError(401, "unknown token")
        return principal_for_token(found["name"], found["scope"])
    session = ctx.sessions.get(request.cookies.get(COOKIE, ""))
    if session is None:
        raise OpError(401, "log in first (POST /api/v1/login) or give a Bearer token")
    if request.method not in SAFE and not csrf_ok(session, request.headers.get("x-csrf-token")):
        raise OpError(403, "missing or wrong X-CSRF-Token (see GET /api/v1/me)")
    return session.principal


def endpoint(ctx: Context, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            who = await principal(request, ctx)
            result = await handler(request, ctx, who)
        except OpError as exc:
            return error(exc.status, exc.message)
        status = 201 if request.method == "POST" and isinstance(result, dict) else 200
        return JSONResponse(result, status_code=status)

    return run


# -- handlers ----------------------------------------------------------------------------


async def me(request: Request, ctx: Context, who: Principal) -> Any:
    session = ctx.sessions.get(request.cookies.get(COOKIE, ""))
    return {
        "login": who.name,
        "kind": who.kind,
        "domain": who.domain,
        "csrf_token": session.csrf if session is not None else None,
    }


async def status(request: Request, ctx: Context, who: Principal) -> Any:
    who.may_site()
    return await ctx.channel.call("status")


async def domains_list(request: Request, ctx: Context, who: Principal) -> Any:
    return await actions.domains(ctx, who, **page(request))


async def domain_add(request: Request, ctx: Context, who: Principal) -> Any:
    who.may_site()
    data = await body(request)
    if not isinstance(data.get("name"), str):
        raise OpError(400, "name: give the domain's name")
    args = {
        k: data[k]
        for k in ("name", "default_quota", "max_users", "postmaster_password")
        if k in data
    }
    result = await ctx.channel.call("domain_add", **args)
    changed(who, "domain.add", result["name"])
    return result


async def domain_show(request: Request, ctx: Context, who: Principal) -> Any:
    return await actions.domain(ctx, who, request.path_params["domain"])


async def domain_delete(request: Request, ctx: Context, who: Principal) -> Any:
    who.may_site()
    name = request.path_params["domain"]
    result = await ctx.channel.call("domain_delete", name=name)
    changed(who, "domain.delete", name)
    return result


async def domain_catchall(request: Request, ctx: Context, who: Principal) -> Any:
    name = request.path_params["domain"]
    who.may_domain(name)
    data = await body(request)
    if not isinstance(data.get("catchall"), str):
        raise OpError(400, "catchall: give an address, bounce or delete")
    result = await ctx.channel.call("domain_catchall", name=name, catchall=data["catchall"])
    changed(who, "domain.catchall", name)
    return result


async def users_list(request: Request, ctx: Context, who: Principal) -> Any:
    return await actions.users(ctx, who, request.path_params["domain"], **page(request))


async def user_add(request: Request, ctx: Context, who: Principal) -> Any:
    domain = request.path_params["domain"]
    who.may_administer(domain)
    data = await body(request)
    local = data.get("name")
    if not isinstance(local, str):
        raise OpError(400, "name: give the local part (alice for alice@DOMAIN)")
    password = data.get("password")
    if password is not None and not isinstance(password, str):
        raise OpError(400, "password: a string")
    return await actions.add_user(ctx, who, domain, local, password, data.get("quota"))


async def users_batch(request: Request, ctx: Context, who: Principal) -> Any:
    """Many users at once, all or none (as ``user add --from-file``): one login check,
    the passwords hashed on every core by the executor, one transaction."""
    domain = request.path_params["domain"]
    if who.kind == "user":
        raise OpError(403, "this needs a site or domain administrator")
    who.may_domain(domain)
    data = await body(request)
    result = await ctx.channel.call("users_batch", domain=domain, users=data.get("users"))
    for address in result["added"]:
        changed(who, "user.add", address)
    return result


async def user_show(request: Request, ctx: Context, who: Principal) -> Any:
    return await actions.user(ctx, who, request.path_params["address"])


async def user_set(request: Request, ctx: Context, who: Principal) -> Any:
    address = request.path_params["address"]
    who.may_user(address)
    return await actions.set_user(ctx, who, address, await body(request))


async def user_delete(request: Request, ctx: Context, who: Principal) -> Any:
    return await actions.delete_user(ctx, who, request.path_params["address"])


async def aliases_list(request: Request, ctx: Context, who: Principal) -> Any:
    return await actions.aliases(ctx, who, request.path_params["domain"])


def _targets(data: dict[str, Any]) -> list[str]:
    targets = data.get("targets")
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise OpError(400, "targets: a list of addresses")
    return targets


async def alias_add(request: Request, ctx: Context, who: Principal) -> Any:
    domain = request.path_params["domain"]
    who.may_administer(domain)
    data = await body(request)
    local = data.get("name")
    if not isinstance(local, str):
        raise OpError(400, "name: give the local part of the alias")
    keep = bool(data.get("keep_copy"))
    return await actions.add_alias(ctx, who, domain, local, _targets(data), keep)


async def forwards_show(request: Request, ctx: Context, who: Principal) -> Any:
    return await actions.forwards(ctx, who, request.path_params["address"])


async def forwards_set(request: Request, ctx: Context, who: Principal) -> Any:
    """Replace the address's targets (a user's own forwarding)."""
    address = request.path_params["address"]
    who.may_user(address)
    data = await body(request)
    keep = bool(data.get("keep_copy"))
    return await actions.set_forwards(ctx, who, address, _targets(data), keep)


async def forwards_delete(request: Request, ctx: Context, who: Principal) -> Any:
    return await actions.delete_forwards(ctx, who, request.path_params["address"])


async def vacation_show(request: Request, ctx: Context, who: Principal) -> Any:
    return await actions.vacation(ctx, who, request.path_params["address"])


async def vacation_set(request: Request, ctx: Context, who: Principal) -> Any:
    address = request.path_params["address"]
    who.may_user(address)
    return await actions.set_vacation(ctx, who, address, await body(request))


async def vacation_off(request: Request, ctx: Context, who: Principal) -> Any:
    return await actions.vacation_off(ctx, who, request.path_params["address"])


async def queue_list(request: Request, ctx: Context, who: Principal) -> Any:
    who.may_site()
    return await ctx.channel.call("queue_list")


async def queue_action(request: Request, ctx: Context, who: Principal) -> Any:
    who.may_site()
    qid = request.path_params["qid"]
    action = "delete" if request.method == "DELETE" else request.path_params["action"]
    result = await ctx.channel.call("queue_action", id=qid, action=action)
    changed(who, f"queue.{action}", qid)
    return result


async def dkim_list(request: Request, ctx: Context, who: Principal) -> Any:
    return await actions.dkim(ctx, who, request.path_params["domain"])


async def dkim_add(request: Request, ctx: Context, who: Principal) -> Any:
    domain = request.path_params["domain"]
    who.may_administer(domain)
    return await actions.add_dkim(ctx, who, domain, await body(request))


async def dkim_delete(request: Request, ctx: Context, who: Principal) -> Any:
    params = request.path_params
    return await actions.delete_dkim(ctx, who, params["domain"], params["selector"])


async def dns_records(request: Request, ctx: Context, who: Principal) -> Any:
    return await actions.dns(ctx, who, request.path_params["domain"])


# -- logins ------------------------------------------------------------------------------


def login_route(ctx: Context) -> Callable[[Request], Awaitable[Response]]:
    async def login(request: Request) -> Response:
        try:
            data = await body(request)
        except OpError as exc:
            return error(exc.status, exc.message)
        user, password = data.get("user"), data.get("password")
        if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
            return error(400, "give user and password")
        client = request.client.host if request.client else "unknown"
        try:
            who = await actions.password_login(ctx, user, password, client)
        except OpError as exc:
            return error(exc.status, exc.message)
        sid, session = ctx.sessions.open(who)
        response = JSONResponse(
            {"login": who.name, "kind": who.kind, "domain": who.domain, "csrf_token": session.csrf}
        )
        response.set_cookie(COOKIE, sid, httponly=True, secure=True, samesite="strict", path="/")
        return response

    return login


def logout_route(ctx: Context) -> Callable[[Request], Awaitable[Response]]:
    async def logout(request: Request) -> Response:
        sid = request.cookies.get(COOKIE, "")
        session = ctx.sessions.get(sid)
        if session is None:
            return error(401, "not logged in")
        if not csrf_ok(session, request.headers.get("x-csrf-token")):
            return error(403, "missing or wrong X-CSRF-Token")
        ctx.sessions.close(sid)
        response = JSONResponse({"logged_out": session.principal.name})
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    return logout


API = "/api/v1"
# path -> [(method, handler)]: the one table of the API (openapi.py documents it).
TABLE: list[tuple[str, str, Handler, str]] = [
    ("/me", "GET", me, "who is logged in, and the session's CSRF token"),
    ("/status", "GET", status, "server status: domains, queue (site)"),
    ("/domains", "GET", domains_list, "domains, paged (offset, limit, search)"),
    ("/domains", "POST", domain_add, "add a domain and its postmaster (site)"),
    ("/domains/{domain}", "GET", domain_show, "one domain"),
    ("/domains/{domain}", "DELETE", domain_delete, "delete a domain and its mail (site)"),
    (
        "/domains/{domain}/catchall",
        "PUT",
        domain_catchall,
        "unknown users: bounce, delete or an address",
    ),
    ("/domains/{domain}/users", "GET", users_list, "users, paged (offset, limit, search)"),
    ("/domains/{domain}/users", "POST", user_add, "add a user (name, password, quota)"),
    (
        "/domains/{domain}/users:batch",
        "POST",
        users_batch,
        "add up to 10,000 users at once, all or none (users: [{name, password, quota}])",
    ),
    ("/domains/{domain}/aliases", "GET", aliases_list, "aliases and forwards of a domain"),
    ("/domains/{domain}/aliases", "POST", alias_add, "add an alias (name, targets, keep_copy)"),
    (
        "/domains/{domain}/dkim",
        "GET",
        dkim_list,
        "DKIM keys: selector, algorithm, state, the TXT record to publish",
    ),
    (
        "/domains/{domain}/dkim",
        "POST",
        dkim_add,
        "new DKIM keys as qtoaster dkim keygen (algorithm, selector, active)",
    ),
    ("/domains/{domain}/dkim/{selector}", "DELETE", dkim_delete, "delete a DKIM key"),
    (
        "/domains/{domain}/dns",
        "GET",
        dns_records,
        "every DNS record to publish, as qtoaster dns records: [{name, type, value, ttl}]",
    ),
    ("/users/{address}", "GET", user_show, "one user with its quota usage"),
    (
        "/users/{address}",
        "PATCH",
        user_set,
        "set password, spam_folder (junk, inbox); admins: quota, flags_add, flags_clear",
    ),
    ("/users/{address}", "DELETE", user_delete, "delete a user and its mail"),
    ("/users/{address}/vacation", "GET", vacation_show, "the user's vacation autoresponder"),
    (
        "/users/{address}/vacation",
        "PUT",
        vacation_set,
        "set the vacation reply: enabled, subject, body, start, end, period",
    ),
    ("/users/{address}/vacation", "DELETE", vacation_off, "stop the vacation replies"),
    ("/forwards/{address}", "GET", forwards_show, "the forwards of an address"),
    ("/forwards/{address}", "PUT", forwards_set, "replace the forwards of an address"),
    ("/forwards/{address}", "DELETE", forwards_delete, "remove the forwards of an address"),
    ("/queue", "GET", queue_list, "queued messages (site)"),
    ("/queue/{qid}/{action}", "POST", queue_action, "hold, release or retry a message (site)"),
    ("/queue/{qid}", "DELETE", queue_action, "delete a queued message (site)"),
]
PUBLIC: list[tuple[str, str, str]] = [
    ("/login", "POST", "log in with user and password: a session cookie and a CSRF token"),
    ("/logout", "POST", "end the session (X-CSRF-Token)"),
    ("/openapi.json", "GET", "this API's OpenAPI document"),
]


def make_app(ctx: Context, pages: Sequence[BaseRoute] = ()) -> Starlette:
    """The API's routes, then ``pages`` (the web pages, web.py)."""
    from qtoaster.httpd.openapi import document

    spec = document()
    by_path: dict[str, dict[str, Handler]] = {}
    for path, method, handler, _ in TABLE:
        by_path.setdefault(path, {})[method] = handler

    def dispatch(handlers: dict[str, Handler]) -> Callable[[Request], Awaitable[Response]]:
        wrapped = {m: endpoint(ctx, h) for m, h in handlers.items()}

        async def route(request: Request) -> Response:
            return await wrapped[request.method](request)

        return route

    async def openapi(request: Request) -> Response:
        return JSONResponse(spec)

    routes: list[BaseRoute] = [
        Route(API + p, dispatch(h), methods=list(h)) for p, h in by_path.items()
    ]
    routes += [
        Route(API + "/login", login_route(ctx), methods=["POST"]),
        Route(API + "/logout", logout_route(ctx), methods=["POST"]),
        Route(API + "/openapi.json", openapi, methods=["GET"]),
        *pages,
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        response = error(exc.status_code, exc.detail)
        response.headers.update(exc.headers or {})
        return response

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
