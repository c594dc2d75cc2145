"""How long each page of the UI takes on the server with 100,000 runs in one experiment.

    .venv/bin/python bench/ui.py [--runs 100000] [--backend sqlite|postgres] [--repeat 15] [--keep DIR]

The store is filled in-process through the stores' Python API (the same calls the API handlers
make, about 40 s for 100,000 runs on SQLite): 100,000 runs with 5 params, 4 metrics and 3 tags
each, 10 of them with 1,000-step histories, 200,000 audit events of the kind the API writes
(every logged batch is one), a model with 50 versions and moved aliases, a deployment with 24
hours of monitor series and a real drift report, and a pipeline run of 20 jobs.

Then ``modelyard server`` is started on that store and every page is requested ``--repeat`` times
after two warm-ups, one request at a time. The figure is the server's own time per page, from the
``Server-Timing`` header each page sends (median and worst); the wall time seen by the client is
printed beside it. Chart data comes from ``get-history-bulk-interval`` and is timed the same way
(wall time: it is an API call, not a page).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelyard.monitoring.drift import data_drift  # noqa: E402
from modelyard.monitoring.profile import dumps, profile_records  # noqa: E402
from modelyard.settings import Settings  # noqa: E402
from modelyard.store import Stores  # noqa: E402
from modelyard.store.audit import AuditLog  # noqa: E402
from modelyard.store.db import Database  # noqa: E402
from modelyard.store.migrate import upgrade  # noqa: E402

P = "default"
CHUNK = 2000


async def fill(db_url: str, n_runs: int) -> dict:
    db = Database(db_url)
    upgrade(db.write_engine)
    stores = Stores(db, artifact_root="mlflow-artifacts:")
    stores.projects.ensure_default()
    stores.experiments.ensure_default()
    db.start()
    t0 = time.perf_counter()
    exp = await stores.experiments.create(P, f"bench-{n_runs}", None, [])
    rng = random.Random(0)
    run_ids: list[str] = []
    start = int(time.time() * 1000) - n_runs * 1000
    for base in range(0, n_runs, CHUNK):
        made = await asyncio.gather(*[stores.runs.create(
            P, exp, f"user{i % 7}", start + i * 1000, f"run-{i:06d}",
            [{"key": "team", "value": ("risk", "growth", "ops")[i % 3]}, {"key": "mlflow.user", "value": f"user{i % 7}"},
             {"key": "mlflow.source.name", "value": "train.py"}]) for i in range(base, min(base + CHUNK, n_runs))])
        ids = [r["info"]["run_id"] for r in made]
        await asyncio.gather(*[stores.runs.log_batch(P, rid, [
            {"key": k, "value": rng.random(), "timestamp": start + i, "step": 9} for k in ("rmse", "mae", "r2", "loss")
        ], [{"key": "model", "value": ("tree", "linear", "forest")[i % 3]}, {"key": "lr", "value": str(10 ** -(i % 4))},
            {"key": "depth", "value": str(i % 12)}, {"key": "seed", "value": str(i)}, {"key": "batch", "value": "256"}],
            []) for i, rid in enumerate(ids, start=base)])
        await asyncio.gather(*[stores.runs.update(P, rid, "FINISHED", start + (base + i) * 1000 + 500, None)
                               for i, rid in enumerate(ids)])
        run_ids += ids
        if (base // CHUNK) % 10 == 0:
            print(f"  {len(run_ids):>7} runs  {time.perf_counter() - t0:6.1f} s", flush=True)
    # ten runs with long histories, for the charts
    for rid in run_ids[-10:]:
        for s0 in range(0, 1000, 250):
            await stores.runs.log_batch(P, rid, [
                {"key": k, "value": 1 / (1 + s) + rng.random() * 0.01, "timestamp": start + s, "step": s}
                for s in range(s0, s0 + 250) for k in ("loss", "rmse")], [], [])
    # what the API would have audited while these runs were logged
    audit = AuditLog(db)
    for i in range(0, 2 * n_runs):
        audit.record(P, f"user{i % 7}", "POST /runs/log-batch", 200, "run", run_ids[i % n_runs])
        if i % 20_000 == 19_999:
            await audit.flush()
    await audit.flush()
    print(f"  runs, histories and audit events  {time.perf_counter() - t0:6.1f} s", flush=True)
    model = "bench-model"
    await stores.registry.create_model(P, model, [], "## Bench model\n\nFifty versions.")
    for v in range(1, 51):
        await stores.registry.create_version(P, model, f"runs:/{run_ids[-v]}/model", run_ids[-v], [], None, None, None)
    for v in range(40, 51):  # an alias moved eleven times, as the API logs it
        await stores.registry.set_alias(P, model, "champion", v)
        audit.record(P, "ada", "POST /registered-models/alias", 200, "registered_model", f"{model}/{v}",
                     details="alias=champion")
    await audit.flush()
    dep = "bench-dep"
    await stores.deployments.put(P, {"name": dep, "model_name": model, "versions": [{"version": "50", "weight": 0.9},
                                                                                   {"version": "49", "weight": 0.1}]})
    await stores.projects.get(P)
    monitor = await stores.monitors.create(P, "bench-mon", dep, {"window_seconds": 600, "kinds": ["data_drift", "health"],
                                                                 "every_seconds": 600, "mode": "tumbling",
                                                                 "min_rows": 100, "drift": {}}, False, 0)
    ref = profile_records([{"x": rng.gauss(0, 1), "z": rng.gauss(5, 2), "c": rng.choice("abc")} for _ in range(3000)])
    cur = profile_records([{"x": rng.gauss(0.5, 1), "z": rng.gauss(5, 2), "c": rng.choice("abcd")} for _ in range(3000)])
    drift = data_drift(ref, cur, histogram=True)
    report = {"window": {}, "rows": 3000, "data_drift": {**drift, "columns": [c.to_dict() for c in drift["columns"]]}}
    now = int(time.time() * 1000)
    for k in range(144):  # 24 hours of 10-minute windows
        ts = now - (144 - k) * 600_000
        series = [("rows", "", 3000.0), ("traffic_per_second", "", 5 + rng.random()), ("error_rate", "", 0.01),
                  ("latency_p50_seconds", "", 0.004), ("latency_p90_seconds", "", 0.009), ("latency_p99_seconds", "", 0.02)]
        series += [(m, f, rng.random()) for m in ("drift_score", "drift_detected") for f in ("x", "z", "c")]
        await stores.monitors.record(monitor["monitor_id"], ts, series, dumps(report) if k == 143 else None, "ok", None)
    pipeline_run, _ = await stores.pipelines.start(P, "bench-pipeline", {
        "experiment_id": exp, "planned_jobs": [f"job{j}" for j in range(20)], "spec": {"jobs": [
            {"name": f"job{j}", "needs": [f"job{j - 1}"] if j else []} for j in range(20)]}})
    await stores.pipelines.update_jobs(P, pipeline_run["run_id"], [
        {"name": f"job{j}", "status": "SUCCEEDED", "start_time": now - 1000 * (20 - j), "end_time": now - 900 * (20 - j)}
        for j in range(20)])
    db.close()
    print(f"  filled in {time.perf_counter() - t0:.1f} s", flush=True)
    return {"experiment_id": exp, "run_ids": run_ids[-20:], "model": model, "deployment": dep,
            "pipeline_run": pipeline_run["run_id"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pages(f: dict) -> list[tuple[str, str]]:
    e, r = f["experiment_id"], f["run_ids"]
    return [
        ("experiments list", "/experiments"),
        ("runs table, first page (50 runs)", f"/experiments/{e}"),
        ("runs table, last page (offset 99,950)", f"/experiments/{e}?offset={100_000 - 50}"),
        ("runs table, 500 rows", f"/experiments/{e}?n=500"),
        ("runs table, filter metrics.rmse < 0.001", f"/experiments/{e}?filter=metrics.rmse+%3C+0.001"),
        ("runs table, filter params.model = 'tree'", f"/experiments/{e}?filter=params.model+%3D+%27tree%27"),
        ("runs table, sorted by metrics.rmse", f"/experiments/{e}?order=metrics.rmse+DESC"),
        ("runs table, sorted by params.depth", f"/experiments/{e}?order=params.depth+ASC"),
        ("runs table, oldest first", f"/experiments/{e}?order=attributes.start_time+ASC"),
        ("runs table, sorted by run name", f"/experiments/{e}?order=attributes.run_name+ASC"),
        ("run page", f"/runs/{r[0]}"),
        ("run charts tab", f"/runs/{r[0]}?tab=charts"),
        ("run artifacts tab", f"/runs/{r[0]}?tab=artifacts"),
        ("compare 20 runs", "/compare?runs=" + ",".join(r)),
        ("models list", "/models"),
        ("model (50 versions, alias history)", f"/models/{f['model']}"),
        ("model version lineage", f"/models/{f['model']}/versions/50"),
        ("deployments list", "/deployments"),
        ("deployment (24 h of series, drift report)", f"/deployments/{f['deployment']}"),
        ("alerts", "/alerts"),
        ("pipelines", "/pipelines"),
        ("pipeline run (20-job DAG)", f"/pipelines/runs/{f['pipeline_run']}"),
    ]


def measure(url: str, repeat: int) -> tuple[list[float], list[float]]:
    server_ms, wall_ms = [], []
    for i in range(repeat + 2):
        t = time.perf_counter()
        r = requests.get(url, headers={"Accept": "text/html"}, timeout=120)
        wall = (time.perf_counter() - t) * 1000
        assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:300]}"
        if i >= 2:
            timing = r.headers.get("server-timing", "")
            server_ms.append(float(timing.split("dur=")[1]) if "dur=" in timing else wall)
            wall_ms.append(wall)
    return server_ms, wall_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--keep", help="fill this folder once and reuse it on later runs")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="modelyard-ui-bench-"))
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    server_args = []
    pg_db = None
    if args.backend == "postgres":
        import psycopg

        pg_db = "modelyard_uibench_" + uuid.uuid4().hex[:8]
        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_db}"')
        db_url = args.pg_url.rsplit("/", 1)[0] + "/" + pg_db
        server_args = ["--database-url", db_url]
        db_url = Settings(database_url=db_url).resolved_database_url
    else:
        db_url = Settings(data_dir=data).resolved_database_url
    marker = work / "filled.json"
    if marker.exists() and args.backend == "sqlite":
        filled = json.loads(marker.read_text())
    else:
        print(f"filling {args.runs:,} runs ({args.backend})", flush=True)
        filled = asyncio.run(fill(db_url, args.runs))
        marker.write_text(json.dumps(filled))
    port = free_port()
    log = open(work / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "modelyard", "server", "--port", str(port), "--data-dir", str(data),
                             *server_args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    results = []
    try:
        for _ in range(300):
            try:
                if requests.get(base + "/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        print(f"\n{'page':<46} {'server p50':>10} {'server max':>10} {'wall p50':>9}")
        for name, path in pages(filled):
            server_ms, wall_ms = measure(base + path, args.repeat)
            row = {"page": name, "path": path, "server_p50_ms": statistics.median(server_ms),
                   "server_max_ms": max(server_ms), "wall_p50_ms": statistics.median(wall_ms)}
            results.append(row)
            print(f"{name:<46} {row['server_p50_ms']:>8.1f}ms {row['server_max_ms']:>8.1f}ms {row['wall_p50_ms']:>7.1f}ms",
                  flush=True)
        chart = (f"{base}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?metric_key=loss&max_results=1000&"
                 + "&".join(f"run_ids={r}" for r in filled["run_ids"][-10:]))
        walls = []
        for i in range(args.repeat + 2):
            t = time.perf_counter()
            assert requests.get(chart, timeout=60).status_code == 200
            if i >= 2:
                walls.append((time.perf_counter() - t) * 1000)
        results.append({"page": "chart data: 10 runs x 1,000 steps (API)", "wall_p50_ms": statistics.median(walls),
                        "wall_max_ms": max(walls)})
        print(f"{'chart data: 10 runs x 1,000 steps (API)':<46} {'':>10} {'':>10} {statistics.median(walls):>7.1f}ms")
        t = time.perf_counter()
        r = requests.get(f"{base}/experiments/{filled['experiment_id']}/runs.csv", timeout=600)
        csv_s = time.perf_counter() - t
        lines = r.text.count("\n") - 1
        results.append({"page": f"CSV export of {lines:,} runs", "wall_s": csv_s})
        print(f"CSV export of {lines:,} runs: {csv_s:.1f} s")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
        if pg_db:
            import psycopg

            with psycopg.connect(args.pg_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": args.runs, "backend": args.backend, "results": results}, indent=2))


if __name__ == "__main__":
    main()
