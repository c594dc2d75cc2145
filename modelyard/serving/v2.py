"""The Open Inference Protocol (KServe V2) over HTTP, beside MLflow's protocol.

``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}[/versions/{v}]``,
``.../ready``, and ``POST /v2/models/{name}[/versions/{v}]/infer``. ``{name}`` is the deployment's
name or the registered model's; a ``/versions/{v}`` path goes to that version if it is served
(canary or shadow), otherwise the traffic split picks one, as for ``/invocations``.

Tensors become the same payloads as MLflow's bodies, so V2 requests are batched with them: one
input is an array (for models with a tensor signature or none); several inputs, or a model with
named columns, become a DataFrame with one column per input. Errors are ``{"error": message}``.
"""
from __future__ import annotations

import math
import time

import numpy as np
import orjson

from modelyard import __version__
from modelyard.serving import protocol
from modelyard.serving.protocol import Outcome, Payload, ScoringError

__all__ = ["Handlers", "V2"]

_TO_NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}
_FROM_KIND = {"b": "BOOL", "u": "UINT", "i": "INT", "f": "FP"}


def v2_datatype(dtype) -> str:
    dtype = np.dtype(dtype)
    prefix = _FROM_KIND.get(dtype.kind)
    return "BYTES" if prefix is None else prefix if prefix == "BOOL" else f"{prefix}{dtype.itemsize * 8}"


def _error(status: int, message: str) -> ScoringError:
    return ScoringError(status, orjson.dumps({"error": message}))


class V2(protocol.Protocol):
    """Answers as V2 inference responses; the request's id and model name ride in ``payload.meta``."""

    name = "v2"

    def encode(self, predictions, payload: Payload, version: str) -> bytes:
        outputs = _outputs(predictions)
        wanted = payload.meta.get("outputs")
        if wanted:
            outputs = [o for o in outputs if o["name"] in wanted] or outputs
        body = {"model_name": payload.meta["model_name"], "model_version": version, "outputs": outputs}
        if payload.meta.get("id") is not None:
            body["id"] = payload.meta["id"]
        return orjson.dumps(body, default=protocol._default, option=orjson.OPT_SERIALIZE_NUMPY)

    def error(self, message, error_code, stack_trace, payload) -> ScoringError:
        from modelyard.errors import http_status

        return _error(http_status(error_code), message)


V2_PROTOCOL = V2()


def _tensor(name: str, data) -> dict:
    arr = np.asarray(data)
    if arr.dtype.kind in "biuf":
        flat = np.ascontiguousarray(arr).ravel()
    else:
        flat = [x if isinstance(x, (str, int, float, bool)) or x is None else str(x) for x in arr.ravel().tolist()]
    return {"name": name, "datatype": v2_datatype(arr.dtype), "shape": list(arr.shape), "data": flat}


def _outputs(predictions) -> list[dict]:
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        return [_tensor(str(col), predictions[col].to_numpy()) for col in predictions.columns]
    if isinstance(predictions, pd.Series):
        return [_tensor(str(predictions.name) if predictions.name is not None else "predict", predictions.to_numpy())]
    if isinstance(predictions, dict):
        return [_tensor(str(k), v) for k, v in predictions.items()]
    return [_tensor("predict", predictions)]


def parse_infer(body: bytes, model, model_name: str, request_id: str) -> Payload:
    """A V2 inference request as a payload for ``model``; 400 with ``{"error"}`` when malformed."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _error(400, f"The request body is not valid JSON: {exc}") from None
    if type(doc) is not dict or type(doc.get("inputs")) is not list or not doc["inputs"]:
        raise _error(400, "An inference request is a JSON object with a non-empty 'inputs' list.")
    tensors = []
    for i, item in enumerate(doc["inputs"]):
        tensors.append(_input_tensor(item, i))
    params = doc.get("parameters")
    if params is not None and type(params) is not dict:
        raise _error(400, "'parameters' must be an object.")
    params = {k: v for k, v in (params or {}).items() if k not in ("content_type", "headers")} or None
    wanted = doc.get("outputs")
    meta = {"id": doc.get("id", request_id), "model_name": model_name,
            "outputs": [o.get("name") for o in wanted if isinstance(o, dict)] if isinstance(wanted, list) else None}
    pkey = None if params is None else orjson.dumps(params, option=orjson.OPT_SORT_KEYS)

    if len(tensors) == 1 and model.tensor_dtype is not False and model.fast_json:
        name, arr = tensors[0]
        if model.tensor_dtype is not None and arr.dtype != model.tensor_dtype and arr.dtype.kind in "biuf":
            arr = arr.astype(model.tensor_dtype)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        key = ("array", arr.shape[1:], arr.dtype.str, pkey) if arr.dtype.kind in "biuf" else None
        return Payload("array", arr, arr.shape[0], key, params, protocol=V2_PROTOCOL, meta=meta)

    # Several inputs (or a model with named columns): one DataFrame column per input.
    rows = None
    columns = []
    for name, arr in tensors:
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise _error(400, f"Input '{name}' has shape {list(arr.shape)}; with several inputs (or a model with "
                         "named columns) each input is one column, of shape [N] or [N, 1].")
        if rows is not None and len(arr) != rows:
            raise _error(400, "All inputs must have the same number of rows.")
        rows = len(arr)
        columns.append((name, arr.tolist()))
    names = [n for n, _ in columns]
    data = [list(r) for r in zip(*(values for _, values in columns))]
    key = ("split", tuple(names), pkey) if model.schema is not None else None
    return Payload("split", (names, data), rows, key, params, protocol=V2_PROTOCOL, meta=meta)


def _input_tensor(item, i: int) -> tuple[str, np.ndarray]:
    if type(item) is not dict:
        raise _error(400, f"inputs[{i}] must be an object with name, shape, datatype and data.")
    name, shape, datatype, data = item.get("name"), item.get("shape"), item.get("datatype"), item.get("data")
    if not isinstance(name, str) or not name:
        raise _error(400, f"inputs[{i}] has no 'name'.")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise _error(400, f"Input '{name}' needs a 'shape': a list of non-negative integers.")
    dtype = _TO_NUMPY.get(datatype)
    if dtype is None:
        raise _error(400, f"Input '{name}' has datatype {datatype!r}; expected one of {', '.join(_TO_NUMPY)}.")
    if data is None:
        raise _error(400, f"Input '{name}' has no 'data'.")
    try:
        arr = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _error(400, f"Input '{name}': data is not {datatype}: {exc}") from None
    if arr.size != math.prod(shape):
        raise _error(400, f"Input '{name}' has {arr.size} values for shape {shape}.")
    return name, arr.reshape(shape)


def _spec_tensors(schema, prefix: str = "input") -> list[dict]:
    if schema is None:
        return []
    out = []
    for i, spec in enumerate(schema.inputs):
        if schema.is_tensor_spec():
            out.append({"name": spec.name or f"{prefix}-{i}", "datatype": v2_datatype(spec.type),
                        "shape": list(spec.shape)})
        else:
            try:
                datatype = v2_datatype(spec.type.to_numpy())
            except Exception:  # noqa: BLE001 - arrays, objects, maps: no single V2 datatype
                datatype = "BYTES"
            out.append({"name": spec.name or f"{prefix}-{i}", "datatype": datatype, "shape": [-1]})
    return out


class Handlers:
    """The ``/v2`` routes of one :class:`~modelyard.serving.app.ModelServer`."""

    def __init__(self, server):
        self.server = server

    async def dispatch(self, scope, receive, send) -> None:
        parts = scope["path"].rstrip("/").split("/")[2:]  # after "", "v2"
        method = scope["method"]
        srv = self.server
        try:
            if not parts:
                return await self._get_only(scope, send, {"name": "modelyard", "version": __version__,
                                                          "extensions": []})
            if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
                return await self._get_only(scope, send, {parts[1]: True})
            if parts[0] != "models" or len(parts) < 2:
                raise _error(404, f"No endpoint {method} {scope['path']}.")
            name, rest = parts[1], parts[2:]
            router = srv.router
            if name not in (router.spec.name, router.spec.model_name):
                raise _error(404, f"Model {name} not found.")
            lane = None
            if rest[:1] == ["versions"]:
                if len(rest) < 2:
                    raise _error(404, f"No endpoint {method} {scope['path']}.")
                lane = router.lane_for_version(rest[1])
                if lane is None:
                    raise _error(404, f"Model {name} version {rest[1]} is not served here.")
                rest = rest[2:]
            if not rest:
                return await self._get_only(scope, send, self._metadata(name, lane))
            if rest == ["ready"]:
                return await self._get_only(scope, send, {"name": name, "ready": True})
            if rest == ["infer"]:
                if method != "POST":
                    raise _error(405, f"Method {method} is not allowed for {scope['path']}.")
                return await self._infer(scope, receive, send, name, lane)
            raise _error(404, f"No endpoint {method} {scope['path']}.")
        except ScoringError as exc:
            await srv.send_raw(send, exc.status, exc.body, exc.content_type)

    async def _get_only(self, scope, send, data: dict) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            raise _error(405, f"Method {scope['method']} is not allowed for {scope['path']}.")
        await self.server.send_json(send, 200, data)

    def _metadata(self, name: str, lane) -> dict:
        router = self.server.router
        model = (lane or router.arms[0][1]).model
        signature = model.pyfunc.metadata.signature
        outputs = _spec_tensors(signature.outputs, "output") if signature is not None and signature.outputs else []
        return {"name": name, "versions": [lane.version] if lane else [l.version for l in router.lanes],
                "platform": "mlflow", "inputs": _spec_tensors(model.schema), "outputs": outputs}

    async def _infer(self, scope, receive, send, name: str, lane) -> None:
        srv = self.server
        started = time.perf_counter()
        rid = srv.request_id(scope)
        lane = lane or srv.router.pick()
        model = lane.model
        payload = None
        try:
            body = await srv.read_body(receive)
            payload = parse_infer(body, model, name, rid)
            outcome = await lane.batcher.submit(model, payload, started + srv.timeout)
        except ScoringError as exc:
            outcome = Outcome(exc.status, exc.body, exc.content_type, None, lane.version)
        except protocol.BodyTooLarge:
            outcome = Outcome(413, orjson.dumps({"error": f"Request body exceeds the limit of "
                                                          f"{srv.options.max_body_bytes} bytes."}),
                              b"application/json", None, lane.version)
        await srv.send_raw(send, outcome.status, outcome.body, outcome.content_type, rid, outcome.version)
        srv.finish(scope, rid, started, outcome, payload, lane)
