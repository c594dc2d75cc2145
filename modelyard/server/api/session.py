"""The UI's sign-in: a token, checked once, buys an eight-hour session cookie.

The cookie holds a session token of its own (a personal token named "ui session", revoked at
sign-out), so the same token machinery, expiry and revocation apply. A CSRF cookie, readable by
the UI's scripts, must be echoed in a header on every change (see ``auth.check_request``).
"""
from __future__ import annotations

import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from modelyard.errors import MlflowError
from modelyard.server.auth import CSRF_COOKIE, SESSION_COOKIE
from modelyard.server.routing import with_access

__all__ = ["routes"]

SESSION_HOURS = 8
_templates = Environment(loader=FileSystemLoader(Path(__file__).parents[2] / "ui" / "templates"),
                         autoescape=select_autoescape())


def _safe_next(value: str | None) -> str:
    # Only same-site paths: never let the form redirect to another host.
    return value if value and value.startswith("/") and not value.startswith("//") else "/"


def routes(services) -> list[Route]:
    async def login_page(request: Request) -> Response:
        page = _templates.get_template("login.html").render(
            root=request.scope.get("root_path", ""), next=_safe_next(request.query_params.get("next")), error=None)
        return HTMLResponse(page)

    async def login(request: Request) -> Response:
        body = await request.body()
        if len(body) > 16_384:
            return HTMLResponse("Request too large.", 413)
        form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        username, token, nxt = form.get("username", ""), form.get("token", ""), _safe_next(form.get("next"))
        principal = None
        try:
            principal = await services.auth.principal({"authorization": "Bearer " + token}, _ip(request))
        except MlflowError:
            pass
        if principal is None or principal.username != username:
            page = _templates.get_template("login.html").render(
                root=request.scope.get("root_path", ""), next=nxt, error="Unknown username or token.")
            return HTMLResponse(page, 401)
        expires = int((time.time() + SESSION_HOURS * 3600) * 1000)
        if principal.expires_at is not None:
            expires = min(expires, principal.expires_at)
        if principal.token_project is not None:
            session = await services.stores.tokens.create_session_for_project_token(token, expires)
        else:
            session = await services.stores.tokens.create_personal_token(
                username, "ui session", sorted(principal.scopes), expires)
        response = RedirectResponse(nxt, 303)
        secure = request.url.scheme == "https"
        max_age = max(1, (expires - int(time.time() * 1000)) // 1000)
        response.set_cookie(SESSION_COOKIE, session["token"], max_age=max_age, httponly=True, samesite="lax",
                            secure=secure, path="/")
        response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(24), max_age=max_age, httponly=False,
                            samesite="strict", secure=secure, path="/")
        return response

    async def logout(request: Request) -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        sent, expected = request.headers.get("x-csrf-token"), request.cookies.get(CSRF_COOKIE)
        if not sent:  # a plain HTML form posts the CSRF value as a field
            body = (await request.body())[:4096].decode(errors="replace")
            sent = parse_qs(body).get("csrf", [None])[0]
        form_ok = bool(sent and expected and secrets.compare_digest(sent, expected))
        if token and form_ok:
            await services.stores.tokens.revoke_by_value(token)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        response.delete_cookie(CSRF_COOKIE, path="/")
        return response

    return [
        with_access(Route("/login", login_page, methods=["GET"]), "public"),
        with_access(Route("/login", login, methods=["POST"]), "public"),
        with_access(Route("/logout", logout, methods=["POST"]), "public"),
    ]


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None
