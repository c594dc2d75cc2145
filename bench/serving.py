"""Serving benchmark: ``modelyard serve`` against ``mlflow models serve`` 3.17.2, same model, one sitting.

    .venv/bin/python bench/serving.py [--seconds 4] [--rounds 9] [--write-docs]

It starts a ``modelyard server`` on fresh storage, logs and registers one scikit-learn model through
the ``mlflow`` client (a LogisticRegression on iris, signature from a numpy example: one float64
tensor of 4 columns), and starts three model servers on it, all loading that model from the server,
and one endpoint without a model:

- ``mlflow models serve -m models:/iris/1 --env-manager local --workers 1`` from an anchor venv
  (MLflow 3.17.2 with uvloop and httptools, so its uvicorn is not handicapped), loading the model
  from the modelyard server;
- ``modelyard serve models:/iris/1 --workers 1`` with prediction logging to the server (the default);
- the same with ``--no-log-predictions``;
- the client's ceiling: uvicorn with an app that parses the body and answers zeros (no model).

Each is warmed up, then gets the shared load (``../shared/bench/serving_load.py``, from modelyard's
venv, which has aiohttp): single-row requests at concurrency 32 and at concurrency 1, and 100-row
requests at concurrency 8. Only one server is under load at a time; within a round each scenario
runs on all of them back to back, in an order that rotates from round to round, so the noise of a
shared machine falls on all alike. Figures are medians over the rounds; a ratio is the
median of the per-round ratios, oriented so that above 1 means modelyard is better.
``--write-docs`` puts them, the date, the command and the machine into ``docs/benchmarks.md``.

The anchor venv is made on first use at ``$MODELYARD_SERVING_ANCHOR_VENV`` (default /tmp/anchor),
or completed when it lacks a package.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tracking  # noqa: E402 - the anchor venv and free ports, shared with the tracking benchmark

REPO = Path(__file__).resolve().parents[1]
LOAD_SCRIPT = REPO.parent / "shared" / "bench" / "serving_load.py"
DOCS = REPO / "docs" / "benchmarks.md"
RESULTS = REPO / "bench" / "results"
VENV_BIN = REPO / ".venv" / "bin"
MLFLOW_VERSION = "3.17.2"
ANCHOR_PACKAGES = [f"mlflow=={MLFLOW_VERSION}", "uvloop", "httptools", "aiohttp", "scikit-learn"]
START, END = "<!-- serving:start -->", "<!-- serving:end -->"
SERVERS = ("mlflow", "modelyard", "modelyard-nolog", "ceiling")
# The load client's own limit: uvicorn (uvloop, httptools) with an app that parses the body and
# answers as many zeros, no model, no logging. No model server can beat it with this client.
CEILING_APP = """
import orjson


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    rows = len(orjson.loads(body)["inputs"]) if scope["path"] == "/invocations" else 0
    out = orjson.dumps({"predictions": [0] * rows})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
"""
# (name, concurrency, rows per request)
SCENARIOS = (("c32_rows1", 32, 1), ("c1_rows1", 1, 1), ("c8_rows100", 8, 100))
ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def ensure_anchor(venv: Path) -> Path:
    return tracking.ensure_anchor(venv, ANCHOR_PACKAGES, "aiohttp, httptools, uvloop, sklearn, mlflow")


free_port = tracking.free_port


class Process:
    def __init__(self, name: str, cmd: list[str], log: Path, ready_path: str, port: int, env: dict | None = None):
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env or ENV,
                                         start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}; see {log}")
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{name} did not answer in 300s; see {log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def register_model(tracking_uri: str) -> str:
    """Log and register the benchmark model through the real mlflow client; returns its name."""
    code = f"""
import mlflow, mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
mlflow.set_tracking_uri({tracking_uri!r})
X, y = load_iris(return_X_y=True)
with mlflow.start_run():
    mlflow.sklearn.log_model(LogisticRegression(max_iter=300).fit(X, y), name="model", input_example=X[:2],
                             registered_model_name="iris")
"""
    subprocess.run([str(VENV_BIN / "python"), "-c", code], check=True, env=ENV, capture_output=True)
    return "iris"


def start(name: str, tracking_uri: str, anchor_bin: Path, workdir: Path) -> Process:
    port = free_port()
    log = workdir / f"{name}.log"
    if name == "mlflow":
        env = {**ENV, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{anchor_bin}:{ENV.get('PATH', '')}"}
        cmd = [str(anchor_bin / "mlflow"), "models", "serve", "-m", "models:/iris/1", "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        return Process(name, cmd, log, "/ping", port, env)
    if name == "ceiling":
        (workdir / "ceiling_app.py").write_text(CEILING_APP)
        cmd = [str(VENV_BIN / "uvicorn"), "--app-dir", str(workdir), "--port", str(port), "--loop", "uvloop",
               "--http", "httptools", "--no-access-log", "--log-level", "warning", "ceiling_app:app"]
        return Process(name, cmd, log, "/ping", port)
    cmd = [str(VENV_BIN / "modelyard"), "serve", "models:/iris/1", "--tracking-uri", tracking_uri,
           "--port", str(port), "--workers", "1"]
    if name == "modelyard-nolog":
        cmd.append("--no-log-predictions")
    return Process(name, cmd, log, "/ping", port)


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in a process group (the server and its children)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ..., utime (11), stime (12)
            total += int(fields[11]) + int(fields[12])
    return total / tick


def load(url: str, concurrency: int, rows: int, seconds: float) -> dict:
    out = subprocess.run([str(VENV_BIN / "python"), str(LOAD_SCRIPT), "--url", url, "--concurrency",
                          str(concurrency), "--rows", str(rows), "--seconds", str(seconds)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(server: Process, tracking: Process, concurrency: int, rows: int, seconds: float) -> dict:
    """One load, with the CPU the model server and the modelyard server spent per 1,000 rows."""
    cpu = group_cpu_seconds(server.proc.pid), group_cpu_seconds(tracking.proc.pid)
    result = load(server.url, concurrency, rows, seconds)
    if server.name == "modelyard":
        time.sleep(1.5)  # the prediction log ships what is left within a second: count its cost here
    done = max(1.0, result["rows_per_s"] * seconds)
    result["serve_cpu_ms_per_1k_rows"] = round((group_cpu_seconds(server.proc.pid) - cpu[0]) / done * 1e6, 2)
    # The modelyard server's CPU is the prediction log's ingestion (plus heartbeats) while this ran.
    result["tracking_cpu_ms_per_1k_rows"] = round((group_cpu_seconds(tracking.proc.pid) - cpu[1]) / done * 1e6, 2)
    return result


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summarise(measured: dict) -> list[tuple]:
    """Rows of (scenario, figure, MLflow, modelyard, without the log, ceiling, ratio, ratio without the
    log, cost of the log): figures are medians over rounds, ratios medians of per-round ratios."""
    rows = []
    for scenario, _, n in SCENARIOS:
        figures = ["requests_per_s", "p50_ms", "p99_ms"] if n == 1 else ["rows_per_s", "p50_ms", "p99_ms"]
        for figure in figures:
            runs = {name: measured[name][scenario] for name in SERVERS}
            m, y, z, ceiling = (median(runs[name], figure) for name in SERVERS)
            throughput = figure.endswith("_per_s")

            def better(ours: dict, theirs: dict) -> float:
                return ours[figure] / theirs[figure] if throughput else theirs[figure] / ours[figure]

            # Within a round the servers were measured back to back: compare there, then take the median.
            rounds = list(zip(*(runs[name] for name in SERVERS)))
            ratio = statistics.median(better(b, a) for a, b, _, _ in rounds)
            ratio_nolog = statistics.median(better(c, a) for a, _, c, _ in rounds)
            # What the prediction log takes away: throughput lost, or latency added.
            cost = statistics.median(1 - better(b, c) if throughput else 1 / better(b, c) - 1 for _, b, c, _ in rounds)
            rows.append((scenario, figure, m, y, z, ceiling, ratio, ratio_nolog, cost))
    return rows


def cpu_table(measured: dict) -> str:
    """Median CPU per 1,000 rows: each model server, and the modelyard server's share of logging."""
    lines = ["| scenario | MLflow 3.17.2 | modelyard | modelyard, no prediction log | modelyard server ingesting "
             "the log |", "|---|---:|---:|---:|---:|"]
    for scenario, _, _ in SCENARIOS:
        cells = [median(measured[name][scenario], "serve_cpu_ms_per_1k_rows") for name in SERVERS[:3]]
        ingest = median(measured["modelyard"][scenario], "tracking_cpu_ms_per_1k_rows")
        lines.append(f"| {scenario} | " + " | ".join(f"{c:.1f} ms" for c in cells) + f" | {ingest:.1f} ms |")
    return "\n".join(lines)


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def table(rows: list[tuple]) -> str:
    lines = ["| scenario | figure | MLflow 3.17.2 | modelyard | modelyard, no prediction log | the client's ceiling "
             "| ratio (>1: modelyard better) | ratio, no prediction log | cost of the prediction log |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for scenario, figure, m, y, z, ceiling, ratio, ratio_nolog, cost in rows:
        lines.append(f"| {scenario} | {figure} | {fmt(m)} | {fmt(y)} | {fmt(z)} | {fmt(ceiling)} | {ratio:.2f}x "
                     f"| {ratio_nolog:.2f}x | {cost:+.1%} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{len(os.sched_getaffinity(0))} cores (nproc), {cpu}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def write_docs(text_table: str, run: dict) -> None:
    section = [START, "", f"Measured {run['finished']} with `{run['command']}`: median of {run['rounds']} rounds "
               f"of {run['seconds']:g} s per scenario and server.", "",
               f"Machine: {run['machine']}; load average {run['load_before']:.2f} before the run, "
               f"{run['load_after']:.2f} after. Load client on the same machine, one server at a time.", "",
               text_table, "", END]
    text = DOCS.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + "\n".join(section) + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n"
    DOCS.write_text(text)
    print(f"wrote the figures into {DOCS.relative_to(REPO)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each measured load (default 4)")
    ap.add_argument("--rounds", type=int, default=9, help="rounds over all servers; figures are medians (default 9)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of unrecorded load after each start")
    ap.add_argument("--write-docs", action="store_true", help="rewrite the serving figures in docs/benchmarks.md")
    ap.add_argument("--from-results", type=Path, metavar="DIR",
                    help="render the tables of an earlier run (bench/results/serving-...) instead of measuring")
    args = ap.parse_args(argv)
    if args.from_results:
        return report(args.from_results, args.write_docs)
    if not LOAD_SCRIPT.exists():
        ap.error(f"the shared load script is missing: {LOAD_SCRIPT}")
    if not (VENV_BIN / "modelyard").exists():
        ap.error("modelyard is not installed in .venv: run `make test` once first")

    load_before = os.getloadavg()[0]
    anchor_bin = ensure_anchor(Path(os.environ.get("MODELYARD_SERVING_ANCHOR_VENV", "/tmp/anchor")))
    run_dir = RESULTS / ("serving-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    measured: dict[str, dict[str, list]] = {s: {sc[0]: [] for sc in SCENARIOS} for s in SERVERS}
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        tracking = Process("modelyard-server", [str(VENV_BIN / "modelyard"), "server", "--port", str(port),
                                                "--data-dir", str(workdir / "data")],
                           run_dir / "modelyard-server.log", "/health", port)
        servers: dict[str, Process] = {}
        try:
            register_model(tracking.url)
            # All three stay up (idle when not measured) so that each scenario measures them back to
            # back, in a rotating order: the machine's noise then hits them alike.
            for name in SERVERS:
                servers[name] = start(name, tracking.url, anchor_bin, run_dir)
                load(servers[name].url, 8, 1, args.warmup)
            for round_no in range(1, args.rounds + 1):
                for scenario, concurrency, rows in SCENARIOS:
                    shift = (round_no - 1) % len(SERVERS)
                    for name in SERVERS[shift:] + SERVERS[:shift]:
                        result = measure(servers[name], tracking, concurrency, rows, args.seconds)
                        result.update(server=name, scenario=scenario, round=round_no)
                        measured[name][scenario].append(result)
                        print(json.dumps(result), flush=True)
                        with open(run_dir / "results.jsonl", "a") as out:
                            out.write(json.dumps(result) + "\n")
        finally:
            for server in servers.values():
                server.stop()
            tracking.stop()
    run = {"command": "python bench/serving.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
           "finished": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "rounds": args.rounds,
           "seconds": args.seconds, "machine": machine(), "load_before": load_before,
           "load_after": os.getloadavg()[0]}
    (run_dir / "run.json").write_text(json.dumps(run, indent=1))
    return report(run_dir, args.write_docs)


def report(run_dir: Path, write: bool) -> int:
    """Print (and with ``write``, put in the docs) the tables of the run recorded in ``run_dir``."""
    run = json.loads((run_dir / "run.json").read_text())
    measured: dict[str, dict[str, list]] = {s: {sc[0]: [] for sc in SCENARIOS} for s in SERVERS}
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        result = json.loads(line)
        measured[result["server"]][result["scenario"]].append(result)
    errors = sum(r["errors"] for s in measured.values() for runs in s.values() for r in runs)
    rendered = table(summarise(measured)) + "\n\nCPU time per 1,000 rows answered (median):\n\n" + cpu_table(measured)
    print(rendered)
    print(f"errors: {errors}; raw results and logs: {run_dir}", file=sys.stderr)
    if write:
        write_docs(rendered, run)
    return 1 if errors else 0

if __name__ == "__main__":
    sys.exit(main())
