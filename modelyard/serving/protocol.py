"""MLflow's scoring protocol: request bodies in, one model call per batch, predictions out.

A request body becomes a :class:`Payload`: its rows in the cheapest form that still means what
MLflow's scoring server would make of them, and a *group key*. Payloads with equal keys (same
kind, same columns or trailing shape and dtype, same params) can be merged into one model call
without changing what any of them gets back; a payload whose key is None always runs alone.

The common bodies (``inputs``/``instances`` as a list of rows for a tensor model,
``dataframe_split`` and ``dataframe_records`` with one column set) are parsed here with orjson and
numpy on the event loop, in microseconds. Everything else (CSV, Parquet, columnar ``inputs``,
unified LLM payloads, models whose signature comes from type hints, any body the fast path does
not recognise) goes through MLflow's own parser in a worker thread, so errors and odd formats
behave exactly as with ``mlflow models serve``.

:func:`execute` runs one batch: merge, predict, split the output back by row counts and encode
each caller's answer. If the merged call fails, or its output cannot be split by rows, each
payload is run on its own, so a bad request never fails its neighbours.
"""
from __future__ import annotations

import base64
import datetime as dt
import functools
import traceback
from dataclasses import dataclass
from io import BytesIO, StringIO
from typing import Any

import numpy as np
import orjson

__all__ = [
    "Payload", "Outcome", "ScoringError", "BodyTooLarge", "Protocol", "MLFLOW", "CONTENT_TYPES", "media_type",
    "parse_fast", "parse_slow", "execute", "mlflow_error_body",
]

CONTENT_TYPE_CSV = "text/csv"
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_PARQUET = "application/vnd.apache.parquet"
CONTENT_TYPES = [CONTENT_TYPE_CSV, CONTENT_TYPE_JSON, CONTENT_TYPE_PARQUET]
_JSON = b"application/json"
_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_NUMPY_KINDS = frozenset("biuf")  # numpy dtypes orjson writes natively: bool, int, uint, float
_DUMP = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class BodyTooLarge(Exception):
    """A request body past the server's limit (answered 413)."""


class ScoringError(Exception):
    """An answer other than predictions: status, body and content type, ready to send."""

    def __init__(self, status: int, body: bytes, content_type: bytes = b"application/json"):
        super().__init__(body[:200])
        self.status = status
        self.body = body
        self.content_type = content_type


def mlflow_error_body(message: str, error_code: str = "BAD_REQUEST", stack_trace: str | None = None) -> bytes:
    body = {"error_code": error_code, "message": message}
    if stack_trace:
        body["stack_trace"] = stack_trace
    return orjson.dumps(body)


def _status_of(error_code: str) -> int:
    from modelyard.errors import http_status

    return http_status(error_code)


class Protocol:
    """How answers and errors are written: MLflow's ``{"predictions": ...}`` here, V2 in ``v2.py``."""

    name = "mlflow"

    def encode(self, predictions: Any, payload: "Payload", version: str) -> bytes:
        if payload.unified:  # unified LLM payloads are answered unwrapped, as MLflow does
            return orjson.dumps(_jsonable(predictions), default=_default, option=_DUMP)
        return _dump_predictions(predictions)

    def error(self, message: str, error_code: str, stack_trace: str | None, payload: "Payload") -> ScoringError:
        return ScoringError(_status_of(error_code), mlflow_error_body(message, error_code, stack_trace))


MLFLOW = Protocol()


@dataclass(slots=True, eq=False)
class Payload:
    """One request's input, parsed. ``kind`` says what ``data`` holds:

    - ``array``: a numpy array, rows on axis 0;
    - ``split``: ``(columns, rows)`` lists from ``dataframe_split`` (or V2 named inputs);
    - ``records``: a list of row dicts from ``dataframe_records``;
    - ``frame``: a pandas DataFrame (CSV, Parquet, anything MLflow's parser made into one);
    - ``raw``: whatever MLflow's parser returned (dicts of tensors, LLM payloads); never merged.
    """

    kind: str
    data: Any
    rows: int
    key: tuple | None
    params: dict | None = None
    unified: bool = False
    protocol: Protocol = MLFLOW
    meta: dict | None = None  # what a protocol needs to write the answer (V2: the request's id)


@dataclass(slots=True)
class Outcome:
    """One caller's answer from a batch; ``predictions`` is its slice of the output, for logging."""

    status: int
    body: bytes
    content_type: bytes
    predictions: Any
    version: str


# -- content types ------------------------------------------------------------------------------

def media_type(content_type: bytes | None) -> str:
    """The body's MIME type, or a 415 with MLflow's wording (charset other than UTF-8, unknown type)."""
    if content_type == _JSON:
        return CONTENT_TYPE_JSON
    text = content_type.decode("latin-1") if content_type else ""
    parts = [p.strip() for p in text.split(";")]
    mime = parts[0].lower()
    parameters = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in parts[1:] if p)}
    if parameters.get("charset", "utf-8").lower() != "utf-8":
        raise ScoringError(415, b"The scoring server only supports UTF-8", b"text/plain")
    unexpected = set(parameters) - {"charset"}
    if unexpected:
        raise ScoringError(415, f"Unrecognized content type parameters: {', '.join(sorted(unexpected))}.".encode(),
                           b"text/plain")
    if mime not in CONTENT_TYPES:
        raise ScoringError(415, (f"This predictor only supports the following content types: Types: {CONTENT_TYPES}."
                                 f" Got '{text}'.").encode(), b"text/plain")
    return mime


# -- parsing ------------------------------------------------------------------------------------

def _params_key(params) -> bytes | None:
    return None if params is None else orjson.dumps(params, option=orjson.OPT_SORT_KEYS)


def parse_fast(body: bytes, model) -> Payload | None:
    """The common JSON bodies, parsed on the event loop; None sends the body to :func:`parse_slow`."""
    if not model.fast_json:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    params = doc.get("params")
    if params is not None and type(params) is not dict:
        return None
    if len(doc) != (1 if params is None else 2):
        return None
    for fmt in doc:
        if fmt != "params":
            break
    else:
        return None
    data = doc[fmt]
    if fmt == "inputs" or fmt == "instances":
        return _fast_tensor(data, params, model)
    if fmt == "dataframe_split":
        return _fast_split(data, params, model)
    if fmt == "dataframe_records":
        return _fast_records(data, params, model)
    return None


def _fast_tensor(data, params, model) -> Payload | None:
    # A list of rows for a model with one unnamed tensor input (or no signature): MLflow makes
    # np.array(data, dtype=<the spec's dtype>) of it, and so do we.
    if model.tensor_dtype is False or type(data) is not list or not data or type(data[0]) is not list:
        return None
    try:
        arr = np.asarray(data, dtype=model.tensor_dtype)
    except (ValueError, TypeError, OverflowError):
        return None  # MLflow's parser writes the error
    if arr.ndim < 2 or arr.dtype.kind not in _NUMPY_KINDS:
        return None
    return Payload("array", arr, arr.shape[0], ("array", arr.shape[1:], arr.dtype.str, _params_key(params)), params)


def _row_types(rows) -> tuple | None:
    # Without a signature nothing casts the columns afterwards, so only rows whose values have the
    # same Python types are merged: pandas then infers the same dtypes for the batch as for each.
    first = tuple(map(type, rows[0]))
    for r in rows:
        if tuple(map(type, r)) != first:
            return None
    return first


def _fast_split(data, params, model) -> Payload | None:
    if type(data) is not dict or "data" not in data or len(data) != (2 if "columns" in data else 1):
        return None  # an index, or a malformed body: MLflow's parser decides
    columns, rows = data.get("columns"), data["data"]
    if type(columns) is not list or type(rows) is not list or not rows:
        return None
    width = len(columns)
    for r in rows:
        if type(r) is not list or len(r) != width:
            return None
    key = ("split", tuple(columns), _params_key(params))
    if model.schema is None:
        types = _row_types(rows)
        key = None if types is None else key + types
    return Payload("split", (columns, rows), len(rows), key, params)


def _fast_records(data, params, model) -> Payload | None:
    if type(data) is not list or not data or type(data[0]) is not dict:
        return None
    names = tuple(data[0])
    for r in data:
        if type(r) is not dict or tuple(r) != names:
            return None
    key = ("records", names, _params_key(params))
    if model.schema is None:
        types = _row_types([list(r.values()) for r in data])
        key = None if types is None else key + types
    return Payload("records", data, len(data), key, params)


def parse_slow(body: bytes, mime: str, model) -> Payload:
    """Any body, through MLflow's own parsers (run in a worker thread: pandas is slow)."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server as mlflow_scoring

    try:
        params, unified = None, False
        if mime == CONTENT_TYPE_CSV:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ScoringError(400, mlflow_error_body(
                    f"Ensure that input is a valid UTF-8 encoded string. Error: '{exc!r}'")) from None
            data = mlflow_scoring.parse_csv_input(csv_input=StringIO(text), schema=model.schema)
        elif mime == CONTENT_TYPE_PARQUET:
            data = mlflow_scoring.parse_parquet_input(parquet_input=BytesIO(body))
        else:
            parsed = mlflow_scoring._parse_json_data(body, model.pyfunc.metadata, model.schema)
            data, params, unified = parsed.data, parsed.params, parsed.is_unified_llm_input
    except MlflowException as exc:
        raise ScoringError(exc.get_http_status_code(), exc.serialize_as_json().encode()) from None
    except ScoringError:
        raise
    except Exception as exc:  # noqa: BLE001 - a body the parsers choke on is the client's mistake, not a 500
        raise ScoringError(400, mlflow_error_body(f"Failed to parse the request body: {type(exc).__name__}: {exc}")
                           ) from None
    return payload_of(data, params, unified)


def payload_of(data, params=None, unified: bool = False) -> Payload:
    """Wrap parsed data (a DataFrame, an array, anything else) with the key that says what merges."""
    import pandas as pd

    pkey = _params_key(params) if params is None or isinstance(params, dict) else repr(params).encode()
    if unified:
        return Payload("raw", data, 1, None, params, unified=True)
    if isinstance(data, pd.DataFrame) and len(data) > 0:
        key = ("frame", tuple(map(str, data.columns)), tuple(map(str, data.dtypes)), pkey)
        return Payload("frame", data, len(data), key, params)
    if isinstance(data, np.ndarray) and data.ndim >= 1 and data.shape[0] > 0:
        key = ("array", data.shape[1:], data.dtype.str, pkey) if data.dtype.kind in _NUMPY_KINDS else None
        return Payload("array", data, data.shape[0], key, params)
    return Payload("raw", data, 1, None, params)


def reparse_for(payload: Payload, model) -> Payload | None:
    """The same rows for a model that parses differently (the shadow), or None if they do not fit.

    Row lists and frames are typed by the model that runs them (at :func:`execute`), so they are
    shared as they are; arrays are cast to the other model's tensor dtype.
    """
    if payload.kind in ("split", "records", "frame"):
        return payload
    if payload.kind == "array" and model.tensor_dtype is not False and payload.protocol is MLFLOW:
        arr = payload.data if model.tensor_dtype is None else payload.data.astype(model.tensor_dtype, copy=False)
        key = ("array", arr.shape[1:], arr.dtype.str, payload.key[3] if payload.key else None)
        return Payload("array", arr, payload.rows, key, payload.params)
    return None


# -- one model call per batch ---------------------------------------------------------------------

def _merged_input(model, payloads: list[Payload]):
    """The model's input for these payloads (all of one group key, or a single one)."""
    first = payloads[0]
    if first.kind == "array":
        return first.data if len(payloads) == 1 else np.concatenate([p.data for p in payloads])
    if first.kind == "split":
        from mlflow.utils.proto_json_utils import dataframe_from_parsed_json

        rows = first.data[1] if len(payloads) == 1 else [r for p in payloads for r in p.data[1]]
        return dataframe_from_parsed_json({"columns": first.data[0], "data": rows}, "split", model.schema)
    if first.kind == "records":
        from mlflow.utils.proto_json_utils import dataframe_from_parsed_json

        rows = first.data if len(payloads) == 1 else [r for p in payloads for r in p.data]
        return dataframe_from_parsed_json(rows, "records", model.schema)
    if first.kind == "frame" and len(payloads) > 1:
        import pandas as pd

        return pd.concat([p.data for p in payloads], ignore_index=True)
    return first.data


def _split_output(raw, counts: list[int]) -> list | None:
    """The output cut back into each caller's rows, or None when it is not one row per input row."""
    import pandas as pd

    total = sum(counts)
    if isinstance(raw, np.ndarray):
        if raw.ndim == 0 or raw.shape[0] != total:
            return None
    elif isinstance(raw, (pd.DataFrame, pd.Series, list)):
        if len(raw) != total:
            return None
    else:
        return None
    parts, start = [], 0
    for n in counts:
        parts.append(raw.iloc[start:start + n] if isinstance(raw, (pd.DataFrame, pd.Series)) else raw[start:start + n])
        start += n
    return parts


def _predict(model, data, params):
    return model.pyfunc.predict(data, params=params) if model.accepts_params else model.pyfunc.predict(data)


def execute(model, payloads: list[Payload]) -> list[Outcome]:
    """Run payloads that share a group key as one model call; each gets its own outcome."""
    version = model.version
    if len(payloads) > 1:
        try:
            raw = _predict(model, _merged_input(model, payloads), payloads[0].params)
            parts = _split_output(raw, [p.rows for p in payloads])
        except Exception:  # noqa: BLE001 - one of them is bad: run each alone below
            parts = None
        if parts is not None:
            return [_answer(p, part, version) for p, part in zip(payloads, parts)]
    return [_execute_one(model, p) for p in payloads]


def _execute_one(model, payload: Payload) -> Outcome:
    from mlflow.exceptions import MlflowException

    version = model.version
    try:
        data = _merged_input(model, [payload])
    except MlflowException as exc:
        return _failure(payload, exc.message, exc.error_code, None, version)
    try:
        raw = _predict(model, data, payload.params)
    except MlflowException as exc:
        return _failure(payload, f"Failed to predict data '{_brief(data)}'. \nError: {exc.message}",
                        exc.error_code, None, version)
    except Exception:  # noqa: BLE001 - the model's own failure is the caller's 400, as in MLflow
        return _failure(payload, "Encountered an unexpected error while evaluating the model. Verify that the "
                        "serialized input Dataframe is compatible with the model for inference.",
                        "BAD_REQUEST", traceback.format_exc(), version)
    return _answer(payload, raw, version)


def _answer(payload: Payload, predictions, version: str) -> Outcome:
    try:
        body = payload.protocol.encode(predictions, payload, version)
    except Exception as exc:  # noqa: BLE001 - an output we cannot write is an error, not a crash
        return _failure(payload, f"Could not serialize the model's output: {exc}", "INTERNAL_ERROR", None, version)
    return Outcome(200, body, b"application/json", predictions, version)


def _failure(payload: Payload, message: str, code: str, stack: str | None, version: str) -> Outcome:
    err = payload.protocol.error(message, code, stack, payload)
    return Outcome(err.status, err.body, err.content_type, None, version)


def _brief(data, limit: int = 2000) -> str:
    text = str(data)
    return text if len(text) <= limit else text[:limit] + "..."


# -- output encoding ------------------------------------------------------------------------------

def _dump_predictions(predictions) -> bytes:
    if isinstance(predictions, np.ndarray) and predictions.dtype.kind in _NUMPY_KINDS:
        # orjson writes numeric arrays straight from their buffer (C-contiguous ones only).
        return orjson.dumps({"predictions": np.ascontiguousarray(predictions)}, option=_DUMP)
    return orjson.dumps({"predictions": _jsonable(predictions)}, default=_default, option=_DUMP)


def _jsonable(data):
    """MLflow's conversion: arrays to lists, DataFrames and Series to records."""
    import pandas as pd

    if isinstance(data, np.ndarray):
        return data.tolist()
    if isinstance(data, pd.DataFrame):
        return data.to_dict(orient="records")
    if isinstance(data, pd.Series):
        return pd.DataFrame(data).to_dict(orient="records")
    return data


def _default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (bytes, bytearray)):
        return base64.encodebytes(obj).decode("ascii")
    if isinstance(obj, (dt.date, dt.datetime, dt.time)) or hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def rows_of(payload: Payload, names: list[str] | None) -> tuple[list[str] | None, Any]:
    """A request's input rows for the prediction log (run off the request path), as
    ``(columns, rows)``: each row a list of values named by ``columns`` (a 2-D tensor stays a
    numpy array, which orjson writes from its buffer), or, when ``columns`` is None, a
    ``{column: value}`` object."""
    kind, data = payload.kind, payload.data
    if kind == "records":
        return None, data
    if kind == "split":
        return [str(c) for c in data[0]], data[1]
    if kind == "array":
        if data.ndim == 2:
            width = data.shape[1]
            return list(names if names and len(names) == width else _positional_names(width)), data
        return ["input"], [[r] for r in data.tolist()]
    if kind == "frame":
        frame = data.copy()
        frame.columns = [str(c) for c in frame.columns]
        return None, _jsonable(frame)
    return None, [{"input": _jsonable(data)}]


@functools.lru_cache(maxsize=64)
def _positional_names(width: int) -> tuple[str, ...]:
    """Column names of an unnamed tensor: "0", "1", ..."""
    return tuple(str(i) for i in range(width))


def outputs_of(predictions, rows: int):
    """The output of each row for the prediction log; one item when the output is not per row.
    A numpy array of one output per row is returned as it is, for orjson to write."""
    if isinstance(predictions, np.ndarray):
        if predictions.ndim >= 1 and len(predictions) == rows:
            return predictions
        out = predictions.tolist()
    elif isinstance(predictions, list):
        out = predictions
    else:
        import pandas as pd

        if isinstance(predictions, pd.DataFrame):
            out = predictions.to_dict(orient="records")
        elif isinstance(predictions, pd.Series):
            out = predictions.tolist()
        else:
            out = [_jsonable(predictions)]
    # An output that is not one item per row is logged once, on the first row.
    return out if isinstance(out, list) and len(out) == rows else [out] + [None] * (rows - 1)
