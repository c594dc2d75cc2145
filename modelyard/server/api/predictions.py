"""Prediction logs and labels (``/api/modelyard/v1/predictions/...``).

``POST /predictions/log`` takes up to 10,000 predictions per request, one item per input row::

    {"predictions": [{"request_id": "r1", "timestamp_ms": 1700000000000, "deployment": "fraud",
                      "model_name": "fraud", "model_version": "3", "inputs": {"amount": 12.5},
                      "outputs": 0, "latency_ms": 3.2, "shadow": false}]}

or, as ``modelyard serve`` sends them, one item per request with the fields its rows share sent
once (row ``i`` of a request of several rows is stored as ``<request_id>:<i>``)::

    {"requests": [{"request_id": "r2", "timestamp_ms": 1700000000000, "deployment": "fraud",
                   "model_version": "3", "latency_ms": 4.1, "columns": ["amount", "country"],
                   "inputs": [[12.5, "FR"], [80.0, "DE"]], "outputs": [0, 1]}]}

and answers ``{"accepted": n}`` (rows) once all are committed (or none, with a 400 naming the first bad
item). ``error`` (a string) may mark a failed prediction. ``POST /predictions/labels`` takes
``{"labels": [{"request_id", "label"}]}``: ground truth that may come hours later, joined to its
prediction by request id (a label may also arrive first). Items are validated here by hand, not by
the generic schema: this is the hottest write path of the server.
"""
from __future__ import annotations

import math
import time

import orjson

from modelyard.errors import MlflowError
from modelyard.server.routing import Context, Endpoint
from modelyard.server.schema import ANY, INT64, STRING, Field, Schema, invalid_value
from modelyard.server.validation import validate_time_ms

__all__ = ["ENDPOINTS", "MAX_ITEMS"]

MAX_ITEMS = 10_000
MAX_ID = 256
_FUTURE_MS = 86_400_000
_dumps = orjson.dumps


def _bad(path: str, value, why: str) -> MlflowError:
    return MlflowError.invalid(invalid_value(path, value, why))


def _text(item: dict, key: str, path: str, required: bool = True) -> str | None:
    v = item.get(key)
    if type(v) is str and 0 < len(v) <= MAX_ID:
        return v
    if v is None and not required:
        return None
    if type(v) is int and key == "model_version":
        return str(v)
    raise _bad(f"{path}.{key}", v, f"a non-empty string of at most {MAX_ID} characters.")


def _timestamp(ts, path: str, oldest: int, newest: int) -> int:
    if type(ts) is not int:
        if isinstance(ts, float) and ts.is_integer():
            ts = int(ts)
        else:
            raise _bad(path, ts, "milliseconds since the epoch, a whole number.")
    if not oldest <= ts <= newest:
        raise _bad(path, ts, "outside the retention period or more than a day ahead of the server's clock.")
    return ts


def _common(p: dict, path: str, oldest: int, newest: int) -> tuple:
    """The fields a prediction (or a request's rows) share, checked: (deployment, ts, model name,
    model version, latency, shadow, error)."""
    dep = p.get("deployment")
    if type(dep) is not str or not 0 < len(dep) <= MAX_ID:
        raise _bad(f"{path}.deployment", dep, f"a non-empty string of at most {MAX_ID} characters.")
    ts = _timestamp(p.get("timestamp_ms"), f"{path}.timestamp_ms", oldest, newest)
    latency = p.get("latency_ms")
    if latency is not None and (type(latency) not in (int, float) or not math.isfinite(latency) or latency < 0):
        raise _bad(f"{path}.latency_ms", latency, "a number of milliseconds >= 0.")
    shadow = p.get("shadow", False)
    if type(shadow) is not bool:
        raise _bad(f"{path}.shadow", shadow, "true or false.")
    error = p.get("error")
    if error is not None and type(error) is not str:
        raise _bad(f"{path}.error", error, "a string describing the failure.")
    return (dep, ts, _text(p, "model_name", path, False), _text(p, "model_version", path, False), latency, shadow,
            error[:2000] if error else None)


def _item(p, path: str, what: str, oldest: int, newest: int) -> tuple[str, tuple]:
    """An item's request id and its checked common fields (see :func:`_common`)."""
    if type(p) is not dict:
        raise _bad(path, p, f"each {what} is an object.")
    rid = p.get("request_id")
    if type(rid) is not str or not 0 < len(rid) <= MAX_ID:
        raise _bad(f"{path}.request_id", rid, f"a non-empty string of at most {MAX_ID} characters.")
    return rid, _common(p, path, oldest, newest)


def _prediction_rows(project: str, items: list, oldest: int, newest: int) -> list[tuple]:
    """One row per item of ``{"predictions": [...]}``."""
    rows = []
    append = rows.append
    for i, p in enumerate(items):
        path = f"predictions[{i}]"
        rid, (dep, ts, name, version, latency, shadow, error) = _item(p, path, "prediction", oldest, newest)
        inputs = p.get("inputs")
        if type(inputs) is not dict:
            raise _bad(f"{path}.inputs", inputs, "an object of column -> value.")
        outputs = p.get("outputs")
        append((project, dep, ts, rid, name, version, latency, shadow, error, _dumps(inputs).decode(),
                None if outputs is None else _dumps(outputs).decode()))
    return rows


def _request_rows(project: str, items: list, oldest: int, newest: int) -> list[tuple]:
    """The rows of each item of ``{"requests": [...]}``: one request's rows, whose shared fields are
    sent once. ``inputs`` is a list of rows, each an object, or a list of values named by
    ``columns``; ``outputs`` (optional) has one item per row. Row ``i`` of a request of several
    rows is stored under ``<request_id>:<i>``, a request of one row under its request id."""
    rows = []
    append = rows.append
    total = 0
    for i, p in enumerate(items):
        path = f"requests[{i}]"
        rid, (dep, ts, name, version, latency, shadow, error) = _item(p, path, "request", oldest, newest)
        inputs, outputs, columns = p.get("inputs"), p.get("outputs"), p.get("columns")
        if type(inputs) is not list or not inputs:
            raise _bad(f"{path}.inputs", inputs, "a non-empty list of rows.")
        n = len(inputs)
        total += n
        if total > MAX_ITEMS:
            raise MlflowError.invalid(f"A request logs at most {MAX_ITEMS} predictions; got more.")
        if outputs is not None and (type(outputs) is not list or len(outputs) != n):
            raise _bad(f"{path}.outputs", outputs, f"a list of one output per input row ({n}).")
        if columns is not None and (type(columns) is not list or not columns
                                    or any(type(c) is not str for c in columns)):
            raise _bad(f"{path}.columns", columns, "a non-empty list of column names.")
        ids = (rid,) if n == 1 else [f"{rid}:{j}" for j in range(n)]
        for j, row in enumerate(inputs):
            if type(row) is list and columns is not None and len(row) == len(columns):
                row = dict(zip(columns, row))
            elif type(row) is not dict:
                raise _bad(f"{path}.inputs[{j}]", row,
                           "an object of column -> value, or a list of as many values as 'columns' names.")
            out = None if outputs is None else outputs[j]
            append((project, dep, ts, ids[j], name, version, latency, shadow, error, _dumps(row).decode(),
                    None if out is None else _dumps(out).decode()))
    return rows


async def log_predictions(ctx: Context, a: dict) -> dict:
    predictions, requests = a["predictions"], a["requests"]
    if (predictions is None) == (requests is None):
        raise MlflowError.invalid("Send either 'predictions' (one object per row) or 'requests' (one object per "
                                  "request, with its rows); not both, not neither.")
    items = predictions if requests is None else requests
    key = "predictions" if requests is None else "requests"
    if not isinstance(items, list) or not items:
        raise MlflowError.invalid(f"'{key}' is a non-empty list of objects.")
    if len(items) > MAX_ITEMS:
        raise MlflowError.invalid(f"A request logs at most {MAX_ITEMS} predictions; got {len(items)}.")
    settings = ctx.services.settings
    now = int(time.time() * 1000)
    oldest = now - settings.prediction_retention_days * 86_400_000
    newest = now + _FUTURE_MS
    parse = _prediction_rows if requests is None else _request_rows
    rows = parse(ctx.project, items, oldest, newest)
    n = await ctx.services.stores.predictions.log(ctx.project, rows, settings.monitor_bucket_seconds * 1000)
    return {"accepted": n}


async def log_labels(ctx: Context, a: dict) -> dict:
    items = a["labels"]
    if not isinstance(items, list) or not items:
        raise MlflowError.invalid("'labels' is a non-empty list of {request_id, label} objects.")
    if len(items) > MAX_ITEMS:
        raise MlflowError.invalid(f"A request logs at most {MAX_ITEMS} labels; got {len(items)}.")
    labels: dict[str, str] = {}
    for i, item in enumerate(items):
        if type(item) is not dict:
            raise _bad(f"labels[{i}]", item, "each label is an object {request_id, label}.")
        rid = item.get("request_id")
        if type(rid) is not str or not 0 < len(rid) <= MAX_ID:
            raise _bad(f"labels[{i}].request_id", rid, f"a non-empty string of at most {MAX_ID} characters.")
        if "label" not in item or item["label"] is None:
            raise _bad(f"labels[{i}].label", None, "the ground truth of that request (any JSON value but null).")
        labels[rid] = _dumps(item["label"]).decode()  # a repeated request id keeps its last label
    matched = await ctx.services.stores.predictions.label(
        ctx.project, list(labels.items()), ctx.services.settings.monitor_bucket_seconds * 1000)
    return {"accepted": len(labels), "matched": matched}


async def search_predictions(ctx: Context, a: dict) -> dict:
    """The newest logged predictions of a deployment (with labels), for debugging and the UI."""
    limit = a["max_results"] or 100
    if not 1 <= limit <= 1000:
        raise MlflowError.invalid("'max_results' is between 1 and 1000.")
    validate_time_ms(a["start_ms"], "start_ms")
    validate_time_ms(a["end_ms"], "end_ms")
    end = a["end_ms"] if a["end_ms"] is not None else int(time.time() * 1000) + 1
    start = a["start_ms"] if a["start_ms"] is not None else end - 86_400_000
    if start >= end:
        raise MlflowError.invalid("'start_ms' must be before 'end_ms'.")
    rows = await ctx.services.stores.predictions.search(ctx.project, a["deployment"], start, end, limit)
    return {"predictions": rows}


ENDPOINTS = [
    Endpoint("POST", "/predictions/log", log_predictions,
             Schema(Field("predictions", ANY), Field("requests", ANY)), access="write"),
    Endpoint("POST", "/predictions/labels", log_labels, Schema(Field("labels", ANY, required=True)), access="write"),
    Endpoint("GET", "/predictions/search", search_predictions, Schema(
        Field("deployment", STRING, required=True), Field("start_ms", INT64), Field("end_ms", INT64),
        Field("max_results", INT64)), access="read"),
]
