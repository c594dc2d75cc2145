"""The prediction log: every prediction, shipped to the server in batches, off the request path.

A request adds one tuple to a bounded buffer (no copy, no encoding: it keeps references to the
parsed input and the output slice). A thread of its own turns the buffer into
``POST /api/modelyard/v1/predictions/log`` bodies of at most 10,000 rows, one item per request
(``{"requests": [...]}``: the fields its rows share once, its rows as parsed; a tensor's rows are
written by orjson straight from the numpy buffer).
When the server is slow or down, the buffer fills up to ``max_rows`` and further predictions are
dropped and counted; a request never waits for the log. A failed post is retried with backoff; a
post the server refuses as malformed (4xx other than 404, 408, 429) is dropped and counted.

Row ids: a one-row request is logged under its request id; row ``i`` of a longer request under
``<request id>:<i>``, the id to send labels for.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque

import orjson

from modelyard.serving import protocol
from modelyard.serving.client import ServerClient, ServerError

__all__ = ["PredictionLog", "MAX_ITEMS_PER_POST"]

log = logging.getLogger("modelyard.serving.predlog")

MAX_ITEMS_PER_POST = 10_000
_YIELD_EVERY_ROWS = 200
_RETRYABLE = {0, 404, 408, 429}


class PredictionLog:
    """A bounded buffer of predictions and the thread that ships it."""

    def __init__(self, tracking_uri: str, deployment: str, model_name: str, *, max_rows: int = 100_000,
                 batch_rows: int = 5_000, flush_interval: float = 1.0, timeout: float = 10.0,
                 input_names: dict[str, list[str] | None] | None = None):
        self.tracking_uri = tracking_uri
        self.deployment = deployment
        self.model_name = model_name
        self.max_rows = max_rows
        self.batch_rows = min(batch_rows, MAX_ITEMS_PER_POST)
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.input_names = input_names if input_names is not None else {}
        self._buffer: deque = deque()
        # Each counter has one writer (the loop adds, the shipper takes), so no lock is needed.
        self._added_rows = 0
        self._taken_rows = 0
        self.dropped_rows = 0  # buffer full
        self.sent_rows = 0
        self.rejected_rows = 0  # the server refused them
        self.failed_posts = 0
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stop_timeout = 5.0

    @property
    def buffered_rows(self) -> int:
        return self._added_rows - self._taken_rows

    # -- the request path -------------------------------------------------------------------------
    def add(self, request_id: str, timestamp_ms: int, version: str, payload: protocol.Payload, predictions,
            latency_ms: float, shadow: bool = False, error: bytes | None = None) -> bool:
        """Buffer one request's predictions (or its failure: ``error`` is the error body sent);
        False (and counted) when the buffer is full."""
        rows = payload.rows
        buffered = self._added_rows - self._taken_rows
        if buffered + rows > self.max_rows:
            self.dropped_rows += rows
            return False
        self._buffer.append((request_id, timestamp_ms, version, payload, predictions, latency_ms, shadow, error))
        self._added_rows += rows
        if buffered < self.batch_rows <= buffered + rows:
            self._wake.set()
        return True

    # -- the shipper ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modelyard-predlog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ship what is buffered (for at most ``timeout`` seconds), then stop."""
        self.stop_timeout = timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout + self.timeout)

    def _run(self) -> None:
        client = ServerClient(self.tracking_uri, timeout=self.timeout)
        pending: tuple[bytes, int] | None = None  # an encoded post waiting to be retried
        backoff = 0.0
        deadline = None
        try:
            while True:
                if self._stop.is_set():
                    deadline = deadline or time.monotonic() + self.stop_timeout
                    if (pending is None and not self._buffer) or time.monotonic() > deadline:
                        break
                elif pending is None and self.buffered_rows < self.batch_rows:
                    self._wake.wait(self.flush_interval)
                    self._wake.clear()
                if pending is None:
                    pending = self._take()
                    if pending is None:
                        continue
                ok, retry = self._post(client, *pending)
                if ok or not retry:
                    pending, backoff = None, 0.0
                    continue
                if self._stop.is_set():
                    break  # stopping, and the server does not take them: give up
                backoff = min(30.0, max(0.5, backoff * 2))
                self._stop.wait(backoff)
        finally:
            # What could not be shipped before stopping is lost: count it.
            self.dropped_rows += self.buffered_rows + (pending[1] if pending else 0)
            self._buffer.clear()
            self._taken_rows = self._added_rows
            client.close()

    def _take(self) -> tuple[bytes, int] | None:
        """The next post: the oldest buffered requests, up to ``MAX_ITEMS_PER_POST`` rows, encoded."""
        items, rows, since_yield = [], 0, 0
        while self._buffer and rows + self._buffer[0][3].rows <= MAX_ITEMS_PER_POST:
            record = self._buffer.popleft()
            self._taken_rows += record[3].rows
            rows += record[3].rows
            items.append(self._request(record))
            since_yield += record[3].rows
            if since_yield >= _YIELD_EVERY_ROWS:
                # Let the event loop have the GIL between slices of this work, rather than wait
                # for the interpreter's switch interval: requests must not queue behind the log.
                time.sleep(0)
                since_yield = 0
        if not items:
            if not self._buffer:
                return None
            # One request bigger than a post: its first rows are sent, the rest dropped and counted.
            record = self._buffer.popleft()
            self._taken_rows += record[3].rows
            item = self._request(record)
            item["inputs"] = item["inputs"][:MAX_ITEMS_PER_POST]
            if item.get("outputs") is not None:
                item["outputs"] = item["outputs"][:MAX_ITEMS_PER_POST]
            rows = len(item["inputs"])
            self.dropped_rows += record[3].rows - rows
            items = [item]
        body = orjson.dumps({"requests": items}, default=protocol._default,
                            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
        return body, rows

    def _request(self, record) -> dict:
        """One request's item: the fields its rows share once, its rows as they were parsed."""
        request_id, ts, version, payload, predictions, latency_ms, shadow, error = record
        columns, inputs = protocol.rows_of(payload, self.input_names.get(version))
        item = {"request_id": request_id, "timestamp_ms": ts, "deployment": self.deployment,
                "model_name": self.model_name, "model_version": version, "latency_ms": round(latency_ms, 3),
                "shadow": shadow, "inputs": inputs}
        if columns is not None:
            item["columns"] = columns
        if error is None:
            item["outputs"] = protocol.outputs_of(predictions, len(inputs))
        else:
            item["error"] = _error_text(error)
        return item

    def _post(self, client: ServerClient, body: bytes, rows: int) -> tuple[bool, bool]:
        """(delivered, worth retrying)."""
        try:
            client.log_predictions(body, self.timeout)
        except ServerError as exc:
            self.failed_posts += 1
            self.last_error = str(exc)
            if exc.status in _RETRYABLE or exc.status >= 500:
                return False, True
            self.rejected_rows += rows
            log.warning("the server refused %d logged predictions: %s", rows, exc)
            return False, False
        self.sent_rows += rows
        self.last_error = None
        return True, False


def _error_text(body: bytes) -> str:
    """The message of an error answer (MLflow's ``message``, V2's ``error``), else the body itself."""
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict):
            return str(doc.get("message") or doc.get("error") or body[:2000].decode(errors="replace"))[:2000]
    except orjson.JSONDecodeError:
        pass
    return body[:2000].decode(errors="replace")
