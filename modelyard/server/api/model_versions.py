"""Model versions: create, get, update, delete, search, tags, stage transitions, download URIs."""
from __future__ import annotations

from modelyard.errors import MlflowError
from modelyard.server.api.registered_models import (
    TAG, check_no_nul, validate_max_results, validate_model_name, validate_registry_tag,
)
from modelyard.server.routing import Context, Endpoint
from modelyard.server.schema import BOOL, INT64, STRING, Field, Repeated, Schema
from modelyard.server.validation import validate_key
from modelyard.store.registry import check_source, parse_version

__all__ = ["ENDPOINTS"]

MAX_SEARCH_RESULTS = 200_000
DEFAULT_SEARCH_RESULTS = 10_000
MAX_ID = 64  # model_versions.run_id and model_id are VARCHAR(64)


def _check_id(value: str | None, field: str) -> None:
    if value is not None and len(value) > MAX_ID:
        raise MlflowError.invalid(f"Invalid {field}: '{value[:40]}...' is longer than {MAX_ID} characters.")


def _name_and_version(a: dict) -> tuple[str, int]:
    check_no_nul(a)
    validate_model_name(a["name"])
    return a["name"], parse_version(a["version"])


async def create(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    validate_model_name(a["name"])
    check_source(a["source"])
    _check_id(a["run_id"], "run_id")
    _check_id(a["model_id"], "model_id")
    for tag in a["tags"]:
        validate_registry_tag(tag["key"], tag["value"] or "")
    tags = [{"key": t["key"], "value": t["value"] or ""} for t in a["tags"]]
    version = await ctx.services.stores.registry.create_version(ctx.project, 
        a["name"], a["source"], a["run_id"] or None, tags, a["run_link"], a["description"], a["model_id"] or None)
    return {"model_version": version}


async def get(ctx: Context, a: dict) -> dict:
    name, version = _name_and_version(a)
    return {"model_version": await ctx.services.stores.registry.get_version(ctx.project, name, version)}


async def update(ctx: Context, a: dict) -> dict:
    name, version = _name_and_version(a)
    return {"model_version": await ctx.services.stores.registry.update_version(ctx.project, name, version, a["description"])}


async def delete(ctx: Context, a: dict) -> dict:
    name, version = _name_and_version(a)
    await ctx.services.stores.registry.delete_version(ctx.project, name, version)
    return {}


async def transition_stage(ctx: Context, a: dict) -> dict:
    name, version = _name_and_version(a)
    mv = await ctx.services.stores.registry.transition_stage(ctx.project, 
        name, version, a["stage"], bool(a["archive_existing_versions"]))
    return {"model_version": mv}


async def get_download_uri(ctx: Context, a: dict) -> dict:
    name, version = _name_and_version(a)
    return {"artifact_uri": await ctx.services.stores.registry.get_download_uri(ctx.project, name, version)}


async def search(ctx: Context, a: dict) -> dict:
    check_no_nul(a)
    max_results = validate_max_results(a["max_results"], DEFAULT_SEARCH_RESULTS, MAX_SEARCH_RESULTS)
    versions, token = await ctx.services.stores.registry.search_versions(ctx.project, 
        a["filter"], max_results, a["order_by"], a["page_token"])
    out: dict = {"model_versions": versions}
    if token:
        out["next_page_token"] = token
    return out


async def set_tag(ctx: Context, a: dict) -> dict:
    name, version = _name_and_version(a)
    value = a["value"] or ""
    validate_registry_tag(a["key"], value)
    await ctx.services.stores.registry.set_version_tag(ctx.project, name, version, a["key"], value)
    return {}


async def delete_tag(ctx: Context, a: dict) -> dict:
    name, version = _name_and_version(a)
    validate_key(a["key"], "key")
    await ctx.services.stores.registry.delete_version_tag(ctx.project, name, version, a["key"])
    return {}


_NAME = Field("name", STRING, required=True)
_VERSION = Field("version", STRING, required=True)
_SEARCH = Schema(Field("filter", STRING), Field("max_results", INT64), Field("order_by", Repeated(STRING)),
                 Field("page_token", STRING))

ENDPOINTS = [
    Endpoint("POST", "/model-versions/create", create, Schema(
        _NAME, Field("source", STRING, required=True), Field("run_id", STRING), Field("tags", Repeated(TAG)),
        Field("run_link", STRING), Field("description", STRING), Field("model_id", STRING)), access="write"),
    Endpoint("GET", "/model-versions/get", get, Schema(_NAME, _VERSION), access="read"),
    Endpoint("PATCH", "/model-versions/update", update, Schema(
        _NAME, _VERSION, Field("description", STRING)), access="write"),
    Endpoint("DELETE", "/model-versions/delete", delete, Schema(_NAME, _VERSION), access="delete"),
    Endpoint("POST", "/model-versions/transition-stage", transition_stage, Schema(
        _NAME, _VERSION, Field("stage", STRING, required=True),
        Field("archive_existing_versions", BOOL, default=False)), access="write"),
    Endpoint("GET", "/model-versions/get-download-uri", get_download_uri, Schema(_NAME, _VERSION), access="read"),
    # The proto routes search as GET only; POST is accepted too, as for experiments and runs.
    Endpoint("GET", "/model-versions/search", search, _SEARCH, access="read"),
    Endpoint("POST", "/model-versions/search", search, _SEARCH, access="read"),
    Endpoint("POST", "/model-versions/set-tag", set_tag, Schema(
        _NAME, _VERSION, Field("key", STRING, required=True), Field("value", STRING)), access="write"),
    Endpoint("DELETE", "/model-versions/delete-tag", delete_tag, Schema(
        _NAME, _VERSION, Field("key", STRING, required=True)), access="write"),
]
