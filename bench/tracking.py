"""Tracking benchmark: modelyard against MLflow 3.17.2, same machine, same workload, one sitting.

    .venv/bin/python bench/tracking.py [--scale 1] [--only log_metric,history]
                                       [--backends sqlite,postgres] [--write-docs]

For each backend (SQLite file, fresh PostgreSQL database) it starts ``mlflow server`` from an
anchor venv, loads it with the shared ``tracking_load.py``, stops it, then does the same with
``modelyard server``; one server runs at a time, each on fresh storage. It prints, per scenario and
figure, both values and a ratio oriented so that above 1 means modelyard is better (throughput:
modelyard / MLflow; latency and time: MLflow / modelyard). ``--write-docs`` puts that table, the
date, the command and the machine into ``docs/benchmarks.md``.

The anchor venv (mlflow==3.17.2 with uvloop and httptools, so its uvicorn is not handicapped, and
psycopg for PostgreSQL, SQLAlchemy 2.1's default driver) is made on first use at ``$MODELYARD_ANCHOR_VENV`` (default
/tmp/modelyard-anchor); point the variable at an existing venv to reuse it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOAD_SCRIPT = REPO.parent / "shared" / "bench" / "tracking_load.py"
DOCS = REPO / "docs" / "benchmarks.md"
RESULTS = REPO / "bench" / "results"
MLFLOW_VERSION = "3.17.2"
ANCHOR_PACKAGES = [f"mlflow=={MLFLOW_VERSION}", "uvloop", "httptools", "aiohttp", "psycopg[binary]"]
# The modelyard venv runs both servers' load (it has aiohttp from the test extra) and modelyard itself.
VENV_BIN = REPO / ".venv" / "bin"
PG_ADMIN_URL = os.environ.get("MODELYARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
FIGURES_START, FIGURES_END = "<!-- figures:start -->", "<!-- figures:end -->"
SERVERS = ("mlflow", "modelyard")


# --- the anchor ----------------------------------------------------------------------------------

def ensure_anchor(venv: Path, packages: list[str] = ANCHOR_PACKAGES,
                  modules: str = "aiohttp, httptools, psycopg, uvloop, mlflow") -> Path:
    """The anchor venv's bin directory, creating the venv or adding what it lacks. ``modules`` are
    what must import there (bench/serving.py asks for scikit-learn instead of psycopg)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating the anchor venv at {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = f"import {modules}; assert mlflow.__version__ == {MLFLOW_VERSION!r}"
    if subprocess.run([str(python), "-c", probe], stderr=subprocess.DEVNULL).returncode != 0:
        print(f"installing {' '.join(packages)} into {venv}", file=sys.stderr)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages], check=True)
    return venv / "bin"


# --- servers -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    log: Path

    def wait_until_up(self, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} did not answer in {timeout}s; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_server(name: str, store_url: str | None, workdir: Path, log: Path, anchor_bin: Path) -> Server:
    """``mlflow server`` or ``modelyard server`` on a free port, storing everything under workdir."""
    port = free_port()
    if name == "mlflow":
        store = store_url or f"sqlite:///{workdir / 'mlflow.db'}"
        cmd = [str(anchor_bin / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", store, "--serve-artifacts",
               "--artifacts-destination", str(workdir / "mlartifacts"), "--workers", "1"]
    else:
        cmd = [str(VENV_BIN / "modelyard"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(workdir / "data"), "--workers", "1"]
        if store_url:
            cmd += ["--database-url", store_url]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    server = Server(name, proc, f"http://127.0.0.1:{port}", log)
    try:
        server.wait_until_up()
    except BaseException:
        server.stop()
        raise
    return server


class PostgresDatabases:
    """Fresh PostgreSQL databases for one benchmark run, dropped at the end."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url
        self.made: list[str] = []

    def _execute(self, sql: str) -> None:
        import psycopg  # modelyard's own dependency; only needed for the PostgreSQL backend

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)

    def create(self, label: str) -> str:
        name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
        self._execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        return self.admin_url.rsplit("/", 1)[0] + "/" + name

    def drop_all(self) -> None:
        for name in self.made:
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.clear()


# --- one load run --------------------------------------------------------------------------------

def run_load(url: str, args: argparse.Namespace, out: Path) -> tuple[list[dict], str | None]:
    """Run the shared load script against url; its JSON lines, and an error text if it failed."""
    cmd = [str(VENV_BIN / "python"), str(LOAD_SCRIPT), "--url", url, "--scale", str(args.scale),
           "--concurrency", str(args.concurrency), "--json", str(out)]
    if args.only:
        cmd += ["--only", args.only]
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    results = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    error = None
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        error = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return results, error


def bench_backend(backend: str, args, anchor_bin: Path, pg: PostgresDatabases, run_dir: Path) -> dict:
    """{server: {"results": [...], "error": str|None}} for one backend, one server at a time."""
    measured = {}
    for name in SERVERS:
        store_url = pg.create(name) if backend == "postgres" else None
        print(f"== {backend}: {name}", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix=f"modelyard-bench-{name}-") as workdir:
            try:
                server = start_server(name, store_url, Path(workdir), run_dir / f"{backend}-{name}-server.log",
                                      anchor_bin)
            except RuntimeError as exc:
                measured[name] = {"results": [], "error": str(exc)}
                continue
            try:
                results, error = run_load(server.url, args, run_dir / f"{backend}-{name}.jsonl")
            finally:
                server.stop()
        measured[name] = {"results": results, "error": error}
    return measured


# --- the comparison table ------------------------------------------------------------------------

def is_throughput(figure: str) -> bool:
    return figure.endswith("_per_s")


def is_compared(figure: str) -> bool:
    # Counts (requests, runs, points) and the scenario's own wall time (set-up included) are context.
    return is_throughput(figure) or figure.endswith("_ms") or figure == "page_all_s"


def comparison_rows(measured: dict[str, dict]) -> list[tuple]:
    """(backend, scenario, figure, mlflow value, modelyard value, ratio) for every compared figure."""
    rows = []
    for backend, servers in measured.items():
        by_server = {name: {r["scenario"]: r for r in servers[name]["results"]} for name in SERVERS}
        scenarios = list(dict.fromkeys([*by_server["mlflow"], *by_server["modelyard"]]))
        for scenario in scenarios:
            anchor, ours = by_server["mlflow"].get(scenario, {}), by_server["modelyard"].get(scenario, {})
            figures = [f for f in dict.fromkeys([*anchor, *ours]) if is_compared(f)]
            for figure in figures:
                a, m = anchor.get(figure), ours.get(figure)
                ratio = None
                if a and m:
                    ratio = m / a if is_throughput(figure) else a / m
                rows.append((backend, scenario, figure, a, m, ratio))
    return rows


def fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}".rstrip("0").rstrip(".")


def markdown_table(rows: list[tuple]) -> str:
    lines = [f"| backend | scenario | figure | MLflow {MLFLOW_VERSION} | modelyard | ratio (>1: modelyard better) |",
             "|---|---|---|---:|---:|---:|"]
    for backend, scenario, figure, a, m, ratio in rows:
        shown = "-" if ratio is None else f"{ratio:.2f}x"
        lines.append(f"| {backend} | {scenario} | {figure} | {fmt(a)} | {fmt(m)} | {shown} |")
    return "\n".join(lines)


def failures(measured: dict[str, dict]) -> list[str]:
    return [f"{backend}/{name}: {run['error']}" for backend, servers in measured.items()
            for name, run in servers.items() if run["error"]]


# --- docs ----------------------------------------------------------------------------------------

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


def write_docs(table: str, command: str, scale: float, load_before: float, failed: list[str]) -> None:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    size = "full request counts" if scale == 1 else f"{scale:g} x the full request counts"
    section = [FIGURES_START, "", f"Measured {now} with `{command}` ({size}).", "",
               f"Machine: {machine()}; load average {load_before:.2f} when the run began. "
               "Load client on the same machine, one server at a time.", "", table, ""]
    if failed:
        section += ["Runs that did not complete:", "", *[f"- {f}" for f in failed], ""]
    section.append(FIGURES_END)
    text = DOCS.read_text()
    if FIGURES_START in text and FIGURES_END in text:
        head, rest = text.split(FIGURES_START, 1)
        tail = rest.split(FIGURES_END, 1)[1]
        text = head + "\n".join(section) + tail
    else:
        text = text.rstrip("\n") + "\n\n## Figures\n\n" + "\n".join(section) + "\n"
    DOCS.write_text(text)
    print(f"wrote the figures into {DOCS.relative_to(REPO)}", file=sys.stderr)


# --- main ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every request count (default 1)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--only", default="", help="comma-separated scenarios of tracking_load.py")
    ap.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    ap.add_argument("--write-docs", action="store_true", help="rewrite the figures in docs/benchmarks.md")
    args = ap.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - {"sqlite", "postgres"}
    if unknown:
        ap.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    if not LOAD_SCRIPT.exists():
        ap.error(f"the shared load script is missing: {LOAD_SCRIPT}")
    if not (VENV_BIN / "modelyard").exists():
        ap.error("modelyard is not installed in .venv: run `make run` or `make test` once first")

    load_before = os.getloadavg()[0]
    anchor_bin = ensure_anchor(Path(os.environ.get("MODELYARD_ANCHOR_VENV", "/tmp/modelyard-anchor")))
    run_dir = RESULTS / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    pg = PostgresDatabases(PG_ADMIN_URL)
    measured = {}
    try:
        for backend in backends:
            measured[backend] = bench_backend(backend, args, anchor_bin, pg, run_dir)
    finally:
        pg.drop_all()

    table = markdown_table(comparison_rows(measured))
    failed = failures(measured)
    print(table)
    for f in failed:
        print(f"FAILED {f}")
    print(f"raw results and server logs: {run_dir.relative_to(REPO)}", file=sys.stderr)
    if args.write_docs:
        command = "python bench/tracking.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        write_docs(table, command, args.scale, load_before, failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
