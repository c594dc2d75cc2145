"""Prediction-log ingestion benchmark: predictions per second into a modelyard server.

    .venv/bin/python bench/ingest.py [--rows 500000] [--batch 10000] [--concurrency 2] [--features 10] [--postgres]

Starts ``modelyard server`` on a fresh SQLite data directory (or, with ``--postgres``, a fresh
PostgreSQL database on ``MODELYARD_BENCH_PG``'s server, dropped afterwards), posts ``--rows``
predictions to ``POST /api/modelyard/v1/predictions/log`` in batches of ``--batch`` (the largest a request may
carry, as ``modelyard serve`` ships them) from ``--concurrency`` concurrent clients, and prints the
predictions per second from the first request to the last acknowledgement (a 200 means
committed). Request bodies are encoded before the clock starts, so the figure is the server's,
though the client still shares the machine's cores. Afterwards it checks that every row is stored.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bodies(rows: int, batch: int, features: int) -> list[bytes]:
    import orjson

    rng = random.Random(1)
    now = int(time.time() * 1000)
    out = []
    for start in range(0, rows, batch):
        items = []
        for i in range(start, min(start + batch, rows)):
            inputs = {f"f{j}": rng.gauss(j, 1) for j in range(features)}
            inputs["country"] = rng.choice(("fr", "de", "us", "jp"))
            items.append({"request_id": f"req-{i}", "timestamp_ms": now - (rows - i) // 50, "deployment": "bench",
                          "model_name": "bench", "model_version": "1", "inputs": inputs,
                          "outputs": rng.random(), "latency_ms": rng.random() * 5, "shadow": False})
        out.append(orjson.dumps({"predictions": items}))
    return out


async def load(url: str, payloads: list[bytes], concurrency: int) -> tuple[float, int]:
    import aiohttp

    queue = list(reversed(payloads))
    accepted = 0

    async def worker(session):
        nonlocal accepted
        while queue:
            body = queue.pop()
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"{resp.status}: {data}")
                accepted += data["accepted"]

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - t0, accepted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database instead of SQLite")
    a = ap.parse_args()
    from tracking import PG_ADMIN_URL, PostgresDatabases

    from modelyard.settings import Settings

    data_dir = Path(tempfile.mkdtemp(prefix="modelyard-ingest-"))
    databases = PostgresDatabases(PG_ADMIN_URL)
    database_url = databases.create("ingest") if a.postgres else None
    settings = Settings(data_dir=str(data_dir / "data"), database_url=database_url)
    port = free_port()
    log = open(data_dir / "server.log", "wb")
    args = ["--port", str(port), "--data-dir", str(data_dir / "data")]
    if database_url:
        args += ["--database-url", database_url]
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "python"), "-m", "modelyard", "server", *args],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        payloads = bodies(a.rows, a.batch, a.features)
        mb = sum(len(p) for p in payloads) / 1e6
        seconds, accepted = asyncio.run(load(base + "/api/modelyard/v1/predictions/log", payloads, a.concurrency))
        stored = count_stored(settings.resolved_database_url)
        print(json.dumps({"database": "postgresql" if a.postgres else "sqlite", "rows": a.rows, "batch": a.batch,
                          "concurrency": a.concurrency, "features": a.features + 1,
                          "request_mb": round(mb, 1), "seconds": round(seconds, 2),
                          "predictions_per_second": round(accepted / seconds), "accepted": accepted, "stored": stored,
                          "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count()}))
        if stored != a.rows:
            sys.exit(f"stored {stored} rows, expected {a.rows}")
    finally:
        proc.terminate()
        proc.wait(15)
        databases.drop_all()


def count_stored(url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(sa.text("SELECT table_name FROM prediction_partitions")).scalars().all()
            return sum(conn.execute(sa.text(f'SELECT COUNT(*) FROM "{t}"')).scalar() for t in tables)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
