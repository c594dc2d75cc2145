"""Experiments: create, get, get-by-name, search, update, delete, restore, tags."""
from __future__ import annotations

from modelyard.errors import MlflowError
from modelyard.server.routing import Context, Endpoint
from modelyard.server.schema import INT64, STRING, Field, Message, Repeated, Schema
from modelyard.server.validation import (
    MAX_EXPERIMENT_TAG_VALUE, validate_experiment_name, validate_key, validate_length,
)
from modelyard.store.experiments import ACTIVE, DELETED

__all__ = ["ENDPOINTS"]

TAG = Message(Field("key", STRING), Field("value", STRING))
MAX_SEARCH_RESULTS = 50_000


async def create(ctx: Context, a: dict) -> dict:
    validate_experiment_name(a["name"])
    for tag in a["tags"]:
        validate_key(tag["key"] or "", "key")
        validate_length(tag["value"], MAX_EXPERIMENT_TAG_VALUE, "Tag value")
    if a["artifact_location"] and ".." in a["artifact_location"].split("/"):
        raise MlflowError.invalid("Invalid artifact_location: must not contain '..'")
    exp_id = await ctx.services.stores.experiments.create(ctx.project, a["name"], a["artifact_location"], a["tags"])
    return {"experiment_id": exp_id}


async def get(ctx: Context, a: dict) -> dict:
    return {"experiment": await ctx.services.stores.experiments.get(ctx.project, a["experiment_id"])}


async def get_by_name(ctx: Context, a: dict) -> dict:
    return {"experiment": await ctx.services.stores.experiments.get_by_name(ctx.project, a["experiment_name"])}


async def search(ctx: Context, a: dict) -> dict:
    max_results = a["max_results"] if a["max_results"] is not None else 1000
    if not 1 <= max_results <= MAX_SEARCH_RESULTS:
        raise MlflowError.invalid(
            f"Invalid value {max_results} for parameter 'max_results' supplied. It must be at most "
            f"{MAX_SEARCH_RESULTS}, and greater than 0.")
    view = a["view_type"] or "ACTIVE_ONLY"
    exps, token = await ctx.services.stores.experiments.search(
        ctx.project,
        view, max_results, a["filter"], a["order_by"], a["page_token"])
    out = {"experiments": exps}
    if token:
        out["next_page_token"] = token
    return out


async def update(ctx: Context, a: dict) -> dict:
    if a["new_name"] is not None:
        validate_experiment_name(a["new_name"])
        await ctx.services.stores.experiments.rename(ctx.project, a["experiment_id"], a["new_name"])
    return {}


async def delete(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.experiments.set_lifecycle(ctx.project, a["experiment_id"], DELETED)
    return {}


async def restore(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.experiments.set_lifecycle(ctx.project, a["experiment_id"], ACTIVE)
    return {}


async def set_tag(ctx: Context, a: dict) -> dict:
    validate_key(a["key"], "key")
    validate_length(a["value"], MAX_EXPERIMENT_TAG_VALUE, "Tag value")
    await ctx.services.stores.experiments.set_tag(ctx.project, a["experiment_id"], a["key"], a["value"])
    return {}


async def delete_tag(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.experiments.delete_tag(ctx.project, a["experiment_id"], a["key"])
    return {}


_SEARCH = Schema(
    Field("max_results", INT64), Field("page_token", STRING), Field("filter", STRING),
    Field("order_by", Repeated(STRING)), Field("view_type", STRING, choices=("ACTIVE_ONLY", "DELETED_ONLY", "ALL")),
)
_ID = Field("experiment_id", STRING, required=True)

ENDPOINTS = [
    Endpoint("POST", "/experiments/create", create, Schema(
        Field("name", STRING, required=True), Field("artifact_location", STRING), Field("tags", Repeated(TAG))), access="write"),
    Endpoint("GET", "/experiments/get", get, Schema(_ID), access="read"),
    Endpoint("GET", "/experiments/get-by-name", get_by_name, Schema(Field("experiment_name", STRING, required=True)), access="read"),
    Endpoint("POST", "/experiments/search", search, _SEARCH, access="read"),
    Endpoint("GET", "/experiments/search", search, _SEARCH, access="read"),
    Endpoint("POST", "/experiments/update", update, Schema(_ID, Field("new_name", STRING)), access="write"),
    Endpoint("POST", "/experiments/delete", delete, Schema(_ID), access="delete"),
    Endpoint("POST", "/experiments/restore", restore, Schema(_ID), access="delete"),
    Endpoint("POST", "/experiments/set-experiment-tag", set_tag, Schema(
        _ID, Field("key", STRING, required=True), Field("value", STRING, required=True)), access="write"),
    Endpoint("POST", "/experiments/delete-experiment-tag", delete_tag, Schema(
        _ID, Field("key", STRING, required=True)), access="write"),
]
