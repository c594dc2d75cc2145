"""Logged models (MLflow 3): create, get, finalize, delete, search, tags and params."""
from __future__ import annotations

from modelyard.errors import MlflowError
from modelyard.server.api.runs import PARAM, TAG, check_param
from modelyard.server.compat import logged_model_status
from modelyard.server.routing import Context, Endpoint
from modelyard.server.schema import ANY, BOOL, INT64, STRING, Field, Message, Repeated, Schema
from modelyard.server.validation import MAX_TAG_VALUE, validate_key, validate_length
from modelyard.store.logged_models import STATUSES

__all__ = ["ENDPOINTS"]

MAX_SEARCH_RESULTS = 1000


def _check_tags(tags: list[dict]) -> None:
    for t in tags:
        validate_key(t["key"], "key")
        validate_length(t["value"], MAX_TAG_VALUE, "Tag value")


async def create(ctx: Context, a: dict) -> dict:
    for p in a["params"]:
        check_param(p)
    _check_tags(a["tags"])
    model = await ctx.services.stores.logged_models.create(
        ctx.project,
        a["experiment_id"], a["name"], a["model_type"], a["source_run_id"], a["params"], a["tags"])
    return {"model": model}


async def get(ctx: Context, a: dict) -> dict:
    return {"model": await ctx.services.stores.logged_models.get(ctx.project, a["model_id"])}


async def finalize(ctx: Context, a: dict) -> dict:
    status = logged_model_status(a["status"])
    if status not in STATUSES:
        raise MlflowError.invalid(f"Invalid value {a['status']!r} for parameter 'status' supplied.")
    return {"model": await ctx.services.stores.logged_models.finalize(ctx.project, a["model_id"], status)}


async def delete(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.logged_models.delete(ctx.project, a["model_id"])
    return {}


async def set_tags(ctx: Context, a: dict) -> dict:
    _check_tags(a["tags"])
    await ctx.services.stores.logged_models.set_tags(ctx.project, a["model_id"], a["tags"])
    return {}


async def delete_tag(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.logged_models.delete_tag(ctx.project, a["model_id"], a["tag_key"])
    return {}


async def log_params(ctx: Context, a: dict) -> dict:
    for p in a["params"]:
        check_param(p)
    await ctx.services.stores.logged_models.log_params(ctx.project, a["model_id"], a["params"])
    return {}


async def search(ctx: Context, a: dict) -> dict:
    max_results = a["max_results"] if a["max_results"] is not None else 100
    if not 0 < max_results <= MAX_SEARCH_RESULTS:
        raise MlflowError.invalid(f"Invalid value {max_results} for parameter 'max_results' supplied. "
                                  f"It must be at most {MAX_SEARCH_RESULTS}, and greater than 0.")
    models, token = await ctx.services.stores.logged_models.search(
        ctx.project,
        a["experiment_ids"], a["filter"], a["datasets"], max_results, a["order_by"], a["page_token"])
    out = {"models": models}
    if token:
        out["next_page_token"] = token
    return out


_ID = Field("model_id", STRING)

ENDPOINTS = [
    Endpoint("POST", "/logged-models", create, Schema(
        Field("experiment_id", STRING, required=True), Field("name", STRING), Field("model_type", STRING),
        Field("source_run_id", STRING), Field("params", Repeated(PARAM)), Field("tags", Repeated(TAG))), access="write"),
    Endpoint("POST", "/logged-models/search", search, Schema(
        Field("experiment_ids", Repeated(STRING)), Field("filter", STRING),
        Field("datasets", Repeated(Message(Field("dataset_name", STRING, required=True), Field("dataset_digest", STRING)))),
        Field("max_results", INT64),
        Field("order_by", Repeated(Message(
            Field("field_name", STRING, required=True), Field("ascending", BOOL, default=True),
            Field("dataset_name", STRING), Field("dataset_digest", STRING)))),
        Field("page_token", STRING)), access="read"),
    Endpoint("GET", "/logged-models/{model_id}", get, Schema(_ID), access="read"),
    Endpoint("PATCH", "/logged-models/{model_id}", finalize, Schema(_ID, Field("status", ANY, required=True)), access="write"),
    Endpoint("DELETE", "/logged-models/{model_id}", delete, Schema(_ID), access="delete"),
    Endpoint("PATCH", "/logged-models/{model_id}/tags", set_tags, Schema(_ID, Field("tags", Repeated(TAG))), access="write"),
    Endpoint("DELETE", "/logged-models/{model_id}/tags/{tag_key}", delete_tag, Schema(_ID, Field("tag_key", STRING)), access="write"),
    Endpoint("POST", "/logged-models/{model_id}/params", log_params, Schema(_ID, Field("params", Repeated(PARAM))), access="write"),
]
