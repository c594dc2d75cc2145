"""Adaptive batching, counted in rows.

Each model version being served has one :class:`Batcher`: a queue and one worker thread. Requests
are queued on the event loop; the batcher hands the worker the oldest request together with every
queued request that shares its group key, up to ``max_rows`` rows, as one model call. While the
model runs, new requests pile up, and the next call takes them all: the batch grows with the load
and nobody waits for a batch to fill. With nothing queued, a lone request is called at once
(``max_wait`` = 0, the default), so batching adds no latency when there is nothing to batch; a
``max_wait`` above 0 holds a batch that is not full until its oldest request has waited that long.

The model runs in the worker thread, so the event loop keeps accepting, parsing and answering
while it does; results come back to the loop with ``call_soon_threadsafe``.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from typing import Any, Callable

from modelyard.serving import protocol

__all__ = ["Batcher", "TIMEOUT_BODY"]

TIMEOUT_BODY = b"Request processing time exceeded limit"  # MLflow's 504 body


class _Job:
    __slots__ = ("model", "payload", "group", "future", "callback", "enqueued", "deadline")

    def __init__(self, model, payload, future, callback, deadline):
        self.model = model
        self.payload = payload
        # Only payloads parsed for the same loaded model and with equal keys share a call.
        self.group = None if payload.key is None else (id(model), payload.key)
        self.future = future
        self.callback = callback
        self.enqueued = time.perf_counter()
        self.deadline = deadline


class _Worker(threading.Thread):
    """One thread running batches in order; each result is handed back on the event loop."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop):
        super().__init__(name=name, daemon=True)
        self._loop = loop
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def submit(self, fn: Callable, arg: Any, done: Callable) -> None:
        self._queue.put((fn, arg, done))

    def stop(self) -> None:
        self._queue.put(None)

    def run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, arg, done = item
            try:
                result = fn(arg)
            except BaseException as exc:  # noqa: BLE001 - handed to the loop, which answers 500
                result = exc
            try:
                self._loop.call_soon_threadsafe(done, arg, result)
            except RuntimeError:  # the loop closed during shutdown
                return


class Batcher:
    """A queue of parsed requests for one model version, run as merged model calls."""

    def __init__(self, name: str, max_rows: int, max_wait_s: float = 0.0,
                 execute: Callable = protocol.execute, on_batch: Callable | None = None):
        self.name = name
        self.max_rows = max(1, max_rows)
        self.max_wait_s = max(0.0, max_wait_s)
        self._execute = execute
        self._on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._queued_rows = 0
        self._running: list[_Job] = []
        self._busy = False  # a dispatch is scheduled, waiting on its timer, or a batch is running
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: _Worker | None = None
        self.idle_since = time.monotonic()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._worker = _Worker(f"modelyard-batch-{self.name}", loop)
        self._worker.start()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    @property
    def started(self) -> bool:
        return self._worker is not None

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def idle(self) -> bool:
        return not self._busy and not self._queue

    # -- submitting -------------------------------------------------------------------------------
    def submit(self, model, payload: protocol.Payload, deadline: float) -> asyncio.Future:
        """Queue a request; the future resolves to its :class:`~modelyard.serving.protocol.Outcome`."""
        future = self._loop.create_future()
        self._enqueue(_Job(model, payload, future, None, deadline))
        return future

    def submit_nowait(self, model, payload: protocol.Payload, callback: Callable, max_queued_rows: int) -> bool:
        """Queue a request whose outcome goes to ``callback(payload, outcome)`` (shadow traffic).

        Refused (False) when more than ``max_queued_rows`` rows already wait: a slow shadow must
        not grow a backlog without bound.
        """
        if self._queued_rows + payload.rows > max_queued_rows:
            return False
        self._enqueue(_Job(model, payload, None, callback, float("inf")))
        return True

    def _enqueue(self, job: _Job) -> None:
        self._queue.append(job)
        self._queued_rows += job.payload.rows
        if not self._busy:
            self._busy = True
            # Not now but after the callbacks already ready: requests that arrived in the same
            # poll of the event loop join this first batch instead of waiting for the next.
            self._loop.call_soon(self._dispatch)
        elif self._timer is not None and self._queued_rows >= self.max_rows:
            self._timer.cancel()
            self._timer = None
            self._dispatch()

    # -- running ----------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        self._timer = None
        if not self._queue:
            self._busy = False
            self.idle_since = time.monotonic()
            return
        if self.max_wait_s > 0 and self._queued_rows < self.max_rows:
            waited = time.perf_counter() - self._queue[0].enqueued
            if waited < self.max_wait_s:
                self._timer = self._loop.call_later(self.max_wait_s - waited, self._dispatch)
                return
        batch = self._take()
        self._running = batch
        if self._worker is None:  # closed: answer rather than hang
            self._done(batch, RuntimeError("this model version is no longer served"))
            return
        self._worker.submit(self._run, batch, self._done)

    def _take(self) -> list[_Job]:
        first = self._queue.popleft()
        batch, rows = [first], first.payload.rows
        if first.group is not None and rows < self.max_rows and self._queue:
            rest: deque[_Job] = deque()
            for job in self._queue:
                if job.group == first.group and rows + job.payload.rows <= self.max_rows:
                    batch.append(job)
                    rows += job.payload.rows
                else:
                    rest.append(job)
            self._queue = rest
        self._queued_rows -= rows
        return batch

    def _run(self, batch: list[_Job]) -> tuple[list[protocol.Outcome], float]:
        started = time.perf_counter()
        live = [job for job in batch if job.future is None or not job.future.done()]
        if not live:
            return [], 0.0
        outcomes = self._execute(batch[0].model, [job.payload for job in live])
        return list(zip(live, outcomes)), time.perf_counter() - started

    def _done(self, batch: list[_Job], result) -> None:
        self._running = []
        if isinstance(result, BaseException):
            body = protocol.mlflow_error_body(f"Internal error: {type(result).__name__}: {result}", "INTERNAL_ERROR")
            version = getattr(batch[0].model, "version", "")
            pairs = [(job, protocol.Outcome(500, body, b"application/json", None, version)) for job in batch]
        else:
            pairs, seconds = result
            if pairs and self._on_batch is not None:
                self._on_batch(sum(job.payload.rows for job, _ in pairs), len(pairs), seconds)
        for job, outcome in pairs:
            if job.future is not None:
                if not job.future.done():
                    job.future.set_result(outcome)
            else:
                job.callback(job.payload, outcome)
        self._dispatch()

    def expire(self, now: float) -> int:
        """Answer 504 to every request past its deadline, queued or running; returns how many."""
        expired = 0
        for job in (*self._running, *self._queue):
            if job.future is not None and not job.future.done() and job.deadline <= now:
                job.future.set_result(protocol.Outcome(504, TIMEOUT_BODY, b"application/json", None,
                                                       getattr(job.model, "version", "")))
                expired += 1
        return expired
