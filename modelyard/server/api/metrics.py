"""Metric history: get-history (paged), get-history-bulk (UI) and get-history-bulk-interval."""
from __future__ import annotations

from modelyard.errors import MlflowError
from modelyard.server.api.runs import run_id_arg
from modelyard.server.compat import HISTORY_PAGE_CAP, RUN_ID_ALIASES
from modelyard.server.routing import Context, Endpoint
from modelyard.server.schema import INT64, STRING, Field, Repeated, Schema
from modelyard.server.validation import validate_run_id

__all__ = ["ENDPOINTS"]

MAX_HISTORY_PAGE = HISTORY_PAGE_CAP
MAX_BULK_RUNS = 100
MAX_INTERVAL_RESULTS = 2500


async def get_history(ctx: Context, a: dict) -> dict:
    max_results = a["max_results"] or MAX_HISTORY_PAGE
    if not 0 < max_results <= MAX_HISTORY_PAGE:
        max_results = MAX_HISTORY_PAGE  # capped, not refused: see compat.HISTORY_PAGE_CAP
    found, token = await ctx.services.stores.metrics.history(ctx.project, run_id_arg(a), a["metric_key"], max_results, a["page_token"])
    out = {"metrics": found}
    if token:
        out["next_page_token"] = token
    return out


def _check_run_ids(run_ids: list[str]) -> None:
    if not run_ids:
        raise MlflowError.invalid("GetMetricHistoryBulk request must specify at least one run_id.")
    if len(run_ids) > MAX_BULK_RUNS:
        raise MlflowError.invalid(f"GetMetricHistoryBulk request cannot specify more than {MAX_BULK_RUNS} run_ids. "
                                  f"Received {len(run_ids)} run_ids.")
    for r in run_ids:
        validate_run_id(r)


async def get_history_bulk(ctx: Context, a: dict) -> dict:
    _check_run_ids(a["run_id"])
    max_results = min(a["max_results"] or MAX_HISTORY_PAGE, MAX_HISTORY_PAGE)
    found = await ctx.services.stores.metrics.history_bulk(ctx.project, a["run_id"], a["metric_key"], max_results)
    return {"metrics": found}


async def get_history_bulk_interval(ctx: Context, a: dict) -> dict:
    _check_run_ids(a["run_ids"])
    max_results = a["max_results"] if a["max_results"] is not None else MAX_INTERVAL_RESULTS
    if not 0 < max_results <= MAX_INTERVAL_RESULTS:
        raise MlflowError.invalid(f"max_results must be between 1 and {MAX_INTERVAL_RESULTS}.")
    found = await ctx.services.stores.metrics.history_bulk_interval(
        ctx.project,
        a["run_ids"], a["metric_key"], a["start_step"], a["end_step"], max_results)
    return {"metrics": found}


_KEY = Field("metric_key", STRING, required=True)

ENDPOINTS = [
    Endpoint("GET", "/metrics/get-history", get_history, Schema(
        Field("run_id", STRING, required=True, aliases=RUN_ID_ALIASES), _KEY,
        Field("max_results", INT64), Field("page_token", STRING)), access="read"),
    Endpoint("GET", "/metrics/get-history-bulk", get_history_bulk, Schema(
        Field("run_id", Repeated(STRING)), _KEY, Field("max_results", INT64)), access="read"),
    Endpoint("GET", "/metrics/get-history-bulk-interval", get_history_bulk_interval, Schema(
        Field("run_ids", Repeated(STRING)), _KEY, Field("start_step", INT64), Field("end_step", INT64),
        Field("max_results", INT64)), access="read"),
]
