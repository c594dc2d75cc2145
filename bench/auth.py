"""What authentication costs: the tracking workload against modelyard with auth off, then on.

    .venv/bin/python bench/auth.py [--scale 0.5] [--rounds 3] [--only log_metric,create_run]

Both servers run the same code on fresh SQLite storage, one after the other, in alternating
rounds (off, on, off, on, ...) so that the machine's noise falls on both alike. ``--ab`` instead
keeps both servers up and alternates single requests between them (history page, log-metric,
search), which cancels the noise of a busy machine far better than whole rounds do. With auth on, every
request of the shared ``tracking_load.py`` carries a Bearer token: the script is run unchanged,
in a process whose aiohttp sessions add the header. Prints the median p50 per scenario and the
overhead in percent (the projects issue allows 10%).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tracking import LOAD_SCRIPT, VENV_BIN, free_port, Server  # noqa: E402

# Runs the shared load script with a token on every request, without changing the script.
_AUTHED_LOAD = """
import asyncio, os, runpy, sys
import aiohttp
_Session = aiohttp.ClientSession
def authed_session(*args, **kwargs):
    kwargs.setdefault("headers", {"Authorization": "Bearer " + os.environ["BENCH_TOKEN"]})
    return _Session(*args, **kwargs)
aiohttp.ClientSession = authed_session
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def start(workdir: Path, auth: bool) -> tuple[Server, str | None]:
    data = workdir / "data"
    token = None
    env = {**os.environ, "MODELYARD_DATA_DIR": str(data)}
    if auth:
        out = subprocess.run([str(VENV_BIN / "modelyard"), "admin", "create-user", "bench", "--admin"],
                             env=env, capture_output=True, text=True, check=True).stdout
        token = out.strip().splitlines()[-1]
    port = free_port()
    cmd = [str(VENV_BIN / "modelyard"), "server", "--port", str(port), "--data-dir", str(data)]
    if auth:
        cmd.append("--auth")
    log = workdir / "server.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    server = Server("modelyard" + (" (auth)" if auth else ""), proc, f"http://127.0.0.1:{port}", log)
    server.wait_until_up()
    return server, token


def load(url: str, token: str | None, args, out: Path) -> dict[str, dict]:
    base = ["--url", url, "--scale", str(args.scale), "--concurrency", "8", "--json", str(out)]
    if args.only:
        base += ["--only", args.only]
    if token:
        cmd = [str(VENV_BIN / "python"), "-c", _AUTHED_LOAD, str(LOAD_SCRIPT), *base]
    else:
        cmd = [str(VENV_BIN / "python"), str(LOAD_SCRIPT), *base]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "BENCH_TOKEN": token or ""})
    return {r["scenario"]: r for r in map(json.loads, out.read_text().splitlines())}


def p50(result: dict) -> float:
    return result.get("p50_ms", result.get("filtered_p50_ms"))


def ab(rounds: int) -> None:
    """Both servers up at once; each request goes to one then the other, medians compared."""
    import requests

    with tempfile.TemporaryDirectory() as off_dir, tempfile.TemporaryDirectory() as on_dir:
        (off, _), (on, token) = start(Path(off_dir), False), start(Path(on_dir), True)
        try:
            sessions = []
            for server, headers in ((off, {}), (on, {"Authorization": f"Bearer {token}"})):
                s = requests.Session()
                s.headers.update(headers)
                api = server.url + "/api/2.0/mlflow"
                rid = s.post(api + "/runs/create", json={"experiment_id": "0"}).json()["run"]["info"]["run_id"]
                for start_step in range(0, 25_000, 1000):
                    s.post(api + "/runs/log-batch", json={"run_id": rid, "metrics": [
                        {"key": "loss", "value": 1.0, "timestamp": 1, "step": i}
                        for i in range(start_step, start_step + 1000)]})
                sessions.append((s, api, rid))
            calls = {
                "get-history (25,000 points)": lambda s, api, rid, i: s.get(
                    api + "/metrics/get-history", params={"run_id": rid, "metric_key": "loss", "max_results": 25000}),
                "log-metric": lambda s, api, rid, i: s.post(
                    api + "/runs/log-metric", json={"run_id": rid, "key": "m", "value": 1.0, "timestamp": i}),
                "runs/search": lambda s, api, rid, i: s.post(
                    api + "/runs/search", json={"experiment_ids": ["0"], "filter": "metrics.loss > 0"}),
            }
            print("| request | p50 auth off (ms) | p50 auth on (ms) | overhead |")
            print("|---|---|---|---|")
            for name, call in calls.items():
                times: list[list[float]] = [[], []]
                for i in range(rounds):
                    for side, (s, api, rid) in enumerate(sessions):
                        t = time.perf_counter()
                        assert call(s, api, rid, i).status_code == 200
                        times[side].append((time.perf_counter() - t) * 1000)
                p_off, p_on = statistics.median(times[0]), statistics.median(times[1])
                print(f"| {name} | {p_off:.2f} | {p_on:.2f} | {100 * (p_on - p_off) / p_off:+.1f}% |")
        finally:
            off.stop()
            on.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="log_metric,log_batch,create_run,search_runs,history")
    ap.add_argument("--ab", type=int, metavar="N", help="alternate N single requests between the two servers")
    args = ap.parse_args()
    if args.ab:
        ab(args.ab)
        return 0
    figures: dict[str, dict[str, list[float]]] = {}
    for round_no in range(args.rounds):
        for auth in (False, True):
            with tempfile.TemporaryDirectory(prefix="modelyard-auth-bench-") as tmp:
                server, token = start(Path(tmp), auth)
                try:
                    results = load(server.url, token, args, Path(tmp) / "load.json")
                finally:
                    server.stop()
            for scenario, result in results.items():
                figures.setdefault(scenario, {"off": [], "on": []})["on" if auth else "off"].append(p50(result))
            print(f"round {round_no + 1}, auth {'on' if auth else 'off'}: "
                  + ", ".join(f"{s} p50 {p50(r)} ms" for s, r in results.items()), file=sys.stderr)
    print("| scenario | p50 auth off (ms) | p50 auth on (ms) | overhead |")
    print("|---|---|---|---|")
    for scenario, f in figures.items():
        off, on = statistics.median(f["off"]), statistics.median(f["on"])
        print(f"| {scenario} | {off:.2f} | {on:.2f} | {100 * (on - off) / off:+.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
