"""Nothing acknowledged is lost: a 200 means committed, even if the server is SIGKILLed a moment later.

Writers log metrics as fast as they can (one per request and 50 per batch), remembering every write
the server acknowledged; the server is killed in the middle of it, started again on the same data,
and every acknowledged point must be in the metric history. A batch is all or nothing.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
import requests

from conftest import ServerProcess, unique

API = "/api/2.0/mlflow"
WRITERS = 6
BATCH = 50
ACKS_BEFORE_KILL = 60


class Writer(threading.Thread):
    """Logs metrics on its own run until the server goes away; records what got a 200."""

    def __init__(self, url: str, run_id: str, number: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.url, self.run_id, self.number, self.stop = url, run_id, number, stop
        self.acked: dict[str, dict[int, float]] = defaultdict(dict)
        self.acks = 0
        self.refusals: list[str] = []

    def run(self) -> None:
        session = requests.Session()
        ts = int(time.time() * 1000)
        i = 0
        while not self.stop.is_set():
            if i % 2 == 0:
                points = {i: self.number + i * 0.5}
                key, path = "single", "/runs/log-metric"
                body = {"run_id": self.run_id, "key": key, "value": points[i], "timestamp": ts + i, "step": i}
            else:
                points = {step: self.number + step * 0.25 for step in range(i * BATCH, (i + 1) * BATCH)}
                key, path = "batch", "/runs/log-batch"
                body = {"run_id": self.run_id, "metrics": [
                    {"key": key, "value": value, "timestamp": ts + i, "step": step} for step, value in points.items()]}
            try:
                resp = session.post(self.url + API + path, json=body, timeout=30)
            except requests.RequestException:
                return  # the server is gone: this write was never acknowledged
            if resp.status_code == 200:
                self.acked[key].update(points)
                self.acks += 1
            else:
                self.refusals.append(f"{path} -> {resp.status_code}: {resp.text[:200]}")
            i += 1


def stored_history(url: str, run_id: str, key: str) -> dict[int, float]:
    points: dict[int, float] = {}
    token = None
    while True:
        params = {"run_id": run_id, "metric_key": key, "max_results": 25000}
        if token:
            params["page_token"] = token
        resp = requests.get(url + API + "/metrics/get-history", params=params, timeout=60)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        points.update({m["step"]: m["value"] for m in body.get("metrics", [])})
        token = body.get("next_page_token")
        if not token:
            return points


@pytest.fixture()
def servers():
    """Servers this test starts itself (several on one data directory); stopped at the end."""
    started: list[ServerProcess] = []

    def start(data_dir, *args) -> ServerProcess:
        proc = ServerProcess(data_dir, *args)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_acknowledged_metric_survives_a_sigkill_mid_write(backend, request, tmp_path, servers):
    args = ["--database-url", request.getfixturevalue("pg_database")()] if backend == "postgres" else []
    data_dir = tmp_path / "data"
    first = servers(data_dir, *args)
    exp = requests.post(first.url + API + "/experiments/create", json={"name": unique("durable")}, timeout=10)
    assert exp.status_code == 200, exp.text
    run_ids = []
    for _ in range(WRITERS):
        resp = requests.post(first.url + API + "/runs/create",
                             json={"experiment_id": exp.json()["experiment_id"]}, timeout=10)
        assert resp.status_code == 200, resp.text
        run_ids.append(resp.json()["run"]["info"]["run_id"])

    stop = threading.Event()
    writers = [Writer(first.url, run_id, n, stop) for n, run_id in enumerate(run_ids)]
    for w in writers:
        w.start()
    deadline = time.time() + 60
    while min(w.acks for w in writers) < ACKS_BEFORE_KILL and time.time() < deadline:
        assert all(w.is_alive() for w in writers), "a writer stopped before the kill"
        time.sleep(0.02)
    first.kill()  # SIGKILL with writes in flight: no shutdown, no flush
    stop.set()
    for w in writers:
        w.join(60)

    assert not [r for w in writers for r in w.refusals], [r for w in writers for r in w.refusals][:5]
    assert min(w.acks for w in writers) >= ACKS_BEFORE_KILL, "the writers did not get going in 60 s"

    second = servers(data_dir, *args)
    for w in writers:
        single = stored_history(second.url, w.run_id, "single")
        batch = stored_history(second.url, w.run_id, "batch")
        lost = {s: v for s, v in w.acked["single"].items() if single.get(s) != v}
        lost.update({s: v for s, v in w.acked["batch"].items() if batch.get(s) != v})
        assert not lost, f"run {w.run_id} lost {len(lost)} acknowledged points, e.g. {sorted(lost.items())[:5]}"
        per_batch = defaultdict(int)
        for step in batch:
            per_batch[step // BATCH] += 1
        assert set(per_batch.values()) <= {BATCH}, "a batch was stored in part"


def test_a_write_that_postgresql_picks_as_a_deadlock_victim_runs_again_and_succeeds(fresh_server, pg_database):
    """A second connection forms a lock cycle with one log-metric request: it has inserted the very
    history row the request is about to insert (so the request waits for it, holding the run's
    latest value of ``loss``), then asks for that latest value. PostgreSQL aborts the request's
    transaction (it has waited longer); the server runs it again once the other transaction ends,
    and answers 200."""
    import psycopg

    url = pg_database()
    server = fresh_server("--database-url", url)
    api = server.url + "/api/2.0/mlflow"
    exp = requests.post(f"{api}/experiments/create", json={"name": "deadlock"}).json()["experiment_id"]
    rid = requests.post(f"{api}/runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
    assert requests.post(f"{api}/runs/log-metric",
                         json={"run_id": rid, "key": "loss", "value": 1.0, "timestamp": 5, "step": 0}).ok
    answer = {}
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as other:
        other.execute("INSERT INTO metrics (run_uuid, key, step, timestamp, value, is_nan) "
                      "VALUES (%s, 'loss', 1, 7, 0.5, false)", (rid,))

        def log():
            answer["r"] = requests.post(f"{api}/runs/log-metric", json={
                "run_id": rid, "key": "loss", "value": 0.5, "timestamp": 7, "step": 1}, timeout=60)

        request = threading.Thread(target=log)
        request.start()
        while not other.execute(  # the request waits for the history row's transaction
                "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid) WHERE NOT granted "
                "AND pid <> pg_backend_pid() AND datname = current_database()").fetchone()[0]:
            time.sleep(0.05)
        other.execute("SELECT 1 FROM latest_metrics WHERE run_uuid = %s AND key = 'loss' FOR UPDATE",
                      (rid,))  # returns once PostgreSQL has chosen its victim
        other.rollback()
        request.join(60)
    assert answer["r"].status_code == 200, answer["r"].text
    history = requests.get(f"{api}/metrics/get-history", params={"run_id": rid, "metric_key": "loss"}).json()
    assert sorted((m["step"], m["value"]) for m in history["metrics"]) == [(0, 1.0), (1, 0.5)]
