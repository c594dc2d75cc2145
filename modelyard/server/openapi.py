"""An OpenAPI 3 description of modelyard's own API, made from its endpoint table.

The request schemas that validate requests at the edge are the same objects described here, so
the description cannot drift from what the server accepts. Served at
``/api/modelyard/v1/openapi.json``; the fuzzing tests (schemathesis) read it.
"""
from __future__ import annotations

from modelyard import __version__
from modelyard.server.routing import MODELYARD_PREFIX, Endpoint
from modelyard.server.schema import ANY, BOOL, DOUBLE, INT64, STRING, Message, Repeated

__all__ = ["openapi"]

_ERROR = {
    "type": "object",
    "required": ["error_code", "message"],
    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
}
_SCALARS = {STRING.name: {"type": "string"}, INT64.name: {"type": "integer", "format": "int64"},
            DOUBLE.name: {"type": "number"}, BOOL.name: {"type": "boolean"}, ANY.name: {}}


def _type(t) -> dict:
    if isinstance(t, Repeated):
        return {"type": "array", "items": _type(t.item)}
    if isinstance(t, Message):
        return _object(t.fields)
    return dict(_SCALARS[t.name])


def _field(f, in_query: bool = False) -> dict:
    prop = _type(f.type)
    if f.choices:
        prop["enum"] = list(f.choices)
    if f.required and f.type is STRING:
        prop["minLength"] = 1  # the server treats an empty required string as missing
    if not f.required and not (in_query and isinstance(f.type, Repeated)):
        prop["nullable"] = True  # as in proto3 JSON, null means "not given"
    return prop


def _object(fields) -> dict:
    out = {"type": "object", "properties": {}}
    for f in fields:
        out["properties"][f.name] = _field(f)
    required = [f.name for f in fields if f.required]
    if required:
        out["required"] = required
    return out


def _operation(e: Endpoint) -> dict:
    path_params = [p for p in e.path.split("/") if p.startswith("{")]
    op = {
        "operationId": f"{e.method.lower()}{e.path.replace('/', '_').replace('{', '').replace('}', '')}",
        "summary": (e.handler.__doc__ or e.handler.__name__).strip().splitlines()[0],
        "x-access": e.access,
        "parameters": [{"name": p[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
                       for p in path_params],
        "responses": {
            "200": {"description": "Done.", "content": {"application/json": {"schema": {"type": "object"}}}},
            **{code: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
               for code, text in (("400", "Bad input; nothing changed."), ("401", "No valid token."),
                                  ("403", "Not allowed."), ("404", "Not found."), ("409", "Conflict."))},
        },
    }
    if e.access == "public":
        op["security"] = []
    fields = [f for f in e.schema.fields if "{" + f.name + "}" not in e.path]
    if e.method == "GET":
        for f in fields:
            op["parameters"].append({"name": f.name, "in": "query", "required": f.required,
                                     "schema": _field(f, in_query=True),
                                     **({"explode": True} if isinstance(f.type, Repeated) else {})})
    else:
        # An empty body is an empty object: the body is required only when a field is.
        op["requestBody"] = {"required": any(f.required for f in fields),
                             "content": {"application/json": {"schema": _object(fields)}}}
    return op


def openapi(endpoints: list[Endpoint]) -> dict:
    paths: dict[str, dict] = {}
    for e in endpoints:
        paths.setdefault(MODELYARD_PREFIX + e.path, {})[e.method.lower()] = _operation(e)
    return {
        "openapi": "3.0.3",
        "info": {"title": "modelyard API", "version": __version__,
                 "description": "What MLflow has no API for: projects, tokens, deployments, predictions, "
                                "monitors, alerts, pipelines. Errors use MLflow's shape."},
        "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
        "paths": paths,
    }
