"""Helpers shared by the UI tests (no tests here).

- :func:`secured_server`: a server with ``--auth`` and one-second monitor buckets, an administrator
  and a guest of another project, made through the stores' Python API before it starts.
- :func:`populate`: an experiment of runs logged through the real ``mlflow`` client (params, per-step
  metrics, tags, artifacts of every previewable kind, a training dataset, a logged and registered
  scikit-learn model with an alias), a pipeline run with its DAG and job log, and a deployment
  whose drift monitor has a firing alert, all through the server's APIs.
- :func:`browser`: Debian's chromium driven by Playwright (never a downloaded browser).
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import struct
import time
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path

import requests

from conftest import ServerProcess, seed
from test_monitoring_support import predictions, rows

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PREFIX = "/api/modelyard/v1"
# A description that must come out as text: no script, no javascript: link.
HOSTILE_MARKDOWN = ("## Churn model\n\nPredicts **churn** from usage. <script>window.pwned = 1</script>\n\n"
                    "[click](javascript:window.pwned=2) and <img src=x onerror=\"window.pwned=3\">\n\n"
                    "| metric | value |\n|---|---|\n| auc | 0.91 |\n")


def _setup_users(database_url: str) -> dict[str, str]:
    async def make(stores):
        tokens = {}
        await stores.tokens.create_user("ada", True)
        tokens["admin"] = (await stores.tokens.create_personal_token("ada", "t", ["api"], None))["token"]
        await stores.projects.create("other", None, None, None)
        await stores.tokens.create_user("otto", False)
        await stores.projects.set_member("other", "otto", "owner")
        tokens["outsider"] = (await stores.tokens.create_personal_token("otto", "t", ["api"], None))["token"]
        return tokens

    return seed(database_url, make)


def secured_server(data_dir: Path, *args: str) -> ServerProcess:
    from modelyard.settings import Settings

    data_dir.mkdir(parents=True, exist_ok=True)
    tokens = _setup_users(Settings(data_dir=data_dir).resolved_database_url)
    proc = ServerProcess(data_dir, "--auth", "--auth-failure-delay-ms", "0", "--monitor-bucket-seconds", "1",
                         "--monitor-tick-ms", "200", *args).start()
    proc.tokens = tokens
    return proc


class Api:
    """modelyard's own API with a token, raising on errors."""

    def __init__(self, url: str, token: str | None):
        self.url = url
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body=None, **params) -> dict:
        r = self.session.request(method, self.url + path, json=body, params=params or None, timeout=60)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else {}

    def own(self, method: str, path: str, body=None, **params) -> dict:
        return self.call(method, PREFIX + path, body, **params)


def tiny_png(width: int = 24, height: int = 16) -> bytes:
    """A real PNG (a colour gradient), made without an imaging library."""
    raw = b"".join(b"\x00" + bytes(c for x in range(width) for c in (x * 10 % 256, y * 15 % 256, 180))
                   for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@contextmanager
def tracking_env(url: str, token: str | None):
    """The fluent mlflow API pointed at ``url`` with ``token`` (environment restored afterwards)."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN")}
    os.environ["MLFLOW_TRACKING_URI"] = url
    if token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    mlflow.set_tracking_uri(url)
    try:
        yield mlflow
    finally:
        while mlflow.active_run():
            mlflow.end_run()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def log_runs(mlflow, experiment: str, n: int, tmp: Path, steps: int = 30) -> list[dict]:
    """``n`` runs: params lr/depth/model, per-step loss and accuracy, a team tag, artifacts of
    every previewable kind on the first run. Returns [{run_id, name, lr, depth, model, accuracy}]."""
    exp = mlflow.set_experiment(experiment)
    mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, "mlflow.note.content",
                                             "Which **learning rate** keeps churn recall up?")
    out = []
    for i in range(n):
        lr, depth, model = [0.001, 0.01, 0.1][i % 3], 2 + i, "tree" if i % 2 else "linear"
        with mlflow.start_run(run_name=f"trial-{i:02d}") as run:
            mlflow.log_params({"lr": lr, "depth": depth, "model": model})
            mlflow.set_tags({"team": "risk" if i % 4 else "growth"})
            rng = random.Random(i)
            for step in range(steps):
                mlflow.log_metrics({"loss": math.exp(-lr * 30 * step / 10) + rng.random() * 0.03,
                                    "accuracy": 0.95 - 0.45 * math.exp(-step / (6 + i))}, step=step)
            if i == 0:
                mlflow.log_dict({"lr": lr, "layers": [64, 32], "html": "<b>not bold</b>"}, "config.json")
                mlflow.log_text("epoch 1 ok\nepoch 2 ok\n<script>window.pwned = 4</script>\n", "logs/train.log")
                (tmp / "predictions.csv").write_text("id,score,label\n" + "".join(
                    f"{k},{k / 10:.2f},{k % 2}\n" for k in range(10)))
                mlflow.log_artifact(str(tmp / "predictions.csv"), "eval")
                (tmp / "roc.png").write_bytes(tiny_png())
                mlflow.log_artifact(str(tmp / "roc.png"), "eval")
            accuracy = 0.95 - 0.45 * math.exp(-(steps - 1) / (6 + i))
            out.append({"run_id": run.info.run_id, "name": f"trial-{i:02d}", "lr": lr, "depth": depth, "model": model,
                        "accuracy": accuracy, "experiment_id": exp.experiment_id})
    return out


def register_model(mlflow, name: str, tmp: Path, url: str) -> dict:
    """Two versions of a scikit-learn model trained on a logged dataset; ``champion`` on v2."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    client = mlflow.MlflowClient()
    exp = mlflow.set_experiment(f"{name}-training")
    versions = []
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        df = pd.DataFrame({"x": rng.normal(0, 1, 400), "z": rng.normal(5, 2, 400)})
        df["label"] = (df["x"] > 0).astype(int)
        with mlflow.start_run(experiment_id=exp.experiment_id, run_name=f"train-v{seed}") as run:
            mlflow.log_param("C", 1.0 / seed)
            mlflow.log_metric("auc", 0.8 + seed / 100)
            mlflow.log_input(mlflow.data.from_pandas(df, source=f"{url}/data/churn-{seed}.parquet", name="churn-train"),
                             context="training")
            info = mlflow.sklearn.log_model(LogisticRegression().fit(df[["x", "z"]], df["label"]), name="model",
                                            registered_model_name=name, pip_requirements=["scikit-learn"])
            versions.append({"version": str(info.registered_model_version), "run_id": run.info.run_id})
    client.update_registered_model(name, description=HOSTILE_MARKDOWN)
    client.set_registered_model_tag(name, "task", "churn")
    client.set_registered_model_alias(name, "champion", versions[1]["version"])
    client.set_registered_model_alias(name, "challenger", versions[0]["version"])
    return {"name": name, "versions": versions}


def pipeline_run(api: Api, model: str, version: str, run_id: str) -> dict:
    """A pipeline run reported through the API (prepare -> train -> evaluate -> register), its
    train job's log uploaded, and the model version tagged with the run and job."""
    pipeline = f"churn-{uuid.uuid4().hex[:6]}"
    spec = {"stages": ["data", "train", "register"], "jobs": [
        {"name": "prepare", "stage": "data", "kind": "script", "needs": []},
        {"name": "train", "stage": "train", "kind": "train", "needs": ["prepare"]},
        {"name": "evaluate", "stage": "train", "kind": "evaluate", "needs": ["train"]},
        {"name": "register", "stage": "register", "kind": "register", "needs": ["train", "evaluate"]}]}
    run = api.own("POST", "/pipelines/runs/start", {
        "pipeline": pipeline, "spec": spec, "planned_jobs": ["prepare", "train", "evaluate", "register"],
        "git_commit": "3f2a9c1d0b7e4a5f6c8d9e0a1b2c3d4e5f6a7b8c", "executor": "local"})["run"]
    now = int(time.time() * 1000)
    jobs = [{"name": "prepare", "stage": "data", "kind": "script", "status": "CACHED", "cache_key": "a1" * 16,
             "start_time": now - 9000, "end_time": now - 9000},
            {"name": "train", "stage": "train", "kind": "train", "status": "SUCCEEDED", "cache_key": "b2" * 16,
             "start_time": now - 8000, "end_time": now - 3000},
            {"name": "evaluate", "stage": "train", "kind": "evaluate", "status": "SUCCEEDED",
             "start_time": now - 3000, "end_time": now - 2000},
            {"name": "register", "stage": "register", "kind": "register", "status": "SUCCEEDED",
             "start_time": now - 2000, "end_time": now - 1000}]
    answer = api.own("POST", "/pipelines/runs/update", {"run_id": run["run_id"], "jobs": jobs})
    train = next(j for j in answer["jobs"] if j["name"] == "train")
    path = train["artifact_uri"].split(":", 1)[1].lstrip("/") + "/logs/train.log"
    r = api.session.put(f"{api.url}/api/2.0/mlflow-artifacts/artifacts/{path}",
                        data=b"loading 400 rows\nfitting LogisticRegression(C=0.5)\nauc 0.82\n", timeout=30)
    assert r.status_code == 200, r.text
    api.own("POST", "/pipelines/runs/update", {"run_id": run["run_id"], "status": "FINISHED"})
    for key, value in (("modelyard.pipeline.run_id", run["run_id"]), ("modelyard.job", "train")):
        api.call("POST", "/api/2.0/mlflow/model-versions/set-tag",
                 {"name": model, "version": version, "key": key, "value": value})
    return {"pipeline": pipeline, "run_id": run["run_id"], "number": run["number"]}


def deployment_with_firing_alert(api: Api, model: str) -> dict:
    """A deployment of ``model`` (90/10 between v2 and v1), a reference, a monitor of drift,
    health and performance, traffic that drifts over a few windows, labels, and a drift rule
    whose alert fires."""
    dep = f"churn-{uuid.uuid4().hex[:6]}"
    api.own("POST", "/deployments", {"name": dep, "model_name": model, "status": "serving",
                                     "versions": [{"version": "2", "weight": 0.9}, {"version": "1", "weight": 0.1}]})
    ref = api.own("POST", "/references/create", {"name": f"{dep}-ref", "records": rows(1500, seed=1)})["reference"]
    monitor = f"{dep}-drift"
    # Evaluated by the calls below only (the scheduler would judge the empty windows of now and
    # resolve the alert while the browser looks at it).
    api.own("POST", "/monitors/create", {"name": monitor, "deployment": dep, "enabled": False, "config": {
        "window_seconds": 60, "kinds": ["data_drift", "health", "performance"], "min_rows": 50,
        "reference": {"reference_id": ref["reference_id"]}}})
    rule = f"{dep}-drifted"
    api.own("POST", "/alert-rules/create", {"name": rule, "expr": f'drift_detected{{monitor="{monitor}"}} > 0',
                                            "for_seconds": 0, "severity": "critical",
                                            "annotations": {"summary": "{{ $labels.feature }} drifted"}})
    t0 = int(time.time() * 1000) - 600_000
    ids = []
    for k in range(6):  # one window a minute, drifting more and more
        ts = t0 + k * 60_000
        batch = predictions(dep, rows(300 + 40 * k, shift=0.3 * k, seed=k + 10), ts_ms=ts, version="2",
                            model_name=model, prefix=f"w{k}")
        api.own("POST", "/predictions/log", {"predictions": batch})
        ids.extend(p["request_id"] for p in batch)
        if k == 5:
            api.own("POST", "/predictions/labels", {"labels": [
                {"request_id": p["request_id"], "label": int(p["inputs"]["x"] > 0.5)} for p in batch]})
        api.own("POST", "/monitors/evaluate", {"name": monitor, "at_ms": ts + 59_000, "include_report": False})
    firing = api.own("GET", "/alerts/list", rule=rule, state="firing")["alerts"]
    assert firing, "the drift rule should fire on shifted traffic"
    return {"deployment": dep, "monitor": monitor, "rule": rule, "firing": firing}


@contextmanager
def chromium():
    """Debian's chromium driven by Playwright (``make test`` installs it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def sign_in(ctx, url: str, username: str, token: str):
    """Sign in through the form; returns the page, left on the experiments list."""
    page = ctx.new_page()
    page.goto(url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/experiments$"))
    return page


def json_of(page, selector: str):
    return json.loads(page.text_content(selector))
