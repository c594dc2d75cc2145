"""The batcher on its own: rows merged by group key, the wait window, the row limit, timeouts.

The model is a function that records each call; the batcher runs it in its worker thread as in the
server. (No processes: these pin down timing rules that a loaded machine would blur.)
"""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from modelyard.serving.batcher import TIMEOUT_BODY, Batcher
from modelyard.serving.protocol import Outcome, payload_of


class Model:
    version = "7"

    def __init__(self, delay: float = 0.0):
        self.calls: list[tuple[float, list[int]]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def execute(self, model, payloads):
        with self.lock:
            self.calls.append((time.perf_counter(), [int(p.data[0, 0]) for p in payloads]))
        if self.delay:
            time.sleep(self.delay)
        return [Outcome(200, str(int(p.data[0, 0])).encode(), b"text/plain", None, self.version) for p in payloads]


def rows(i: int, n: int = 1):
    return payload_of(np.full((n, 2), float(i)))


def run(coro):
    return asyncio.run(coro)


def test_a_lone_request_is_called_at_once_and_gets_its_own_answer():
    async def main():
        model = Model()
        batcher = Batcher("t", max_rows=64, execute=model.execute)
        batcher.start(asyncio.get_running_loop())
        await batcher.submit(model, rows(4), time.perf_counter() + 10)  # the thread is up
        started = time.perf_counter()
        outcome = await batcher.submit(model, rows(5), started + 10)
        batcher.close()
        return model, outcome, model.calls[1][0] - started

    model, outcome, delay = run(main())
    assert outcome.body == b"5" and outcome.version == "7"
    assert [ids for _, ids in model.calls] == [[4], [5]] and delay < 0.05


def test_requests_queued_while_the_model_is_busy_share_the_next_call():
    async def main():
        model = Model(delay=0.1)
        batcher = Batcher("t", max_rows=64, execute=model.execute)
        batcher.start(asyncio.get_running_loop())
        first = batcher.submit(model, rows(0), time.perf_counter() + 10)
        await asyncio.sleep(0.02)  # the model is now busy with the first
        rest = [batcher.submit(model, rows(i), time.perf_counter() + 10) for i in range(1, 6)]
        answers = [o.body for o in await asyncio.gather(first, *rest)]
        batcher.close()
        return model, answers

    model, answers = run(main())
    assert answers == [b"0", b"1", b"2", b"3", b"4", b"5"]
    assert [ids for _, ids in model.calls] == [[0], [1, 2, 3, 4, 5]]


def test_batches_are_counted_in_rows_and_never_pass_the_limit():
    async def main():
        model = Model(delay=0.05)
        batcher = Batcher("t", max_rows=10, execute=model.execute)
        batcher.start(asyncio.get_running_loop())
        futures = [batcher.submit(model, rows(i, 4), time.perf_counter() + 10) for i in range(7)]
        await asyncio.gather(*futures)
        batcher.close()
        return model

    model = run(main())
    assert [ids for _, ids in model.calls] == [[0, 1], [2, 3], [4, 5], [6]]  # 4 + 4 rows; a third would make 12


def test_only_payloads_with_the_same_group_key_are_merged():
    async def main():
        model = Model(delay=0.05)
        batcher = Batcher("t", max_rows=64, execute=model.execute)
        batcher.start(asyncio.get_running_loop())
        odd = [payload_of(np.full((1, 3), float(i))) if i % 2 else rows(i) for i in range(6)]  # 3 vs 2 columns
        answers = await asyncio.gather(*(batcher.submit(model, p, time.perf_counter() + 10) for p in odd))
        batcher.close()
        return model, answers

    model, answers = run(main())
    assert [o.body for o in answers] == [b"0", b"1", b"2", b"3", b"4", b"5"]
    assert sorted(map(sorted, (ids for _, ids in model.calls))) == [[0, 2, 4], [1, 3, 5]]


def test_a_wait_window_holds_a_batch_that_is_not_full_and_a_full_one_goes_at_once():
    async def main():
        model = Model()
        batcher = Batcher("t", max_rows=4, max_wait_s=0.15, execute=model.execute)
        batcher.start(asyncio.get_running_loop())
        t0 = time.perf_counter()
        a = batcher.submit(model, rows(1), t0 + 10)
        await asyncio.sleep(0.05)
        b = batcher.submit(model, rows(2), t0 + 10)
        await asyncio.gather(a, b)
        waited = model.calls[0][0] - t0
        t1 = time.perf_counter()
        full = [batcher.submit(model, rows(i), t1 + 10) for i in range(10, 14)]
        await asyncio.gather(*full)
        batcher.close()
        return model, waited, model.calls[1][0] - t1

    model, waited, full_after = run(main())
    assert [ids for _, ids in model.calls] == [[1, 2], [10, 11, 12, 13]]
    assert 0.14 <= waited < 0.5, "the partial batch waits for the window, measured from its oldest request"
    assert full_after < 0.1, "a full batch does not wait"


def test_a_request_past_its_deadline_is_answered_504_and_the_late_result_is_dropped():
    async def main():
        model = Model(delay=0.3)
        batcher = Batcher("t", max_rows=64, execute=model.execute)
        batcher.start(asyncio.get_running_loop())
        future = batcher.submit(model, rows(1), time.perf_counter() + 0.1)
        await asyncio.sleep(0.15)
        expired = batcher.expire(time.perf_counter())
        outcome = await future
        await asyncio.sleep(0.3)  # the call ends; its answer must not land on the answered future
        after = batcher.submit(model, rows(2), time.perf_counter() + 10)
        late = await after
        batcher.close()
        return expired, outcome, late

    expired, outcome, late = run(main())
    assert expired == 1 and (outcome.status, outcome.body) == (504, TIMEOUT_BODY)
    assert late.body == b"2"


def test_shadow_copies_are_refused_beyond_their_queue_bound():
    async def main():
        model = Model(delay=0.05)
        batcher = Batcher("t", max_rows=64, execute=model.execute)
        batcher.start(asyncio.get_running_loop())
        seen = []
        accepted = [batcher.submit_nowait(model, rows(i, 2), lambda p, o: seen.append(o.body), 6) for i in range(5)]
        while len(seen) < sum(accepted):
            await asyncio.sleep(0.01)
        batcher.close()
        return accepted, seen

    accepted, seen = run(main())
    assert accepted == [True, True, True, False, False] and sorted(seen) == [b"0", b"1", b"2"]
