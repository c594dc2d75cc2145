"""Runs: create, get, update, delete, restore, search, log-*, tags, inputs and outputs."""
from __future__ import annotations

from modelyard.errors import MlflowError
from modelyard.server.compat import RUN_ID_ALIASES
from modelyard.server.routing import Context, Endpoint
from modelyard.server.schema import DOUBLE, INT64, STRING, Field, Message, Repeated, Schema
from modelyard.server.validation import (
    MAX_PARAM_VALUE, MAX_TAG_VALUE, validate_key, validate_length, validate_run_id,
)
from modelyard.store.experiments import ACTIVE, DELETED
from modelyard.store.runs import STATUSES

__all__ = ["ENDPOINTS", "METRIC", "PARAM", "TAG", "run_id_arg", "check_param", "check_metric", "check_tag"]

MAX_METRICS, MAX_PARAMS, MAX_TAGS, MAX_ENTITIES = 1000, 100, 100, 1000
MAX_BATCH_BYTES = 1_000_000
MAX_SEARCH_RESULTS = 50_000

TAG = Message(Field("key", STRING, required=True), Field("value", STRING, default=""))
PARAM = Message(Field("key", STRING, required=True), Field("value", STRING, default=""))
METRIC = Message(
    Field("key", STRING, required=True), Field("value", DOUBLE, required=True),
    Field("timestamp", INT64, required=True), Field("step", INT64, default=0),
    Field("model_id", STRING), Field("dataset_name", STRING), Field("dataset_digest", STRING),
)
_RUN_ID = Field("run_id", STRING, required=True, aliases=RUN_ID_ALIASES)


def run_id_arg(a: dict) -> str:
    validate_run_id(a["run_id"])
    return a["run_id"]


def check_metric(m: dict) -> None:
    validate_key(m["key"], "key")
    if m["timestamp"] < 0:
        raise MlflowError.invalid(f"Invalid value {m['timestamp']} for parameter 'timestamp' supplied: "
                                  "it must be a non-negative integer.")


def check_param(p: dict) -> None:
    validate_key(p["key"], "key")
    validate_length(p["value"], MAX_PARAM_VALUE, "Param value")


def check_tag(t: dict) -> None:
    validate_key(t["key"], "key")
    validate_length(t["value"], MAX_TAG_VALUE, "Tag value")


async def create(ctx: Context, a: dict) -> dict:
    for t in a["tags"]:
        check_tag(t)
    run = await ctx.services.stores.runs.create(
        ctx.project,
        a["experiment_id"] or "0", a["user_id"], a["start_time"], a["run_name"], a["tags"])
    return {"run": run}


async def get(ctx: Context, a: dict) -> dict:
    return {"run": await ctx.services.stores.runs.get(ctx.project, run_id_arg(a))}


async def update(ctx: Context, a: dict) -> dict:
    info = await ctx.services.stores.runs.update(ctx.project, run_id_arg(a), a["status"], a["end_time"], a["run_name"])
    return {"run_info": info}


async def delete(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.runs.set_lifecycle(ctx.project, run_id_arg(a), DELETED)
    return {}


async def restore(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.runs.set_lifecycle(ctx.project, run_id_arg(a), ACTIVE)
    return {}


async def log_metric(ctx: Context, a: dict) -> dict:
    check_metric(a)
    await ctx.services.stores.runs.log_batch(ctx.project, run_id_arg(a), [a], [], [])
    return {}


async def log_param(ctx: Context, a: dict) -> dict:
    check_param(a)
    await ctx.services.stores.runs.log_batch(ctx.project, run_id_arg(a), [], [a], [])
    return {}


async def set_tag(ctx: Context, a: dict) -> dict:
    check_tag(a)
    await ctx.services.stores.runs.log_batch(ctx.project, run_id_arg(a), [], [], [a])
    return {}


async def delete_tag(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.runs.delete_tag(ctx.project, run_id_arg(a), a["key"])
    return {}


async def log_batch(ctx: Context, a: dict) -> dict:
    run_id = run_id_arg(a)
    metrics, params, tags = a["metrics"], a["params"], a["tags"]
    if len(metrics) > MAX_METRICS:
        raise MlflowError.invalid(f"A batch logging request can contain at most {MAX_METRICS} metrics. "
                                  f"Got {len(metrics)} metrics. Please split up metrics across multiple requests and try again.")
    if len(params) > MAX_PARAMS:
        raise MlflowError.invalid(f"A batch logging request can contain at most {MAX_PARAMS} params. "
                                  f"Got {len(params)} params. Please split up params across multiple requests and try again.")
    if len(tags) > MAX_TAGS:
        raise MlflowError.invalid(f"A batch logging request can contain at most {MAX_TAGS} tags. "
                                  f"Got {len(tags)} tags. Please split up tags across multiple requests and try again.")
    total = len(metrics) + len(params) + len(tags)
    if total > MAX_ENTITIES:
        raise MlflowError.invalid(f"A batch logging request can contain at most {MAX_ENTITIES} total metrics, "
                                  f"params and tags. Got {total}.")
    declared = ctx.request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BATCH_BYTES:
        raise MlflowError.invalid(f"Batched logging API requests must be at most {MAX_BATCH_BYTES} bytes, "
                                  f"got a request of {declared} bytes.")
    seen = set()
    for p in params:
        if p["key"] in seen:
            raise MlflowError.invalid(f"Duplicate parameter keys have been submitted: ['{p['key']}']. "
                                      "Please ensure the request contains only one param value per param key.")
        seen.add(p["key"])
        check_param(p)
    for m in metrics:
        check_metric(m)
    for t in tags:
        check_tag(t)
    await ctx.services.stores.runs.log_batch(ctx.project, run_id, metrics, params, tags)
    return {}


async def log_inputs(ctx: Context, a: dict) -> dict:
    for item in a["datasets"]:
        ds = item["dataset"]
        validate_length(ds["name"], 500, "Dataset name")
        validate_length(ds["digest"], 36, "Dataset digest")
        validate_length(ds["source"], 65535, "Dataset source")
        validate_length(ds.get("schema"), 1_048_575, "Dataset schema")
        validate_length(ds.get("profile"), 16_777_215, "Dataset profile")
        for t in item["tags"]:
            validate_length(t["key"], 255, "Input tag key")
            validate_length(t["value"], 500, "Input tag value")
    await ctx.services.stores.runs.log_inputs(ctx.project, run_id_arg(a), a["datasets"], a["models"])
    return {}


async def log_outputs(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.runs.log_outputs(ctx.project, run_id_arg(a), a["models"])
    return {}


async def search(ctx: Context, a: dict) -> dict:
    max_results = a["max_results"] if a["max_results"] is not None else 1000
    if not 0 < max_results <= MAX_SEARCH_RESULTS:
        raise MlflowError.invalid(f"Invalid value {max_results} for parameter 'max_results' supplied. "
                                  f"It must be at most {MAX_SEARCH_RESULTS}, and greater than 0.")
    found, token = await ctx.services.stores.runs.search(
        ctx.project,
        a["experiment_ids"], a["filter"], a["run_view_type"], max_results, a["order_by"], a["page_token"])
    out = {"runs": found} if found else {}
    if token:
        out["next_page_token"] = token
    return out


_DATASET = Message(
    Field("name", STRING, required=True), Field("digest", STRING, required=True),
    Field("source_type", STRING, required=True), Field("source", STRING, required=True),
    Field("schema", STRING), Field("profile", STRING),
)
_DATASET_INPUT = Message(Field("tags", Repeated(Message(Field("key", STRING, required=True),
                                                         Field("value", STRING, required=True)))),
                         Field("dataset", _DATASET, required=True))

ENDPOINTS = [
    Endpoint("POST", "/runs/create", create, Schema(
        Field("experiment_id", STRING), Field("user_id", STRING), Field("run_name", STRING),
        Field("start_time", INT64), Field("tags", Repeated(TAG))), access="write"),
    Endpoint("GET", "/runs/get", get, Schema(_RUN_ID), access="read"),
    Endpoint("POST", "/runs/update", update, Schema(
        _RUN_ID, Field("status", STRING, choices=STATUSES), Field("end_time", INT64), Field("run_name", STRING)), access="write"),
    Endpoint("POST", "/runs/delete", delete, Schema(_RUN_ID), access="delete"),
    Endpoint("POST", "/runs/restore", restore, Schema(_RUN_ID), access="delete"),
    Endpoint("POST", "/runs/log-metric", log_metric, Schema(_RUN_ID, *METRIC.fields), access="write"),
    Endpoint("POST", "/runs/log-parameter", log_param, Schema(_RUN_ID, *PARAM.fields), access="write"),
    Endpoint("POST", "/runs/set-tag", set_tag, Schema(_RUN_ID, *TAG.fields), access="write"),
    Endpoint("POST", "/runs/delete-tag", delete_tag, Schema(_RUN_ID, Field("key", STRING, required=True)), access="write"),
    Endpoint("POST", "/runs/log-batch", log_batch, Schema(
        _RUN_ID, Field("metrics", Repeated(METRIC)), Field("params", Repeated(PARAM)), Field("tags", Repeated(TAG))), access="write"),
    Endpoint("POST", "/runs/log-inputs", log_inputs, Schema(
        _RUN_ID, Field("datasets", Repeated(_DATASET_INPUT)),
        Field("models", Repeated(Message(Field("model_id", STRING, required=True))))), access="write"),
    Endpoint("POST", "/runs/outputs", log_outputs, Schema(
        _RUN_ID, Field("models", Repeated(Message(Field("model_id", STRING, required=True), Field("step", INT64))))), access="write"),
    Endpoint("POST", "/runs/search", search, Schema(
        Field("experiment_ids", Repeated(STRING)), Field("filter", STRING),
        Field("run_view_type", STRING, choices=("ACTIVE_ONLY", "DELETED_ONLY", "ALL")),
        Field("max_results", INT64), Field("order_by", Repeated(STRING)), Field("page_token", STRING)), access="read"),
]
