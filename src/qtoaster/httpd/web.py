"""The web pages' plumbing (docs/http.md "Web pages"): login and logout, the session and
its CSRF token on forms, rendering, errors, and the route table of webpages.py.

Server-rendered Jinja2 templates (httpd/templates/), no JavaScript.  A page finds its
login in the session cookie the API sets too (api.COOKIE); every form repeats the
session's CSRF token in the field ``csrf``.  What a login may see or change is decided by
actions.py and access.py, the API's own rules, never here.

Invariants: a page without a session redirects to the login page ``/``; a refusal renders
the error page with its HTTP status (403, 404, ...); every page is sent with
``Cache-Control: no-store`` and a Content-Security-Policy that allows no script at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from qtoaster.httpd import actions
from qtoaster.httpd.access import Principal, Session, csrf_ok
from qtoaster.httpd.actions import Context
from qtoaster.httpd.api import COOKIE
from qtoaster.httpd.channel import OpError

ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# What a redirect after a change says (?done=KEY): fixed texts, so no link can make a page
# say anything else.
DONE = {
    "user.add": "User added.",
    "user.delete": "User deleted.",
    "quota": "Quota set.",
    "password": "Password changed.",
    "forwards": "Forwarding saved.",
    "vacation": "Vacation reply saved.",
    "vacation.off": "Vacation reply switched off.",
    "spam": "Spam folder saved.",
    "alias.add": "Alias added.",
    "alias.delete": "Alias deleted.",
}


@dataclass(frozen=True, slots=True)
class Visit:
    """A page request with its login."""

    request: Request
    ctx: Context
    who: Principal
    session: Session


PageHandler = Callable[[Visit], Awaitable[Response]]


def render(
    request: Request,
    template: str,
    status: int = 200,
    session: Session | None = None,
    **values: Any,
) -> HTMLResponse:
    done = DONE.get(request.query_params.get("done", ""))
    text = ENV.get_template(template).render(
        who=None if session is None else session.principal,
        csrf=None if session is None else session.csrf,
        done=done,
        **values,
    )
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def redirect(path: str, done: str | None = None, **query: Any) -> RedirectResponse:
    params = {k: v for k, v in query.items() if v not in (None, "")}
    if done is not None:
        params["done"] = done
    target = path + ("?" + urlencode(params) if params else "")
    return RedirectResponse(target, status_code=303, headers=HEADERS)


def home(who: Principal) -> str:
    """Where a login lands: the domains (site), its domain, or its own settings."""
    if who.kind == "site":
        return "/domains"
    if who.kind == "domain":
        return f"/domains/{who.domain}"
    return f"/users/{who.name}"


def page(ctx: Context, handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
    """A route for ``handler``: the login (else to ``/``), the CSRF field on POSTs, and
    refusals rendered as the error page."""

    async def run(request: Request) -> Response:
        session = ctx.sessions.get(request.cookies.get(COOKIE, ""))
        if session is None:
            return redirect("/")
        if request.method == "POST":
            form = await request.form()
            if not csrf_ok(session, _text(form, "csrf")):
                return render(request, "error.html", 403, session, message=CSRF_MISSING)
        try:
            return await handler(Visit(request, ctx, session.principal, session))
        except OpError as exc:
            if exc.status == 401:
                return redirect("/")
            return render(request, "error.html", exc.status, session, message=exc.message)

    return run


CSRF_MISSING = "The form's security token is missing or stale: reload the page and try again."


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


async def form(visit: Visit) -> dict[str, str]:
    """The form's text fields (files are ignored: no form here has one)."""
    data = await visit.request.form()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def login_page(ctx: Context) -> Callable[[Request], Awaitable[Response]]:
    """``/``: the login form (GET), the login (POST); a logged-in visitor goes home."""

    async def run(request: Request) -> Response:
        session = ctx.sessions.get(request.cookies.get(COOKIE, ""))
        if request.method == "GET":
            if session is not None:
                return redirect(home(session.principal))
            return render(request, "login.html", error=None, user="")
        data = await request.form()
        user, password = _text(data, "user") or "", _text(data, "password") or ""
        if not user or not password:
            return render(request, "login.html", 400, error="Give user and password.", user=user)
        client = request.client.host if request.client else "unknown"
        try:
            who = await actions.password_login(ctx, user, password, client)
        except OpError as exc:
            text = "Wrong user or password." if exc.status == 401 else exc.message
            return render(request, "login.html", exc.status, error=text, user=user)
        if session is not None:
            ctx.sessions.close(request.cookies.get(COOKIE, ""))
        sid, _ = ctx.sessions.open(who)
        response = redirect(home(who))
        response.set_cookie(COOKIE, sid, httponly=True, secure=True, samesite="strict", path="/")
        return response

    return run


async def logout(visit: Visit) -> Response:
    visit.ctx.sessions.close(visit.request.cookies.get(COOKIE, ""))
    response = redirect("/")
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response
