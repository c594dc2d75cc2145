"""Registered models: create, get, rename, update, delete, search, tags, aliases, latest versions.

The validators here (model names, registry tags, aliases, NUL bytes) are shared with
:mod:`modelyard.server.api.model_versions`.
"""
from __future__ import annotations

import re
from typing import Any

from modelyard.errors import MlflowError
from modelyard.server.routing import Context, Endpoint
from modelyard.server.schema import INT64, STRING, Field, Message, Repeated, Schema, invalid_value, missing_value
from modelyard.server.validation import MAX_REGISTRY_TAG_VALUE, validate_key, validate_length
from modelyard.store.registry import parse_version

__all__ = [
    "ENDPOINTS", "TAG", "check_no_nul", "validate_model_name", "validate_registry_tag", "validate_alias",
    "validate_max_results",
]

TAG = Message(Field("key", STRING), Field("value", STRING))
MAX_NAME = 256  # registered_models.name is VARCHAR(256)
MAX_ALIAS = 255
MAX_SEARCH_RESULTS = 1000
DEFAULT_SEARCH_RESULTS = 100
_ALIAS = re.compile(r"^[\w\-]*$")
_VERSION_ALIAS = re.compile(r"^[vV]\d+$")
_SEE_DOCS = " See the API docs for more information about request parameters."


def check_no_nul(args: Any, path: str = "") -> None:
    """PostgreSQL cannot store NUL in text, and no MLflow name or value needs one: reject it early."""
    if isinstance(args, str):
        if "\x00" in args:
            raise MlflowError.invalid(invalid_value(path or "request", args, "Values must not contain NUL characters."))
    elif isinstance(args, dict):
        for key, value in args.items():
            check_no_nul(value, f"{path}.{key}" if path else key)
    elif isinstance(args, list):
        for value in args:
            check_no_nul(value, path)


def validate_model_name(name: str | None, field: str = "name") -> None:
    """MLflow's rules for registered model names, plus the column's length."""
    if name is None or not name.strip():
        raise MlflowError.invalid(missing_value(field) + _SEE_DOCS)
    if "/" in name or ":" in name:
        raise MlflowError.invalid(f"Invalid model name '{name}'. Names cannot contain '/' or ':'.")
    if name == "." or name.startswith(".."):
        raise MlflowError.invalid(invalid_value(
            field, name, "Names may be treated as files in certain cases, and must not resolve to other names "
            f"when treated as such. This name would resolve to '{name}'"))
    if len(name) > MAX_NAME:
        raise MlflowError.invalid(
            invalid_value(field, name[:40] + "...", f"length {len(name)} exceeds the limit {MAX_NAME}"))


def validate_registry_tag(key: str | None, value: str | None) -> None:
    if key is None:
        raise MlflowError.invalid(missing_value("key") + _SEE_DOCS)
    validate_key(key, "key")
    validate_length(value, MAX_REGISTRY_TAG_VALUE, "Tag value")


def validate_alias(alias: str | None, setting: bool) -> None:
    """Alias names: ``^[\\w-]*$``, at most 255 characters; ``latest`` and ``v<n>`` are reserved."""
    if not alias:
        raise MlflowError.invalid("Registered model alias name cannot be empty.")
    if not _ALIAS.match(alias):
        raise MlflowError.invalid(
            f"Invalid alias name: '{alias}'. Names may only contain alphanumerics, underscores (_), and dashes (-).")
    validate_length(alias, MAX_ALIAS, "Registered model alias name")
    if setting and alias.lower() == "latest":
        raise MlflowError.invalid("'latest' alias name (case insensitive) is reserved.")
    if setting and _VERSION_ALIAS.match(alias):
        raise MlflowError.invalid(f"Version alias name '{alias}' is reserved.")


def validate_max_results(value: int | None, default: int, limit: int) -> int:
    if value is None:
        return default
    if not 1 <= value <= limit:
        raise MlflowError.invalid(invalid_value(
            "max_results", value, f"It must be at most {limit} and greater than 0."))
    return value


async def create(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    validate_model_name(a["name"])
    for tag in a["tags"]:
        validate_registry_tag(tag["key"], tag["value"] or "")
    tags = [{"key": t["key"], "value": t["value"] or ""} for t in a["tags"]]
    model = await ctx.services.stores.registry.create_model(ctx.project, a["name"], tags, a["description"])
    return {"registered_model": model}


async def get(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    validate_model_name(a["name"])
    return {"registered_model": await ctx.services.stores.registry.get_model(ctx.project, a["name"])}


async def rename(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    validate_model_name(a["name"])
    validate_model_name(a["new_name"], "new_name")
    return {"registered_model": await ctx.services.stores.registry.rename_model(ctx.project, a["name"], a["new_name"])}


async def update(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    validate_model_name(a["name"])
    return {"registered_model": await ctx.services.stores.registry.update_model(ctx.project, a["name"], a["description"])}


async def delete(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    validate_model_name(a["name"])
    await ctx.services.stores.registry.delete_model(ctx.project, a["name"])
    return {}


async def search(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    max_results = validate_max_results(a["max_results"], DEFAULT_SEARCH_RESULTS, MAX_SEARCH_RESULTS)
    models, token = await ctx.services.stores.registry.search_models(ctx.project, 
        a["filter"], max_results, a["order_by"], a["page_token"])
    out: dict = {"registered_models": models}
    if token:
        out["next_page_token"] = token
    return out


async def get_latest_versions(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    validate_model_name(a["name"])
    versions = await ctx.services.stores.registry.get_latest_versions(ctx.project, a["name"], a["stages"])
    return {"model_versions": versions}


async def set_tag(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    validate_model_name(a["name"])
    value = a["value"] or ""
    validate_registry_tag(a["key"], value)
    await ctx.services.stores.registry.set_model_tag(ctx.project, a["name"], a["key"], value)
    return {}


async def delete_tag(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    validate_model_name(a["name"])
    validate_key(a["key"], "key")
    await ctx.services.stores.registry.delete_model_tag(ctx.project, a["name"], a["key"])
    return {}


async def set_alias(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    validate_model_name(a["name"])
    validate_alias(a["alias"], setting=True)
    version = parse_version(a["version"])
    await _check_protected(ctx, a["alias"], "move")
    await ctx.services.stores.registry.set_alias(ctx.project, a["name"], a["alias"], version)
    return {}


async def _check_protected(ctx: Context, alias: str, verb: str) -> None:
    """Protected aliases (the project's setting; by default production and champion) move only
    for maintainers and owners, whoever may set plain ones."""
    project = await ctx.services.stores.projects.get(ctx.project)
    if alias in project["protected_aliases"]:
        ctx.require("manage", f"{verb} the protected alias '{alias}'")


async def delete_alias(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    validate_model_name(a["name"])
    validate_alias(a["alias"], setting=False)
    await _check_protected(ctx, a["alias"], "delete")
    await ctx.services.stores.registry.delete_alias(ctx.project, a["name"], a["alias"])
    return {}


async def get_by_alias(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    validate_model_name(a["name"])
    validate_alias(a["alias"], setting=False)
    return {"model_version": await ctx.services.stores.registry.get_version_by_alias(ctx.project, a["name"], a["alias"])}


_NAME = Field("name", STRING, required=True)
_ALIAS_FIELD = Field("alias", STRING, required=True)
_SEARCH = Schema(Field("filter", STRING), Field("max_results", INT64), Field("order_by", Repeated(STRING)),
                 Field("page_token", STRING))
_LATEST = Schema(_NAME, Field("stages", Repeated(STRING)))

ENDPOINTS = [
    Endpoint("POST", "/registered-models/create", create, Schema(
        _NAME, Field("tags", Repeated(TAG)), Field("description", STRING), Field("deployment_job_id", STRING)),
        access="write"),
    Endpoint("GET", "/registered-models/get", get, Schema(_NAME), access="read"),
    Endpoint("POST", "/registered-models/rename", rename, Schema(_NAME, Field("new_name", STRING)), access="write"),
    Endpoint("PATCH", "/registered-models/update", update, Schema(
        _NAME, Field("description", STRING), Field("deployment_job_id", STRING)), access="write"),
    Endpoint("DELETE", "/registered-models/delete", delete, Schema(_NAME), access="delete"),
    # The proto routes search as GET only; POST is accepted too, as for experiments and runs.
    Endpoint("GET", "/registered-models/search", search, _SEARCH, access="read"),
    Endpoint("POST", "/registered-models/search", search, _SEARCH, access="read"),
    Endpoint("POST", "/registered-models/get-latest-versions", get_latest_versions, _LATEST, access="read"),
    Endpoint("GET", "/registered-models/get-latest-versions", get_latest_versions, _LATEST, access="read"),
    Endpoint("POST", "/registered-models/set-tag", set_tag, Schema(
        _NAME, Field("key", STRING, required=True), Field("value", STRING)), access="write"),
    Endpoint("DELETE", "/registered-models/delete-tag", delete_tag, Schema(
        _NAME, Field("key", STRING, required=True)), access="write"),
    Endpoint("POST", "/registered-models/alias", set_alias, Schema(
        _NAME, _ALIAS_FIELD, Field("version", STRING, required=True)), access="write"),
    Endpoint("DELETE", "/registered-models/alias", delete_alias, Schema(_NAME, _ALIAS_FIELD), access="write"),
    Endpoint("GET", "/registered-models/alias", get_by_alias, Schema(_NAME, _ALIAS_FIELD), access="read"),
]
