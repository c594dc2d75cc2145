"""The example pipeline on a real local Ray cluster gives what the local executor gives.

One Ray head for the module (`ray start --head --block` in its own process group, ended by that
group at teardown), one server, one local run and one forced Ray run of the same pipeline.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import ServerProcess, free_port, unique

pytest.importorskip("ray")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pipeline"
RAY = Path(sys.executable).parent / "ray"
# A loopback cluster for one test module: no usage reports, and no token to share between the head and the
# runner processes (Ray 2.60 enables token auth by default and keeps one token per machine).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
DATA_OUTPUTS = ("data/raw.csv", "data/train.parquet", "data/test.parquet", "models/logreg", "models/forest")


def _stop(head: subprocess.Popen) -> None:
    """End the head's process group (the GCS, the raylet, its workers): only what this module started."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    time.sleep(1)
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A Ray head on loopback for the module, in its own process group."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("ray") / "head.log", "wb")
    env = {**os.environ, **RAY_ENV}
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
                             "--node-ip-address", "127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert head.poll() is None, "ray start exited"
            if b"Ray runtime started" in Path(log.name).read_bytes():
                break
            time.sleep(0.5)
        else:
            pytest.fail("the Ray head did not come up in 180 s")
        yield f"127.0.0.1:{port}"
    finally:
        _stop(head)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("ray-server") / "data").start()
    yield proc
    proc.stop()


def copy_example(dest: Path) -> Path:
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".modelyard", "models", "reports", "__pycache__",
                                                                  "raw.csv", "*.parquet"))
    return dest


def run(server, cwd: Path, *args, env: dict):
    proc = subprocess.run([sys.executable, "-m", "modelyard", "pipeline", "run", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, **RAY_ENV, **env, "MLFLOW_TRACKING_URI": server.url})
    return proc


def last_run(server) -> dict:
    api = server.url + "/api/modelyard/v1"
    run_id = requests.get(api + "/pipelines/runs", params={"pipeline": "fraud-example", "max_results": 1}).json()["runs"][0]["run_id"]
    return requests.get(api + "/pipelines/runs/get", params={"run_id": run_id}).json()["run"]


def test_the_example_on_ray_gives_the_same_results_as_on_the_local_executor(ray_cluster, server, tmp_path):
    env = {"MODEL_NAME": unique("fraud-ray"), "DEPLOYMENT": unique("fraud-ray-api")}
    local_dir = copy_example(tmp_path / "local")
    proc = run(server, local_dir, "--quiet", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    local = last_run(server)

    ray_dir = copy_example(tmp_path / "on-ray")
    proc = run(server, ray_dir, "--executor", "ray", "--ray-address", ray_cluster, "--force", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    on_ray = last_run(server)
    assert on_ray["executor"] == "ray" and on_ray["status"] == "FINISHED"
    assert {j["name"]: j["status"] for j in on_ray["jobs"]} == {j["name"]: "SUCCEEDED" for j in local["jobs"]}
    assert "(execute pid=" in proc.stdout + proc.stderr  # the jobs ran in Ray workers

    def outputs(run):
        return {path: meta["hash"] for j in run["jobs"] for path, meta in (j.get("outputs") or {}).items()}

    local_out, ray_out = outputs(local), outputs(on_ray)
    for path in DATA_OUTPUTS:
        assert local_out[path] == ray_out[path], path
    metrics = {r["name"]: (r.get("result") or {}).get("metrics") for r in (local, on_ray) for r in r["jobs"]}
    local_eval = next(j for j in local["jobs"] if j["name"] == "evaluate")["result"]["metrics"]
    ray_eval = next(j for j in on_ray["jobs"] if j["name"] == "evaluate")["result"]["metrics"]
    assert local_eval == ray_eval and metrics
    for path in ("data/train.parquet", "models/forest/model.joblib"):
        assert (local_dir / path).read_bytes() == (ray_dir / path).read_bytes()

    # Ray honoured the resources: the two training jobs (1 CPU each) overlapped on the 2-CPU cluster.
    jobs = {j["name"]: j for j in on_ray["jobs"]}
    a, b = jobs["train_logreg"], jobs["train_forest"]
    assert a["start_time"] < b["end_time"] and b["start_time"] < a["end_time"]

    # The cache is the server's, whatever the executor: a third run on Ray skips everything.
    proc = run(server, ray_dir, "--executor", "ray", "--ray-address", ray_cluster, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {j["status"] for j in last_run(server)["jobs"]} == {"CACHED"}


def test_a_job_asking_for_more_gpus_than_the_cluster_has_fails_before_it_runs(ray_cluster, server, tmp_path):
    (tmp_path / "modelyard.yml").write_text(
        "name: gpu-example\nbig:\n  script: echo never\n  resources: {gpus: 4}\nafter:\n  script: echo\n  needs: [big]\n")
    proc = run(server, tmp_path, "--executor", "ray", "--ray-address", ray_cluster, env={})
    assert proc.returncode == 1
    run_ = requests.get(server.url + "/api/modelyard/v1/pipelines/runs", params={"pipeline": "gpu-example"}).json()["runs"][0]
    jobs = {j["name"]: j for j in requests.get(server.url + "/api/modelyard/v1/pipelines/runs/get",
                                               params={"run_id": run_["run_id"]}).json()["run"]["jobs"]}
    assert jobs["big"]["status"] == "FAILED" and "4 GPU" in jobs["big"]["message"]
    assert jobs["after"]["status"] == "SKIPPED"
