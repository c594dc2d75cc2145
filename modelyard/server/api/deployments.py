"""Deployments: create or update, get, list, heartbeat, delete (``/api/modelyard/v1/deployments``).

A deployment names a registered model and the versions (or aliases) it serves with their traffic
weights, plus an optional shadow. ``modelyard serve`` registers its deployment when it starts, sends
a heartbeat every few seconds, and follows the record: posting a new spec (a pipeline's deploy step,
an operator) makes the running replicas switch to it.
"""
from __future__ import annotations

import math
import re

from modelyard.errors import MlflowError
from modelyard.server.routing import Context, Endpoint
from modelyard.server.schema import ANY, INT64, STRING, Field, Repeated, Schema, invalid_value, missing_value
from modelyard.store.deployments import STATUSES

__all__ = ["ENDPOINTS"]

MAX_NAME = 256
MAX_ARMS = 16
MAX_RESULTS = 1000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_ALIAS = re.compile(r"^[\w\-]+$")
_SEE_DOCS = " See the API docs for more information about request parameters."


def _validate_name(name: str) -> None:
    if not _NAME.match(name) or len(name) > MAX_NAME:
        raise MlflowError.invalid(invalid_value(
            "name", name, f"a deployment name is 1 to {MAX_NAME} letters, digits, '_', '.' or '-', "
            "starting with a letter or digit."))


def _version(value, path: str) -> str:
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not text.isdigit() or int(text) < 1:
        raise MlflowError.invalid(invalid_value(path, value, "a model version is a positive integer."))
    return str(int(text))


def _alias(value, path: str) -> str:
    if not isinstance(value, str) or not _ALIAS.match(value) or len(value) > 255:
        raise MlflowError.invalid(invalid_value(path, value, "an alias is letters, digits, '_' or '-'."))
    return value


def _weight(value, path: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise MlflowError.invalid(invalid_value(path, value, "a weight is a number >= 0."))
    # One spelling per value, so re-posting the same spec does not count as a change.
    return int(value) if float(value).is_integer() else float(value)


def normalise_arms(alias, versions: list) -> list[dict]:
    """The traffic arms as stored: ``[{"version": "3", "weight": 90}, {"alias": "champion", "weight": 10}]``.

    ``alias`` alone is shorthand for one arm that takes all the traffic.
    """
    if not versions:
        if alias is None:
            raise MlflowError.invalid("A deployment needs 'alias' or 'versions' (a list of {version or alias, weight}).")
        return [{"alias": _alias(alias, "alias"), "weight": 100}]
    if alias is not None:
        raise MlflowError.invalid("Give either 'alias' or 'versions', not both; an arm of 'versions' may name an alias.")
    if len(versions) > MAX_ARMS:
        raise MlflowError.invalid(f"A deployment has at most {MAX_ARMS} versions; got {len(versions)}.")
    arms, seen = [], set()
    for i, entry in enumerate(versions):
        path = f"versions[{i}]"
        if not isinstance(entry, dict):
            raise MlflowError.invalid(invalid_value(path, entry, "each entry is an object {version or alias, weight}."))
        unknown = set(entry) - {"version", "alias", "weight"}
        if unknown:
            raise MlflowError.invalid(invalid_value(path, entry, f"unknown field(s) {sorted(unknown)}."))
        has_version, has_alias = entry.get("version") is not None, entry.get("alias") is not None
        if has_version == has_alias:
            raise MlflowError.invalid(invalid_value(path, entry, "each entry names exactly one of 'version', 'alias'."))
        arm = ({"version": _version(entry["version"], path + ".version")} if has_version
               else {"alias": _alias(entry["alias"], path + ".alias")})
        ident = next(iter(arm.items()))
        if ident in seen:
            raise MlflowError.invalid(invalid_value(path, entry, f"{ident[0]} {ident[1]} is listed twice."))
        seen.add(ident)
        arm["weight"] = _weight(entry.get("weight", 1), path + ".weight")
        arms.append(arm)
    if sum(a["weight"] for a in arms) <= 0:
        raise MlflowError.invalid("The weights of a deployment's versions must add up to more than 0.")
    return arms


def _status(value) -> str | None:
    if value is not None and value not in STATUSES:
        raise MlflowError.invalid(invalid_value("status", value, f"one of {', '.join(STATUSES)}."))
    return value


def _url(value, path: str = "endpoint_url") -> str | None:
    if value is not None and (not value.startswith(("http://", "https://")) or len(value) > 2048):
        raise MlflowError.invalid(invalid_value(path, value, "an http(s) URL."))
    return value


async def put(ctx: Context, a: dict) -> dict:
    _validate_name(a["name"])
    if not a["model_name"].strip():
        raise MlflowError.invalid(missing_value("model_name") + _SEE_DOCS)
    if a["shadow_version"] is not None and a["shadow_alias"] is not None:
        raise MlflowError.invalid("Give either 'shadow_version' or 'shadow_alias', not both.")
    spec = {
        "name": a["name"], "model_name": a["model_name"], "versions": normalise_arms(a["alias"], a["versions"]),
        "shadow_version": _version(a["shadow_version"], "shadow_version") if a["shadow_version"] is not None else None,
        "shadow_alias": _alias(a["shadow_alias"], "shadow_alias") if a["shadow_alias"] is not None else None,
        "endpoint_url": _url(a["endpoint_url"]), "status": _status(a["status"]),
    }
    deployment, created = await ctx.services.stores.deployments.put(ctx.project, spec)
    return {"deployment": deployment, "created": created}


async def get(ctx: Context, a: dict) -> dict:
    return {"deployment": await ctx.services.stores.deployments.get(ctx.project, a["name"])}


async def list_(ctx: Context, a: dict) -> dict:
    max_results = a["max_results"] if a["max_results"] is not None else 100
    if not 1 <= max_results <= MAX_RESULTS:
        raise MlflowError.invalid(invalid_value("max_results", max_results, f"it must be between 1 and {MAX_RESULTS}."))
    found, token = await ctx.services.stores.deployments.list(ctx.project, a["model_name"], max_results,
                                                              a["page_token"])
    out = {"deployments": found}
    if token:
        out["next_page_token"] = token
    return out


async def heartbeat(ctx: Context, a: dict) -> dict:
    if not a["replica_id"].strip() or len(a["replica_id"]) > 256:
        raise MlflowError.invalid(invalid_value("replica_id", a["replica_id"], "1 to 256 characters."))
    beat = {
        "name": a["name"], "replica_id": a["replica_id"], "status": _status(a["status"]),
        "endpoint_url": _url(a["endpoint_url"]), "model_version": a["model_version"],
        "message": (a["message"] or None) and a["message"][:4000],
    }
    if beat["model_version"] is not None and len(beat["model_version"]) > 64:
        raise MlflowError.invalid(invalid_value("model_version", beat["model_version"], "at most 64 characters."))
    return {"deployment": await ctx.services.stores.deployments.heartbeat(ctx.project, beat)}


async def delete(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.deployments.delete(ctx.project, a["name"])
    return {}


_NAME_FIELD = Field("name", STRING, required=True)

ENDPOINTS = [
    Endpoint("POST", "/deployments", put, Schema(
        _NAME_FIELD, Field("model_name", STRING, required=True), Field("alias", STRING),
        Field("versions", Repeated(ANY)), Field("shadow_version", ANY), Field("shadow_alias", STRING),
        Field("endpoint_url", STRING), Field("status", STRING)), access="write"),
    Endpoint("GET", "/deployments", list_, Schema(
        Field("model_name", STRING), Field("max_results", INT64), Field("page_token", STRING)), access="read"),
    Endpoint("GET", "/deployments/get", get, Schema(_NAME_FIELD), access="read"),
    Endpoint("POST", "/deployments/heartbeat", heartbeat, Schema(
        _NAME_FIELD, Field("replica_id", STRING, required=True), Field("status", STRING, required=True),
        Field("endpoint_url", STRING), Field("model_version", STRING), Field("message", STRING)), access="write"),
    Endpoint("DELETE", "/deployments/delete", delete, Schema(_NAME_FIELD), access="delete"),
]
