"""The model server's ASGI app.

Routes: MLflow's scoring protocol (``POST /invocations``, ``GET /ping``, ``/health``,
``/version``), the Open Inference Protocol (``/v2/...``, in :mod:`modelyard.serving.v2`),
``GET /metrics`` (Prometheus) and ``GET /deployment`` (what this replica serves and how it is doing).

It is a bare ASGI callable rather than a framework app: on the hot path a request costs a dict
lookup for its route, one orjson parse, a queue append and two ``send`` calls. The model runs in
the batcher's thread; the event loop only parses, routes and answers.
"""
from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import logging
import sys
import threading
import time
import uuid
from typing import Any, Callable

import orjson

from modelyard import __version__
from modelyard.serving import protocol
from modelyard.serving.metrics import ROW_BUCKETS, Counter, Gauge, Histogram, Registry
from modelyard.serving.options import ServeOptions
from modelyard.serving.predlog import PredictionLog
from modelyard.serving.protocol import CONTENT_TYPE_JSON, BodyTooLarge, Outcome, ScoringError
from modelyard.serving.traffic import Lane, Router

__all__ = ["ModelServer"]

log = logging.getLogger("modelyard.serving")

_JSON = b"application/json"
_SHADOW_MAX_QUEUED_ROWS = 10_000
_RETIRED_GRACE_S = 5.0


class AccessLog:
    """JSON lines to stdout, buffered and written a few times a second, never per request."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout.buffer
        self.lines: list[bytes] = []

    def add(self, entry: dict) -> None:
        self.lines.append(orjson.dumps(entry))
        if len(self.lines) >= 512:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            data, self.lines = b"\n".join(self.lines) + b"\n", []
            try:
                self.stream.write(data)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # stdout closed: the access log is not worth a failed request


class ModelServer:
    """The ASGI app of one model-server process."""

    def __init__(self, options: ServeOptions, router: Router, predlog: PredictionLog | None = None):
        self.options = options
        self.router = router
        self.predlog = predlog
        self.follower = None  # set by the runner: keeps the router in step with the registry
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timeout = options.request_timeout
        self.started = time.time()
        # What is wrong now, by topic: "load" (a wanted version failed to load: degraded), "follow",
        # "server" (the server is unreachable: serving goes on, only reporting suffers).
        self.problems: dict[str, str] = {}
        self.access_log = AccessLog() if options.access_log else None
        self._retired: list[Lane] = []
        self._rid_prefix = uuid.uuid4().hex[:12] + "-"
        self._rid_counter = itertools.count(1)
        self._tasks: list[asyncio.Task] = []
        self._setup_metrics()
        from modelyard.serving import v2

        self._v2 = v2.Handlers(self)
        self._get: dict[str, Callable] = {
            "/ping": self._ping, "/health": self._ping, "/version": self._version, "/metrics": self._metrics,
            "/deployment": self._deployment,
        }

    # -- metrics --------------------------------------------------------------------------------------
    def _setup_metrics(self) -> None:
        r = self.registry = Registry()
        p = "modelyard_serving_"
        self.m_requests = r.add(Counter(p + "requests_total", "Requests answered, by model version and HTTP status.",
                                        ("version", "status")))
        self.m_errors = r.add(Counter(p + "request_errors_total", "Requests answered with a 4xx or 5xx status.",
                                      ("version", "status")))
        self.m_latency = r.add(Histogram(p + "request_duration_seconds",
                                         "Time from receiving a request to answering it.", ("version",)))
        self.m_rows = r.add(Counter(p + "prediction_rows_total", "Input rows predicted.", ("version",)))
        self.m_batch_rows = r.add(Histogram(p + "batch_rows", "Rows per model call.", ("version",), ROW_BUCKETS))
        self.m_batch_requests = r.add(Histogram(p + "batch_requests", "Requests merged into one model call.",
                                                ("version",), ROW_BUCKETS))
        self.m_batch_seconds = r.add(Histogram(p + "batch_duration_seconds", "Time of one model call.", ("version",)))
        self.m_shadow = r.add(Counter(p + "shadow_requests_total", "Copies answered by the shadow version.",
                                      ("version", "status")))
        self.m_shadow_dropped = r.add(Counter(p + "shadow_dropped_total",
                                              "Copies not sent to the shadow (its queue was full, or its inputs differ)."))
        self.m_loads = r.add(Counter(p + "model_loads_total", "Model versions loaded, by outcome.",
                                     ("version", "outcome")))
        self.m_timeouts = r.add(Counter(p + "request_timeouts_total", "Requests answered 504 after the timeout."))
        r.add(Gauge(p + "model_info", "What this replica serves: one series per arm (weight as value).",
                    ("deployment", "model", "ref", "version", "role"), read=self._model_info))
        r.add(Gauge(p + "queued_rows", "Rows waiting for the model, by version.", ("version",),
                    read=lambda: {(lane.version,): lane.batcher.queued_rows for lane in self.router.lanes}))
        r.add(Gauge(p + "up", "1 while serving what is wanted; 0 while degraded (a wanted version failed to load).",
                    read=lambda: {(): 0 if "load" in self.problems else 1}))
        r.add(Counter(p + "prediction_log_rows_total", "Predictions for the prediction log, by what became of them.",
                      ("outcome",), read=self._predlog_counts))
        r.add(Gauge(p + "prediction_log_buffered_rows", "Predictions waiting to be shipped.",
                    read=lambda: {(): self.predlog.buffered_rows if self.predlog else 0}))

    @property
    def status(self) -> str:
        return "degraded" if "load" in self.problems else "serving"

    def _model_info(self) -> dict:
        router = self.router
        out = {}
        for arm, lane in router.arms:
            out[(router.spec.name, router.spec.model_name, arm.label, lane.version, "primary")] = arm.weight
        if router.shadow is not None:
            out[(router.spec.name, router.spec.model_name, router.spec.shadow.label, router.shadow.version,
                 "shadow")] = 0
        return out

    def _predlog_counts(self) -> dict:
        pl = self.predlog
        if pl is None:
            return {}
        return {("sent",): pl.sent_rows, ("dropped",): pl.dropped_rows, ("rejected",): pl.rejected_rows}

    def on_batch(self, version: str, rows: int, requests: int, seconds: float) -> None:
        labels = (version,)
        self.m_batch_rows.observe(labels, rows)
        self.m_batch_requests.observe(labels, requests)
        self.m_batch_seconds.observe(labels, seconds)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        for lane in self.router.lanes:
            lane.start(self.loop)
        if self.predlog is not None:
            self.predlog.start()
        self._tasks.append(self.loop.create_task(self._housekeeping()))
        if self.follower is not None:
            self.follower.start()

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.follower is not None:
            await asyncio.to_thread(self.follower.stop)
        if self.predlog is not None:
            await asyncio.to_thread(self.predlog.stop)
        for lane in (*self.router.lanes, *self._retired):
            lane.close()
        if self.access_log is not None:
            self.access_log.flush()

    async def _housekeeping(self) -> None:
        """Four times a second: flush the access log, time out stuck requests, free retired lanes."""
        while True:
            await asyncio.sleep(0.25)
            try:
                self._tidy()
            except Exception:  # noqa: BLE001 - this loop must outlive any one failure
                log.exception("housekeeping failed")

    def _tidy(self) -> None:
        if self.access_log is not None:
            self.access_log.flush()
        now = time.perf_counter()
        for lane in (*self.router.lanes, *self._retired):
            expired = lane.batcher.expire(now)
            if expired:
                self.m_timeouts.inc((), expired)
        mono = time.monotonic()
        for lane in list(self._retired):
            if lane.batcher.idle and mono - lane.retired_at > _RETIRED_GRACE_S:
                self._retired.remove(lane)
                lane.close()

    def install(self, router: Router) -> None:
        """Serve ``router`` from now on (on the event loop); lanes it no longer uses drain, then close."""
        for lane in router.lanes:
            if not lane.batcher.started:
                lane.start(self.loop)
        old, self.router = self.router, router
        self._retired.extend(router.retire_others(old))
        if self.predlog is not None:
            for lane in router.lanes:
                self.predlog.input_names[lane.version] = lane.model.input_names
        # The new model's objects join the ones the garbage collector no longer scans.
        gc.freeze()

    def install_threadsafe(self, router: Router, timeout: float = 30.0) -> None:
        """From another thread (the follower): install and wait until it is done."""
        done = threading.Event()

        def install():
            try:
                self.install(router)
            finally:
                done.set()

        self.loop.call_soon_threadsafe(install)
        done.wait(timeout)

    # -- ASGI -----------------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path == "/invocations":
                if scope["method"] == "POST":
                    await self._invocations(scope, receive, send)
                else:
                    await self._method_not_allowed(scope, send)
                return
            if path.startswith("/v2/") or path == "/v2":
                await self._v2.dispatch(scope, receive, send)
                return
            handler = self._get.get(path)
            if handler is None:
                await self.send_json(send, 404, {"error_code": "ENDPOINT_NOT_FOUND",
                                                 "message": f"No endpoint {scope['method']} {path}."})
            elif scope["method"] not in ("GET", "HEAD"):
                await self._method_not_allowed(scope, send)
            else:
                await handler(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to uvicorn, which exits
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    # -- scoring --------------------------------------------------------------------------------------
    def request_id(self, scope) -> str:
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                rid = value.decode("latin-1")
                if 0 < len(rid) <= 128 and rid.isprintable() and " " not in rid:
                    return rid
                break
        return self._rid_prefix + format(next(self._rid_counter), "x")

    async def read_body(self, receive) -> bytes:
        message = await receive()
        body = message.get("body", b"")
        limit = self.options.max_body_bytes
        if message.get("more_body"):
            chunks, size = [body], len(body)
            while message.get("more_body"):
                message = await receive()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge()
                chunks.append(chunk)
            body = b"".join(chunks)
        if len(body) > limit:
            raise BodyTooLarge()
        return body

    async def _invocations(self, scope, receive, send) -> None:
        started = time.perf_counter()
        content_type = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
                break
        rid = self.request_id(scope)
        lane = self.router.pick()
        model = lane.model
        payload = None
        try:
            body = await self.read_body(receive)
            mime = CONTENT_TYPE_JSON if content_type == _JSON else protocol.media_type(content_type)
            if mime is CONTENT_TYPE_JSON:
                payload = protocol.parse_fast(body, model)
            if payload is None:
                payload = await self.loop.run_in_executor(None, protocol.parse_slow, body, mime, model)
            outcome = await lane.batcher.submit(model, payload, started + self.timeout)
        except ScoringError as exc:
            outcome = Outcome(exc.status, exc.body, exc.content_type, None, lane.version)
        except BodyTooLarge:
            outcome = Outcome(413, protocol.mlflow_error_body(
                f"Request body exceeds the limit of {self.options.max_body_bytes} bytes.", "BAD_REQUEST"),
                _JSON, None, lane.version)
        await self.send_raw(send, outcome.status, outcome.body, outcome.content_type, rid, outcome.version)
        self.finish(scope, rid, started, outcome, payload, lane, body if outcome.status == 200 else None,
                    content_type)

    def finish(self, scope, rid: str, started: float, outcome: Outcome, payload, lane: Lane,
               body: bytes | None = None, content_type: bytes | None = None) -> None:
        """After answering: metrics, the access log, the prediction log, the shadow's copy."""
        elapsed = time.perf_counter() - started
        version, status = outcome.version, outcome.status
        labels = (version, str(status))
        self.m_requests.inc(labels)
        self.m_latency.observe((version,), elapsed)
        if status == 200:
            rows = payload.rows
            self.m_rows.inc((version,), rows)
            if body is not None:
                lane.recent.append((body, content_type))
            if self.predlog is not None:
                self.predlog.add(rid, int(time.time() * 1000), version, payload, outcome.predictions, elapsed * 1000)
            shadow = self.router.shadow
            if shadow is not None:
                self._send_to_shadow(shadow, lane.model, payload, rid, started)
        else:
            rows = 0
            self.m_errors.inc(labels)
            if payload is not None and self.predlog is not None:
                # The request was understood but its prediction failed: logged, so error rates and
                # the inputs that fail can be monitored.
                self.predlog.add(rid, int(time.time() * 1000), version, payload, None, elapsed * 1000,
                                 error=outcome.body)
        if self.access_log is not None:
            client = scope.get("client")
            self.access_log.add({
                "ts": int(time.time() * 1000), "request_id": rid, "method": scope["method"], "path": scope["path"],
                "status": status, "duration_ms": round(elapsed * 1000, 3), "model_version": version, "rows": rows,
                "client": client[0] if client else None,
            })

    def _send_to_shadow(self, shadow: Lane, model, payload, rid: str, started: float) -> None:
        if shadow.model.parse_profile != model.parse_profile:
            # The shadow reads its inputs differently: give it the same rows if they fit its schema.
            payload = protocol.reparse_for(payload, shadow.model)
            if payload is None:
                self.m_shadow_dropped.inc()
                return
        callback = functools.partial(self._shadow_done, rid, started)
        if not shadow.batcher.submit_nowait(shadow.model, payload, callback, _SHADOW_MAX_QUEUED_ROWS):
            self.m_shadow_dropped.inc()

    def _shadow_done(self, rid: str, started: float, payload, outcome: Outcome) -> None:
        self.m_shadow.inc((outcome.version, str(outcome.status)))
        if outcome.status == 200 and self.predlog is not None:
            self.predlog.add(rid, int(time.time() * 1000), outcome.version, payload, outcome.predictions,
                             (time.perf_counter() - started) * 1000, shadow=True)

    # -- responses ------------------------------------------------------------------------------------
    @staticmethod
    async def send_raw(send, status: int, body: bytes, content_type: bytes = _JSON, rid: str | None = None,
                       version: str | None = None, extra: list | None = None) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        if rid is not None:
            headers.append((b"x-request-id", rid.encode("latin-1")))
        if version:
            headers.append((b"x-model-version", version.encode()))
        if extra:
            headers.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def send_json(self, send, status: int, data: Any, **kw) -> None:
        await self.send_raw(send, status, orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), **kw)

    async def _method_not_allowed(self, scope, send) -> None:
        await self.send_json(send, 405, {"error_code": "BAD_REQUEST",
                                         "message": f"Method {scope['method']} is not allowed for {scope['path']}."})

    # -- plain GET routes -----------------------------------------------------------------------------
    async def _ping(self, scope, send) -> None:
        # MLflow answers 200 with a newline once the model is loaded; this process only serves
        # once it is, so it always is.
        await self.send_raw(send, 200, b"\n")

    async def _version(self, scope, send) -> None:
        import mlflow

        await self.send_raw(send, 200, mlflow.__version__.encode(),
                            extra=[(b"x-modelyard-version", __version__.encode())])

    async def _metrics(self, scope, send) -> None:
        await self.send_raw(send, 200, self.registry.render(), b"text/plain; version=0.0.4; charset=utf-8")

    async def _deployment(self, scope, send) -> None:
        await self.send_json(send, 200, self.describe())

    def describe(self) -> dict:
        out = self.router.describe()
        out.update({
            "status": self.status, "problems": dict(self.problems),
            "endpoint_url": self.options.endpoint_url, "started_timestamp": int(self.started * 1000),
            "batching": {"max_batch_rows": self.options.max_batch_rows,
                         "max_batch_wait_ms": self.options.max_batch_wait_ms},
        })
        if self.follower is not None:
            out["replica_id"] = self.follower.replica_id
        if self.predlog is not None:
            pl = self.predlog
            out["prediction_log"] = {"sent_rows": pl.sent_rows, "dropped_rows": pl.dropped_rows,
                                     "rejected_rows": pl.rejected_rows, "buffered_rows": pl.buffered_rows,
                                     "failed_posts": pl.failed_posts, "last_error": pl.last_error}
        return out
