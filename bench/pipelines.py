"""Pipelines benchmark: a fully cached re-run against DVC, and the Ray executor's scheduling overhead.

    .venv/bin/python bench/pipelines.py                  # both parts
    .venv/bin/python bench/pipelines.py --only dvc       # the DVC comparison alone
    .venv/bin/python bench/pipelines.py --only ray --jobs 1000
    .venv/bin/python bench/pipelines.py --write-docs     # also rewrite the figures in docs/benchmarks.md

**No-op re-run.** The same 10-stage chain over 1 MB files, written once as ``dvc.yaml`` and once
as ``modelyard.yml`` (each stage reads the previous stage's file and writes the next; the first
reads a 1 MB seed). Each tool runs it once for real, then ``--repeat`` times with nothing
changed; the figure is the median wall time of the whole command (``dvc repro`` against
``modelyard pipeline run``, both as a user types them, start-up included). DVC 3.67.1 lives in a
venv of its own, created on first use at ``/tmp/modelyard-dvc`` (``MODELYARD_DVC_VENV`` to reuse
another); its project is made with ``dvc init --no-scm``. modelyard's runs go to a fresh
``modelyard server`` (SQLite) started for the benchmark, and record their runs there, as in use.

**Ray scheduling overhead.** A DAG of ``--jobs`` trivial jobs (``script: "true"``; 10 layers, each
job needing two jobs of the layer before) run by ``modelyard pipeline run --executor ray`` on a
local Ray started for the run, against the same server, once executing every job and once fully
cached. The per-job figure is the wall time divided by the number of jobs: Ray's task dispatch,
the runner's bookkeeping, and the server recording each job as a nested MLflow run with its log.
The same DAG on the local executor is measured beside it, and a bare Ray baseline (the same
number of no-op tasks submitted straight to ``ray``) shows what Ray itself costs.

Results are printed as a table and kept as JSON lines in ``bench/results/<date>/pipelines.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
RESULTS = REPO / "bench" / "results"
DOCS = REPO / "docs" / "benchmarks.md"
DVC_VERSION = "3.67.1"
STAGES = 10
SIZE = 1 << 20

STEP = '''import hashlib, sys
data = open(sys.argv[1], "rb").read()
key = hashlib.sha256(data[:4096]).digest()
out = bytes(b ^ key[i % 32] for i, b in enumerate(data[:65536])) + data[65536:]
open(sys.argv[2], "wb").write(out)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_dvc(venv: Path) -> Path:
    dvc = venv / "bin" / "dvc"
    if not dvc.exists():
        print(f"creating the DVC venv at {venv} (dvc=={DVC_VERSION})", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"dvc=={DVC_VERSION}"], check=True)
    version = subprocess.run([str(dvc), "--version"], capture_output=True, text=True).stdout.strip()
    if version != DVC_VERSION:
        print(f"warning: {dvc} is DVC {version}, not {DVC_VERSION}", file=sys.stderr)
    return dvc


class Server:
    def __init__(self, data_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(data_dir.parent / "server.log", "wb")
        self.proc = subprocess.Popen([str(VENV_BIN / "modelyard"), "server", "--port", str(self.port),
                                      "--data-dir", str(data_dir)], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=_env(None))
        import urllib.request

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


def _env(extra: dict | None) -> dict:
    # Python as users run it: with bytecode caching. PYTHONDONTWRITEBYTECODE (set in some sandboxes)
    # would make every start compile modelyard's modules from source, while DVC's, installed by pip,
    # come precompiled; the first run writes the cache and the timed runs use it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **(extra or {})}


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env(env))
    took = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return took


def chain_workspace(root: Path) -> None:
    (root / "data").mkdir(parents=True)
    (root / "step.py").write_text(STEP)
    (root / "data" / "seed.bin").write_bytes(os.urandom(SIZE))


def bench_dvc(work: Path, server: Server, repeat: int) -> list[dict]:
    dvc = ensure_dvc(Path(os.environ.get("MODELYARD_DVC_VENV", "/tmp/modelyard-dvc")))
    python = sys.executable
    # DVC
    d = work / "dvc"
    chain_workspace(d)
    subprocess.run([str(dvc), "init", "--no-scm", "-q"], cwd=d, check=True)
    subprocess.run([str(dvc), "config", "core.analytics", "false"], cwd=d, check=True)
    stages = {}
    for i in range(STAGES):
        src = "data/seed.bin" if i == 0 else f"data/s{i - 1}.bin"
        stages[f"s{i}"] = {"cmd": f"{python} step.py {src} data/s{i}.bin", "deps": ["step.py", src],
                           "outs": [f"data/s{i}.bin"]}
    (d / "dvc.yaml").write_text(json.dumps({"stages": stages}, indent=1))
    env = {"DVC_NO_ANALYTICS": "1"}
    first_dvc = timed([str(dvc), "repro", "-q"], d, env)
    # modelyard
    m = work / "modelyard"
    chain_workspace(m)
    lines = ["name: chain10", "stages: [chain]"]
    for i in range(STAGES):
        src = "data/seed.bin" if i == 0 else f"data/s{i - 1}.bin"
        needs = "[]" if i == 0 else f"[s{i - 1}]"
        lines += [f"s{i}:", f"  script: python step.py {src} data/s{i}.bin", f"  needs: {needs}",
                  f"  inputs: [{src}]", f"  outputs: [data/s{i}.bin]"]
    (m / "modelyard.yml").write_text("\n".join(lines) + "\n")
    cli = [str(VENV_BIN / "modelyard"), "pipeline", "run", "--quiet", "--tracking-uri", server.url]
    lean = [str(VENV_BIN / "python"), "-m", "modelyard.pipelines", "run", "--quiet", "--tracking-uri", server.url]
    first_my = timed(cli, m)
    check = subprocess.run(cli, cwd=m, capture_output=True, text=True, env=_env(None)).stdout
    assert f"{STAGES} cached" in check, check
    # Interleaved, so a change in the machine's load falls on all three alike.
    dvc_times, cli_times, lean_times = [], [], []
    for _ in range(repeat):
        dvc_times.append(timed([str(dvc), "repro", "-q"], d, env))
        cli_times.append(timed(cli, m))
        lean_times.append(timed(lean, m))
    dvc_med = statistics.median(dvc_times)
    row = {"bench": "noop_rerun", "stages": STAGES, "file_mb": 1, "repeat": repeat}
    return [
        {**row, "tool": f"dvc {DVC_VERSION}", "command": "dvc repro", "first_run_s": first_dvc,
         "noop_median_s": dvc_med, "noop_min_s": min(dvc_times)},
        {**row, "tool": "modelyard", "command": "modelyard pipeline run", "first_run_s": first_my,
         "noop_median_s": statistics.median(cli_times), "noop_min_s": min(cli_times),
         "speedup_vs_dvc": dvc_med / statistics.median(cli_times)},
        {**row, "tool": "modelyard", "command": "python -m modelyard.pipelines run", "first_run_s": None,
         "noop_median_s": statistics.median(lean_times), "noop_min_s": min(lean_times),
         "speedup_vs_dvc": dvc_med / statistics.median(lean_times)},
    ]


def dag_spec(jobs: int, layers: int = 10) -> str:
    width = jobs // layers
    lines = ["name: dag" + str(jobs), "stages: [dag]"]
    for layer in range(layers):
        for i in range(width):
            lines.append(f"j{layer}_{i}:")
            lines.append('  script: "true"')
            if layer == 0:
                lines.append("  needs: []")
            else:
                lines.append(f"  needs: [j{layer - 1}_{i}, j{layer - 1}_{(i + 1) % width}]")
            lines.append("  resources: {cpus: 0.25}")
    return "\n".join(lines) + "\n"


def bare_ray(jobs: int) -> float:
    code = f'''
import time, ray
ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
@ray.remote
def noop():
    return None
ray.get([noop.remote() for _ in range(50)])
t = time.perf_counter()
ray.get([noop.remote() for _ in range({jobs})])
print(time.perf_counter() - t)
ray.shutdown()
'''
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ,
                                                                                          "RAY_USAGE_STATS_ENABLED": "0"})
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return float(out.stdout.strip().splitlines()[-1])


def bench_ray(work: Path, server: Server, jobs: int) -> list[dict]:
    rows = []
    for executor in ("ray", "local"):
        d = work / f"dag-{executor}"
        d.mkdir(parents=True)
        (d / "modelyard.yml").write_text(dag_spec(jobs).replace("name: dag", f"name: dag-{executor}-"))
        cmd = [str(VENV_BIN / "modelyard"), "pipeline", "run", "--quiet", "--tracking-uri", server.url,
               "--executor", executor]
        env = {"RAY_USAGE_STATS_ENABLED": "0"}
        first = timed(cmd, d, env)
        cached = timed(cmd, d, env)
        rows.append({"bench": "dag", "executor": executor, "jobs": jobs, "first_run_s": first,
                     "per_job_ms": first / jobs * 1000, "cached_run_s": cached,
                     "cached_per_job_ms": cached / jobs * 1000})
    base = bare_ray(jobs)
    rows.append({"bench": "dag", "executor": "bare ray tasks", "jobs": jobs, "first_run_s": base,
                 "per_job_ms": base / jobs * 1000})
    return rows


def noop_table(rows: list[dict]) -> str:
    out = ["| command | first run (executes 10 stages) | fully cached re-run, median | min | vs `dvc repro` |",
           "|---|---|---|---|---|"]
    for r in rows:
        first = f"{r['first_run_s']:.2f} s" if r.get("first_run_s") else "-"
        ratio = f"**{r['speedup_vs_dvc']:.1f}x** faster" if "speedup_vs_dvc" in r else "-"
        out.append(f"| `{r['command']}` ({r['tool']}) | {first} | **{r['noop_median_s']:.3f} s** | "
                   f"{r['noop_min_s']:.3f} s | {ratio} |")
    out += ["", f"Median of {rows[0]['repeat']} runs of each, interleaved."]
    return "\n".join(out)


def dag_table(rows: list[dict]) -> str:
    out = [f"| {rows[0]['jobs']}-job DAG | every job runs | per job | fully cached | per job |",
           "|---|---|---|---|---|"]
    for r in rows:
        cached = f"{r['cached_run_s']:.2f} s | {r['cached_per_job_ms']:.2f} ms" if "cached_run_s" in r else "- | -"
        out.append(f"| {r['executor']} | {r['first_run_s']:.1f} s | {r['per_job_ms']:.1f} ms | {cached} |")
    return "\n".join(out)


def write_docs(part: str, text: str, note: str) -> None:
    """Replace the figures of one part (``noop`` or ``ray``) between their markers in docs/benchmarks.md."""
    doc = DOCS.read_text()
    start, end = f"<!-- pipelines-{part}:start -->", f"<!-- pipelines-{part}:end -->"
    block = f"{start}\n{note}\n\n{text}\n{end}"
    if start in doc:
        doc = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    DOCS.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["dvc", "ray"], default=None)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelyard-bench-pipelines-"))
    server = Server(work / "server-data")
    rows: list[dict] = []
    try:
        if args.only in (None, "dvc"):
            rows += bench_dvc(work, server, args.repeat)
        if args.only in (None, "ray"):
            rows += bench_ray(work, server, args.jobs)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    day = RESULTS / datetime.now().strftime("%Y-%m-%d")
    day.mkdir(parents=True, exist_ok=True)
    with open(day / "pipelines.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps({**r, "time": datetime.now().isoformat(timespec="seconds")}) + "\n")
    load = os.getloadavg()[0]
    note = (f"Measured {datetime.now():%Y-%m-%d} on {os.cpu_count()} cores (load average {load:.1f} at the end: "
            f"a shared machine) with `bench/pipelines.py{' --only ' + args.only if args.only else ''}`.")
    for part, pick, fmt in (("noop", "noop_rerun", noop_table), ("ray", "dag", dag_table)):
        chosen = [r for r in rows if r["bench"] == pick]
        if chosen:
            text = fmt(chosen)
            print(text + "\n")
            if args.write_docs:
                write_docs(part, text, note)


if __name__ == "__main__":
    main()
