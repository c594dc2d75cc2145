"""The MLflow wire contract as data, and the dispatcher that serves it.

Each resource module exports ``ENDPOINTS``: a list of :class:`Endpoint` (method, path, handler,
request schema). :func:`mount` serves the concatenated table under every prefix the client and
MLflow's UI use. Static paths are found by one dict lookup; the few paths with parameters
(``/logged-models/{model_id}``) fall back to a short list of patterns.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelyard.errors import MlflowError
from modelyard.server.compat import undouble_json
from modelyard.server.schema import Schema

__all__ = [
    "Endpoint", "EndpointTable", "Context", "json_response", "error_response", "MLFLOW_PREFIXES", "MODELYARD_PREFIX",
    "with_access",
]

MLFLOW_PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow", "/api/3.0/mlflow", "/ajax-api/3.0/mlflow")
# modelyard's own API: what MLflow has no API for (deployments, monitoring, pipelines, ...).
MODELYARD_PREFIX = "/api/modelyard/v1"

Handler = Callable[["Context", dict], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    """One route of a JSON API. ``access`` is the level a caller needs (see ``server/auth.py``);
    an endpoint without one is refused by the route-by-role test."""

    method: str
    path: str
    handler: Handler
    schema: Schema = field(default_factory=Schema)
    access: str | None = None


@dataclass
class Context:
    """What a handler gets besides its arguments: the services, the request, the project and
    the principal making it."""

    services: Any
    request: Request
    path_params: dict = field(default_factory=dict)
    project: str = "default"
    principal: Any = None

    def require(self, access: str, what: str) -> None:
        """A finer check inside a handler (a protected alias needs more than a plain one)."""
        from modelyard.server.auth import check

        check(self.principal, self.project, access, what)


def with_access(route, access: str):
    """Label a Starlette route (one outside the endpoint table) with the access level its handler
    enforces, so that the route-by-role test covers it too."""
    route.access = access
    return route


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


def error_response(exc: MlflowError) -> Response:
    return json_response(exc.to_dict(), exc.status_code)


_PARAM = re.compile(r"\{(\w+)\}")


def _compile(path: str) -> re.Pattern:
    parts = _PARAM.split(path)  # literal, name, literal, name, ...
    body = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    return re.compile(f"^{body}$")


class EndpointTable:
    """Endpoints grouped with the path prefixes each group is served under."""

    def __init__(self, groups: list[tuple[list[Endpoint], tuple[str, ...]]], services: Any):
        self.services = services
        self.groups = groups
        self._static: dict[str, dict[str, Endpoint]] = {}
        self._patterns: list[tuple[re.Pattern, str, Endpoint]] = []
        for endpoints, prefixes in groups:
            for prefix, ep in ((p, e) for p in prefixes for e in endpoints):
                full = prefix + ep.path
                if "{" in ep.path:
                    self._patterns.append((_compile(full), ep.method, ep))
                else:
                    methods = self._static.setdefault(full, {})
                    if ep.method in methods:
                        raise ValueError(f"{ep.method} {full} is routed twice")
                    methods[ep.method] = ep

    def match(self, path: str, method: str) -> tuple[Endpoint | None, dict, list[str]]:
        """Returns (endpoint, path params, the methods the path allows: empty if unknown)."""
        methods = self._static.get(path)
        if methods is not None:
            return methods.get(method), {}, sorted(methods)
        allowed = []
        for regex, ep_method, ep in self._patterns:
            m = regex.match(path)
            if m:
                if ep_method == method:
                    return ep, m.groupdict(), [method]
                allowed.append(ep_method)
        return None, {}, sorted(set(allowed))

    async def handle(self, request: Request, endpoint: Endpoint, path_params: dict, project: str) -> Response:
        services = self.services
        ctx = Context(services, request, path_params, project)
        args: dict = {}
        try:
            if endpoint.access != "public":  # public routes ignore credentials, even bad ones
                ctx.principal = await services.auth.principal(
                    request.headers, _client_ip(request), request.cookies.get("modelyard_session"))
                services.auth.check_request(ctx.principal, project, endpoint.access or "admin",
                                            f"{endpoint.method} {endpoint.path}", request)
            if request.method == "GET":
                args = endpoint.schema.parse_query(request.query_params)
            else:
                args = endpoint.schema.parse_json(await _json_body(request, services.settings.max_json_body))
            args.update(path_params)
            result = await endpoint.handler(ctx, args)
            response = result if isinstance(result, Response) else json_response({} if result is None else result)
        except MlflowError as exc:
            response = error_response(exc)
        if endpoint.access not in _READ_LEVELS:  # changes are audited, searches sent by POST are not
            services.audit.record(project, ctx.principal.username if ctx.principal else "-",
                                  f"{endpoint.method} {endpoint.path}", response.status_code,
                                  *_audit_object(args), source_ip=_client_ip(request),
                                  details=f"alias={args['alias']}" if args.get("alias") else None)
        return response


_READ_LEVELS = ("public", "authenticated", "read")
_OBJECT_KEYS = (("run_id", "run"), ("model_id", "logged_model"), ("experiment_id", "experiment"),
                ("name", "registered_model"), ("path", "artifact"), ("id", "object"))


def _audit_object(args: dict) -> tuple[str | None, str | None]:
    for key, kind in _OBJECT_KEYS:
        value = args.get(key)
        if value:
            version = args.get("version")
            return kind, f"{value}/{version}" if kind == "registered_model" and version else str(value)
    return None, None


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _json_body(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise MlflowError(f"Request body of {declared} bytes exceeds the limit of {limit} bytes.",
                          "INVALID_PARAMETER_VALUE")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise MlflowError(f"Request body exceeds the limit of {limit} bytes.", "INVALID_PARAMETER_VALUE")
    if not body:  # an empty body is an empty message (whitespace alone is malformed JSON)
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MlflowError("Malformed JSON in request body.", "BAD_REQUEST") from None
    if data is None:
        raise MlflowError("Request body must be a JSON object, not null.", "BAD_REQUEST")
    return undouble_json(data)
