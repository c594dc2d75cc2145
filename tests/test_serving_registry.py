"""``modelyard serve`` following the registry: alias moves under load, versions that fail to load,
canary splits, shadows, deployment records and heartbeats, several workers, start-up errors.

Real processes throughout: a modelyard server, models registered through the real ``mlflow``
client, ``modelyard serve`` against it, requests over HTTP.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import requests
from sklearn.datasets import load_iris

from conftest import ServerProcess, unique
from test_serving_support import BROKEN_MODEL, ECHO_MODEL, Registry, ServeProcess, metric, wait_for

X, _ = load_iris(return_X_y=True)
POLL = ("--poll-interval", "0.3")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serving-registry")
    server = ServerProcess(workdir / "data").start()
    yield Registry(server, workdir)
    server.stop()


@pytest.fixture()
def serve(registry):
    started = []

    def start(*args, **kw):
        proc = ServeProcess(registry.workdir, registry.url, *args, **kw).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def record(registry, name) -> dict:
    r = registry.api("GET", "/deployments/get", params={"name": name})
    assert r.status_code == 200, r.text
    return r.json()["deployment"]


class Load:
    """Threads sending requests until stopped, recording (status, version, seconds) in order."""

    def __init__(self, proc: ServeProcess, threads: int = 6, rows=None):
        self.proc = proc
        self.rows = rows  # the same rows for every request; default: one iris row per thread
        self.stop_event = threading.Event()
        self.results: list[list[tuple]] = [[] for _ in range(threads)]
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, i: int) -> None:
        session = requests.Session()
        while not self.stop_event.is_set():
            started = time.perf_counter()
            try:
                rows = self.rows or X[i:i + 1].tolist()
                r = session.post(self.proc.url + "/invocations", json={"inputs": rows}, timeout=30)
                self.results[i].append((r.status_code, r.headers.get("x-model-version"), time.perf_counter() - started))
            except requests.RequestException as exc:
                self.results[i].append((str(exc), None, time.perf_counter() - started))
            time.sleep(0.002)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for t in self.threads:
            t.join()

    def seen(self, version: str) -> bool:
        return all(any(v == version for _, v, _ in r) for r in self.results)


def test_an_alias_moved_under_load_swaps_versions_with_zero_failed_requests(registry, serve):
    name = unique("swap")
    v1, v2 = registry.iris(name), registry.iris(name, flip=True)
    registry.set_alias(name, "champion", v1)
    proc = serve(f"models:/{name}@champion", *POLL)
    with Load(proc) as load:
        wait_for(lambda: load.seen(v1), what="traffic on version 1")
        moved_at = time.perf_counter()
        registry.set_alias(name, "champion", v2)
        wait_for(lambda: load.seen(v2), timeout=30, what="every client answered by version 2")
        time.sleep(0.5)
    swap_seconds = time.perf_counter() - moved_at
    answers = [a for thread in load.results for a in thread]
    assert len(answers) > 100
    assert [a for a in answers if a[0] != 200] == [], "no request may fail during a swap"
    for thread in load.results:
        versions = [v for _, v, _ in thread]
        first_v2 = versions.index(v2)
        assert set(versions[:first_v2]) == {v1} and set(versions[first_v2:]) == {v2}, "one switch, never back"
    # Loading and warming happen off the request path: no request waited for them.
    assert max(s for _, _, s in answers) < max(2.0, swap_seconds / 2)
    body = proc.invoke({"inputs": X[:1].tolist()}).json()
    assert body == {"predictions": [2]}  # version 2 learned reversed labels
    assert proc.deployment()["arms"][0]["version"] == v2
    text = proc.metrics()
    assert metric(text, "modelyard_serving_model_loads_total", version=v2, outcome="loaded") == 1
    assert metric(text, "modelyard_serving_model_info", version=v2, ref="@champion") == 100
    wait_for(lambda: record(registry, proc.deployment()["name"])["replicas"][0].get("model_version") == v2,
             what="a heartbeat naming version 2")


def test_a_version_that_fails_to_load_leaves_the_old_one_serving_and_is_reported(registry, serve):
    name = unique("broken")
    good = registry.code_model(name, ECHO_MODEL)
    broken = registry.code_model(name, BROKEN_MODEL, example=False)
    registry.set_alias(name, "live", good)
    proc = serve(f"models:/{name}@live", *POLL)
    deployment = proc.deployment()["name"]
    with Load(proc, threads=3, rows=[[1.0, 2.0, 3.0]]) as load:
        registry.set_alias(name, "live", broken)
        state = wait_for(lambda: (lambda d: d if d["status"] == "degraded" else None)(proc.deployment()),
                         what="the failure reported")
        time.sleep(1.0)  # a few more polls: it keeps retrying (with backoff) and keeps serving
    assert "this version is broken on purpose" in state["problems"]["load"]
    assert f"still serving {good}" in state["problems"]["load"]
    answers = [a for thread in load.results for a in thread]
    assert answers and all(a[0] == 200 and a[1] == good for a in answers)
    text = proc.metrics()
    assert metric(text, "modelyard_serving_model_loads_total", version=broken, outcome="failed") >= 1
    assert metric(text, "modelyard_serving_up") == 0
    stored = wait_for(lambda: (lambda d: d if d["status"] == "degraded" else None)(record(registry, deployment)),
                      what="a degraded heartbeat")
    assert "broken on purpose" in stored["message"]
    # Moving the alias back to the version served clears the failure ...
    registry.set_alias(name, "live", good)
    wait_for(lambda: proc.deployment()["status"] == "serving", what="the failure cleared")
    assert proc.deployment()["problems"] == {}
    # ... and so does a good new version, once loaded.
    registry.set_alias(name, "live", broken)
    wait_for(lambda: proc.deployment()["status"] == "degraded", what="the failure reported again")
    fixed = registry.code_model(name, ECHO_MODEL)
    registry.set_alias(name, "live", fixed)
    wait_for(lambda: proc.invoke({"inputs": [[1, 2, 3]]}).headers["x-model-version"] == fixed, what="version 3")
    assert proc.deployment()["status"] == "serving" and proc.deployment()["problems"] == {}
    wait_for(lambda: record(registry, deployment)["status"] == "serving", what="a serving heartbeat")


def test_a_canary_splits_traffic_by_weight_and_the_shadow_never_answers(registry, serve):
    name = unique("canary")
    v1, v2, v3 = registry.iris(name), registry.iris(name, flip=True), registry.iris(name)
    deployment = unique("canary-dep")
    spec = registry.workdir / f"{deployment}.yml"
    spec.write_text(f"""
name: {deployment}
model: {name}
versions:
  - version: {v1}
    weight: 80
  - version: {v2}
    weight: 20
shadow: {v3}
""")
    proc = serve("--deployment", str(spec), *POLL)
    counts = {v1: 0, v2: 0, v3: 0}
    n = 600
    for _ in range(n):
        r = proc.invoke({"inputs": X[:1].tolist()})
        assert r.status_code == 200
        version = r.headers["x-model-version"]
        counts[version] += 1
        assert r.json()["predictions"] == ([2] if version == v2 else [0])
    assert counts[v3] == 0, "the shadow never answers"
    share = counts[v2] / n
    assert 0.13 <= share <= 0.27, f"version {v2} answered {share:.1%} of requests for a weight of 20%"
    shadowed = wait_for(lambda: metric(proc.metrics(), "modelyard_serving_shadow_requests_total",
                                       version=v3, status="200") >= n and
                        metric(proc.metrics(), "modelyard_serving_shadow_requests_total", version=v3, status="200"),
                        what="every request copied to the shadow")
    assert shadowed == n
    stored = record(registry, deployment)
    assert stored["versions"] == [{"version": v1, "weight": 80}, {"version": v2, "weight": 20}]
    assert stored["shadow_version"] == v3
    wait_for(lambda: record(registry, deployment)["replicas"][0].get("model_version") == f"{v1},{v2}",
             what="a heartbeat naming both versions")
    # The shadow's answers are in the prediction log, marked as such, beside the served ones.
    def logged():
        rows = registry.api("GET", "/predictions/search", params={"deployment": deployment, "max_results": 1000})
        return rows.json().get("predictions", []) if rows.status_code == 200 else []

    rows = wait_for(lambda: (lambda r: r if sum(1 for x in r if x["shadow"]) >= 100 else None)(logged()),
                    what="shadow predictions in the log")
    assert {x["model_version"] for x in rows if x["shadow"]} == {v3}
    assert {x["model_version"] for x in rows if not x["shadow"]} <= {v1, v2}


def test_a_new_spec_posted_to_the_server_is_followed_by_the_running_replica(registry, serve):
    name = unique("follow")
    v1, v2 = registry.iris(name), registry.iris(name, flip=True)
    proc = serve(f"models:/{name}/{v1}", *POLL)
    deployment = proc.deployment()["name"]
    assert deployment == f"{name}-v{v1}" and proc.deployment()["generation"] == 1
    r = registry.api("POST", "/deployments", json={"name": deployment, "model_name": name,
                                                   "versions": [{"version": v2, "weight": 100}]})
    assert r.status_code == 200 and r.json()["deployment"]["generation"] == 2
    wait_for(lambda: proc.invoke({"inputs": X[:1].tolist()}).headers["x-model-version"] == v2,
             what="the replica switching to the posted spec")
    state = proc.deployment()
    assert state["generation"] == 2 and [a["version"] for a in state["arms"]] == [v2]


def test_serving_by_name_reads_the_deployment_recorded_in_the_server(registry, serve):
    name = unique("byname")
    v1 = registry.iris(name)
    registry.set_alias(name, "prod", v1)
    deployment = unique("recorded")
    r = registry.api("POST", "/deployments", json={"name": deployment, "model_name": name, "alias": "prod"})
    assert r.status_code == 200
    proc = serve("--name", deployment, *POLL)
    assert proc.invoke({"inputs": X[:1].tolist()}).headers["x-model-version"] == v1
    assert proc.deployment()["arms"] == [{"ref": "@prod", "version": v1, "weight": 100, "share": 1.0}]


def test_the_server_records_the_replica_its_heartbeats_and_its_stop(registry, serve):
    name = unique("beat")
    v1 = registry.iris(name)
    proc = serve(f"models:/{name}/{v1}", "--name", unique("beats"), *POLL)
    deployment = proc.deployment()["name"]
    first = wait_for(lambda: (lambda d: d if d["replicas"] else None)(record(registry, deployment)),
                     what="a first heartbeat")
    assert first["status"] == "serving" and first["endpoint_url"] == proc.url
    replica = first["replicas"][0]
    assert replica["endpoint_url"] == proc.url and replica["model_version"] == v1
    assert replica["replica_id"] == proc.deployment()["replica_id"]
    wait_for(lambda: record(registry, deployment)["replicas"][0]["last_heartbeat_timestamp"]
             > replica["last_heartbeat_timestamp"], what="another heartbeat")
    assert proc.stop() == 0
    stopped = record(registry, deployment)
    assert stopped["status"] == "stopped" and stopped["replicas"][0]["status"] == "stopped"


def test_two_workers_each_serve_and_heartbeat_as_replicas(registry, serve):
    name = unique("workers")
    v1 = registry.iris(name)
    proc = serve(f"models:/{name}/{v1}", "--workers", "2", *POLL)
    deployment = f"{name}-v{v1}"
    for i in range(20):
        assert proc.invoke({"inputs": X[i:i + 1].tolist()}).status_code == 200
    replicas = wait_for(lambda: (lambda d: d["replicas"] if len(d["replicas"]) == 2 else None)(
        record(registry, deployment)), what="two replicas")
    assert len({r["replica_id"] for r in replicas}) == 2
    assert all(r["status"] == "serving" and r["model_version"] == v1 for r in replicas)
    assert proc.stop() == 0
    assert {r["status"] for r in record(registry, deployment)["replicas"]} == {"stopped"}


@pytest.mark.parametrize("args, message", [
    ([], "say what to serve"),
    (["models:/x"], "is not a registered model URI"),
    (["models:/MISSING@champion"], "not found"),
    (["models:/x/1", "--deployment", "nofile.yml"], "not both"),
    (["--deployment", "nofile.yml"], "cannot read nofile.yml"),
    (["--name", "nosuchdeployment"], "no deployment named 'nosuchdeployment'"),
])
def test_start_up_errors_are_one_clear_line(registry, args, message):
    args = [a.replace("MISSING", unique("missing")) for a in args]
    done = subprocess.run([sys.executable, "-m", "modelyard", "serve", *args, "--tracking-uri", registry.url,
                           "--port", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_against_a_server_with_auth_the_token_reaches_the_registry_deployments_and_the_log(tmp_path, monkeypatch):
    data = tmp_path / "data"
    made = subprocess.run([sys.executable, "-m", "modelyard", "admin", "create-user", "svc", "--admin",
                           "--data-dir", str(data)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    server = ServerProcess(data, "--auth").start()
    proc = None
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
        secure = Registry(server, tmp_path)
        name = unique("secure")
        version = secure.iris(name)
        # Without the token, nothing is served: the server refuses the first call.
        refused = subprocess.run([sys.executable, "-m", "modelyard", "serve", f"models:/{name}/{version}",
                                  "--tracking-uri", server.url, "--port", "0"], capture_output=True, text=True,
                                 timeout=120, env={**os.environ, "MLFLOW_TRACKING_TOKEN": ""})
        assert refused.returncode != 0 and "Authentication required" in refused.stderr, refused.stderr
        proc = ServeProcess(tmp_path, server.url, f"models:/{name}/{version}", *POLL).start()
        r = proc.invoke({"inputs": X[:1].tolist()})
        assert r.status_code == 200
        auth = {"Authorization": f"Bearer {token}"}
        deployment = proc.deployment()["name"]
        stored = wait_for(lambda: (lambda d: d if d["replicas"] else None)(
            requests.get(server.url + "/api/modelyard/v1/deployments/get", params={"name": deployment},
                         headers=auth).json()["deployment"]), what="a heartbeat through auth")
        assert stored["replicas"][0]["status"] == "serving"
        logged = wait_for(lambda: requests.get(server.url + "/api/modelyard/v1/predictions/search", headers=auth,
                                               params={"deployment": deployment}).json().get("predictions"),
                          what="the prediction delivered through auth")
        assert logged[0]["request_id"] == r.headers["x-request-id"]
        assert requests.get(server.url + "/api/modelyard/v1/deployments/get", params={"name": deployment}
                            ).status_code == 401
    finally:
        if proc is not None:
            proc.stop()
        server.stop()
