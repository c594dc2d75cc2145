"""What every page shares: the templates, the access check, error pages and the static files.

A page is ``async def handler(page: Page) -> Response``. :func:`page_route` wraps it in the same
check the JSON API makes (token or session cookie, role in the request's project), so a page is
exactly as open as the API calls behind it. A browser that is not signed in is sent to ``/login``
and comes back; anything else that is refused (a script, the route-by-role test) gets the API's
JSON refusal, 401 or 403.

Pages read through the stores the API handlers call, in bounded pages: nothing here loads a whole
table. Every page answers with a ``Server-Timing`` header (``app;dur=<ms>``), the time the server
spent on it, which the benchmark reads.
"""
from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import html
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, Undefined, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from modelyard.errors import MlflowError
from modelyard.server.auth import ANONYMOUS, CSRF_COOKIE, SESSION_COOKIE, check
from modelyard.server.routing import error_response, with_access
from modelyard.store.projects import DEFAULT_PROJECT

__all__ = ["Page", "page_route", "static_routes", "templates", "markdown", "short_number", "order_key"]

log = logging.getLogger("modelyard.ui")

HERE = Path(__file__).parent
templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(),
                        trim_blocks=True, lstrip_blocks=True)

# -- formatting filters ---------------------------------------------------------------------------


def _when(ms: int | None) -> Markup:
    """A timestamp as <time>: UTC text that the page's script turns into the reader's local time."""
    if ms is None or isinstance(ms, Undefined):
        return Markup("")
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return Markup('<time datetime="{}">{}</time>').format(t.isoformat(), t.strftime("%Y-%m-%d %H:%M UTC"))


def _duration(ms: int | float | None) -> str:
    if ms is None or isinstance(ms, Undefined):
        return ""
    s = ms / 1000
    if s < 1:
        return f"{ms:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def short_number(value: Any) -> str:
    """Numbers with 5 significant digits; anything else as text."""
    if isinstance(value, Undefined):
        return ""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.5g}"
    return str(value)


def markdown(text: str | None) -> Markup:
    """Markdown to HTML with raw HTML escaped, not passed through, and only safe link schemes
    (markdown-it's ``js-default`` preset: no HTML, ``javascript:`` links refused)."""
    if not text:
        return Markup("")
    from markdown_it import MarkdownIt

    md = MarkdownIt("js-default", {"linkify": False, "typographer": False}).enable("table")
    return Markup(md.render(text))


def _qs(**params) -> str:
    return urlencode([(k, v) for k, v in params.items() if v not in (None, "")], doseq=True)


def order_key(kind: str, key: str) -> str:
    """An identifier of MLflow's search grammar: ``metrics.rmse`` or ``metrics.`val loss```."""
    if key.replace("_", "a").replace(".", "a").isalnum():
        return f"{kind}.{key}"
    return f"{kind}.`{key}`"


templates.filters.update(when=_when, duration=_duration, num=short_number, markdown=markdown,
                         urlquote=lambda s: quote(str(s), safe=""))
templates.globals.update(qs=_qs)

# -- the page context -----------------------------------------------------------------------------


@dataclass
class Page:
    """One page request: the services, the project it is in and who is asking."""

    services: Any
    request: Request
    project: str
    principal: Any
    started: float

    @property
    def stores(self):
        return self.services.stores

    @property
    def root(self) -> str:
        """The URL prefix of this project's pages (``/p/<project>`` or empty)."""
        return self.request.scope.get("root_path", "")

    @property
    def base(self) -> str:
        """The URL prefix outside any project (static files, sign-in)."""
        root = self.root
        suffix = f"/p/{self.project}"
        return root[: -len(suffix)] if root.endswith(suffix) else root

    def param(self, name: str, default: str = "") -> str:
        return self.request.query_params.get(name, default).strip()

    def int_param(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.request.query_params.get(name)
        try:
            value = int(raw) if raw not in (None, "") else default
        except ValueError:
            raise MlflowError.invalid(f"'{name}' must be a whole number, got {raw!r}.") from None
        return max(low, min(high, value))

    def url(self, path: str, **params) -> str:
        query = _qs(**params)
        return f"{self.root}{path}" + (f"?{query}" if query else "")

    async def render(self, template: str, http_status: int = 200, **values) -> Response:
        ctx = await self._globals()
        body = templates.get_template(template).render(**ctx, **values)
        return self.finish(HTMLResponse(body, http_status))

    def finish(self, response: Response) -> Response:
        elapsed = (time.perf_counter() - self.started) * 1000
        response.headers["Server-Timing"] = f"app;dur={elapsed:.1f}"
        response.headers.setdefault("Cache-Control", "no-store")
        # Pages render only our own markup: no inline handlers, scripts from this origin only.
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    async def _globals(self) -> dict:
        principal = self.principal
        signed_in = principal is not None and principal is not ANONYMOUS
        return {
            "root": self.root, "static": f"{self.base}/static", "base": self.base, "project": self.project,
            "projects": await self._projects(), "user": principal.username if signed_in else None,
            "csrf": self.request.cookies.get(CSRF_COOKIE, ""), "path": self.request.url.path,
            "auth": self.services.settings.auth, "asset": _asset_version(),
        }

    async def _projects(self) -> list[str]:
        """The projects the reader may switch to (their memberships; all for an administrator)."""
        principal = self.principal
        if principal is None:
            return [self.project]
        if principal.token_project is not None:
            return [principal.token_project]
        if principal.is_admin:
            return [p["name"] for p in await self.stores.projects.list(None)][:200]
        return sorted(set(principal.roles) | {self.project})


Handler = Callable[[Page], Awaitable[Response]]


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def page_route(services, path: str, handler: Handler, access: str = "read", methods=("GET",)) -> Route:
    """A page at ``path`` that needs ``access`` in the request's project (see ``server/auth.py``)."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        project = request.scope.get("modelyard.project", DEFAULT_PROJECT)
        try:
            principal = await services.auth.principal(
                request.headers, request.client.host if request.client else None, request.cookies.get(SESSION_COOKIE))
            services.auth.check_request(principal, project, access, f"view {request.url.path}", request)
        except MlflowError as exc:
            return _refused(request, exc)
        page = Page(services, request, project, principal, started)
        try:
            return await handler(page)
        except MlflowError as exc:
            return await _error_page(page, exc.status_code, exc.message)
        except Exception as exc:  # noqa: BLE001 - a page shows an error, never a traceback
            from modelyard.server.app import translate

            err = translate(exc)
            return await _error_page(page, err.status_code, err.message)

    endpoint.__name__ = handler.__name__
    endpoint.access = access
    return with_access(Route(path, endpoint, methods=list(methods)), access)


def _refused(request: Request, exc: MlflowError) -> Response:
    if _wants_html(request):
        if exc.error_code == "UNAUTHENTICATED":
            # Back to this very page after signing in.
            target = request.scope.get("root_path", "") + request.url.path
            if request.url.query:
                target += "?" + request.url.query
            response = RedirectResponse(f"/login?{urlencode({'next': target})}", 303)
            if request.cookies.get(SESSION_COOKIE):  # an expired or revoked session
                response.delete_cookie(SESSION_COOKIE, path="/")
            return response
        body = templates.get_template("error.html").render(
            code=exc.status_code, message=exc.message, root=request.scope.get("root_path", ""), static="/static",
            base="", project=request.scope.get("modelyard.project", DEFAULT_PROJECT), projects=[], user=None,
            auth=True, asset=_asset_version(), csrf="", path=request.url.path)
        return HTMLResponse(body, exc.status_code)
    return error_response(exc)


async def _error_page(page: Page, status: int, message: str) -> Response:
    if not _wants_html(page.request) and status >= 400:
        return page.finish(error_response(MlflowError(message, _code_for(status))))
    return await page.render("error.html", http_status=status, code=status, message=message)


def _code_for(status: int) -> str:
    return {400: "INVALID_PARAMETER_VALUE", 404: "RESOURCE_DOES_NOT_EXIST", 501: "NOT_IMPLEMENTED",
            503: "TEMPORARILY_UNAVAILABLE"}.get(status, "INTERNAL_ERROR")


def redirect(page: Page, path: str, **params) -> Response:
    return page.finish(RedirectResponse(page.url(path, **params), 303))


# -- static files ---------------------------------------------------------------------------------

_STATIC = HERE / "static"
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
_cache: dict[str, tuple[bytes, bytes, str]] = {}
_version: list[str] = []


def _plotly_path() -> Path | None:
    """plotly.min.js as the ``plotly`` package installs it (the repository carries no copy)."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.exists() else None


def _asset_version() -> str:
    """A hash of our own assets, appended to their URLs so that a new release is fetched anew."""
    if not _version:
        digest = hashlib.sha256()
        for p in sorted(_STATIC.glob("*")):
            digest.update(p.name.encode() + p.read_bytes())
        _version.append(digest.hexdigest()[:10])
    return _version[0]


def _load(name: str) -> tuple[bytes, bytes, str] | None:
    hit = _cache.get(name)
    if hit is not None:
        return hit
    if name == "plotly.min.js":
        path = _plotly_path()
    else:
        path = _STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return None
    if path is None:
        return None
    raw = path.read_bytes()
    # Compressed once, kept in memory: plotly is 4.8 MB, 1.4 MB gzipped.
    entry = (raw, gzip.compress(raw, 6), _TYPES.get(path.suffix, "application/octet-stream"))
    _cache[name] = entry
    return entry


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    entry = _load(name)
    if entry is None:
        if name == "plotly.min.js":
            return Response("// charts need the plotly package: pip install plotly\n", 404,
                            media_type="text/javascript")
        return Response("Not found", 404, media_type="text/plain")
    raw, packed, media_type = entry
    headers = {"Cache-Control": "public, max-age=604800, immutable", "X-Content-Type-Options": "nosniff",
               "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(packed, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(raw, media_type=media_type, headers=headers)


def static_routes() -> list[Route]:
    """``/static/<name>``: the UI's CSS and scripts and the charting library, open to everyone
    (the sign-in page needs them too)."""
    return [with_access(Route("/static/{name}", _static, methods=["GET"]), "public")]


def escape(text: Any) -> str:
    return html.escape(str(text))
