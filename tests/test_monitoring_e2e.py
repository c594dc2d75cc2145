"""End to end with real processes: a modelyard server, ``modelyard serve`` in front of a registered
scikit-learn model, traffic whose distribution shifts half way, a drift alert that goes pending then
firing, one webhook notification, a rollback that moves the alias (and the model server follows),
resolution once the shift is gone, and late labels that change the performance series."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import requests

from conftest import free_port
from test_monitoring_support import Api, Receiver, monitoring_server, name

FEATURES = ["x", "z", "w"]


def training_frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.normal(0, 1, 3000), "z": rng.normal(5, 2, 3000), "w": rng.uniform(0, 1, 3000)})
    df["label"] = (df["x"] + 0.3 * rng.normal(size=3000) > 0).astype(int)
    return df


def register_version(url: str, model: str, seed: int, tmp_path) -> str:
    """Train, log the training data where the server can read it, log and register the model."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(url)
    df = training_frame(seed)
    path = tmp_path / f"train-{seed}.parquet"
    df.to_parquet(path)
    # set the experiment on this server: the fluent API remembers one from earlier tests' servers
    experiment = mlflow.set_experiment(f"{model}-training")
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        mlflow.log_artifact(str(path), "data")
        artifact = mlflow.get_artifact_uri(f"data/{path.name}").split(":", 1)[1].lstrip("/")
        source = f"{url}/api/2.0/mlflow-artifacts/artifacts/{artifact}"
        mlflow.log_input(mlflow.data.from_pandas(df, source=source, name="train"), context="training")
        info = mlflow.sklearn.log_model(LogisticRegression().fit(df[FEATURES], df["label"]), name="model",
                                        registered_model_name=model, input_example=df[FEATURES].head(2))
    return str(info.registered_model_version)


class Serve:
    def __init__(self, tracking_uri: str, model_uri: str, deployment: str, workdir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "serve", model_uri, "--tracking-uri", tracking_uri,
             "--port", str(self.port), "--name", deployment, "--poll-interval", "0.5"],
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri})
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"modelyard serve exited:\n{self.log_path.read_text()}")
            try:
                if requests.get(self.url + "/ping", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"modelyard serve did not start:\n{self.log_path.read_text()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Traffic(threading.Thread):
    """Requests of 20 rows, ten a second, with x shifted by ``shift``; remembers what it sent."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.shift = 0.0
        self.stop_event = threading.Event()
        self.sent: list[tuple[str, float]] = []  # (row request id, the unshifted x: the ground truth)
        self.versions: list[str] = []
        self.failures = 0
        self.rng = random.Random(3)

    def run(self):
        session = requests.Session()
        while not self.stop_event.is_set():
            base = [self.rng.gauss(0, 1) for _ in range(20)]
            rows = [[b + self.shift, self.rng.gauss(5, 2), self.rng.random()] for b in base]
            try:
                r = session.post(self.url + "/invocations", json={"dataframe_split": {"columns": FEATURES,
                                                                                      "data": rows}}, timeout=10)
            except requests.RequestException:
                self.failures += 1
                continue
            if r.status_code != 200:
                self.failures += 1
                continue
            rid = r.headers["x-request-id"]
            self.versions.append(r.headers["x-model-version"])
            self.sent.extend((f"{rid}:{i}", b) for i, b in enumerate(base))
            time.sleep(0.1)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_shift_in_served_traffic_fires_one_alert_rolls_back_and_resolves(tmp_path):
    from mlflow import MlflowClient

    server = monitoring_server(tmp_path)
    receiver = Receiver()
    serve = traffic = None
    try:
        api = Api(server.url)
        client = MlflowClient(server.url)
        model, deployment = name("fraud"), name("fraud-dep")
        register_version(server.url, model, 1, tmp_path)
        register_version(server.url, model, 2, tmp_path)
        client.set_registered_model_alias(model, "prod", "1")
        serve = Serve(server.url, f"models:/{model}@prod", deployment, tmp_path)
        traffic = Traffic(serve.url)
        traffic.start()
        time.sleep(3)  # version 1 serves for a while, then prod moves to version 2
        client.set_registered_model_alias(model, "prod", "2")
        wait_until(lambda: traffic.versions and traffic.versions[-1] == "2", 30, "serve to follow prod to v2")

        mon = name("watch")
        # A 2-sd shift is a normalised Wasserstein distance of about 2; unshifted windows of 50 rows
        # or more stay near 0.1 (the default threshold, which small windows on a slow machine cross).
        api.post("/monitors/create", {"name": mon, "deployment": deployment, "config": {
            "window_seconds": 4, "kinds": ["data_drift", "performance", "health"], "min_rows": 50,
            "drift": {"method": "wasserstein", "threshold": 0.5}}})
        api.post("/notification-channels/create", {"name": "hook", "type": "webhook",
                                                   "config": {"url": receiver.url + "/alerts"}})
        rule = api.post("/alert-rules/create", {
            "name": name("drift"), "expr": f'drift_detected{{monitor="{mon}"}} > 0', "for_seconds": 3,
            "channels": ["hook"], "actions": [{"type": "rollback", "alias": "prod"}]})["rule"]

        # unshifted traffic: windows are judged and nothing fires
        wait_until(lambda: api.get("/monitors/get", name=mon)["monitor"].get("last_status") == "ok", 30,
                   "a first scheduled evaluation")
        assert api.get("/alerts/list", rule=rule["name"])["alerts"] == []
        drift = api.get("/monitors/series", name=mon, metric="drift_detected")["series"]
        assert drift and all(p[1] == 0.0 for s in drift for p in s["points"])

        # half way: x shifts by two standard deviations
        traffic.shift = 2.0
        seen = set()

        def firing():
            alerts = api.get("/alerts/list", rule=rule["name"])["alerts"]
            seen.update(a["state"] for a in alerts)
            return [a for a in alerts if a["state"] == "firing"]

        fired = wait_until(firing, 60, "the drift alert to fire")
        assert "pending" in seen or any(e["kind"] == "pending" for e in api.get(
            "/alerts/history", rule=rule["name"])["events"])
        assert [a["labels"]["feature"] for a in fired] == ["x"]  # exactly the shifted feature
        assert fired[0]["fired_at_ms"] - fired[0]["active_at_ms"] >= 3000
        events = api.get("/alerts/history", rule=rule["name"], max_results=200)["events"]
        order = [e["kind"] for e in reversed(events) if e["kind"] in ("pending", "firing")]
        assert order[:2] == ["pending", "firing"]

        # the rollback moves prod back to version 1, and the model server follows
        wait_until(lambda: client.get_model_version_by_alias(model, "prod").version == "1", 30, "the rollback")
        wait_until(lambda: traffic.versions[-1] == "1", 30, "serve to follow the rollback")
        actions = [a for a in api.get("/alerts/actions")["actions"] if a["rule_id"] == rule["rule_id"]]
        assert [(a["type"], a["status"], a["result"]["to_version"]) for a in actions] == [("rollback", "done", "1")]

        # the shift goes on for more windows: still one notification
        time.sleep(9)
        assert len(firing()) == 1
        assert [b["json"]["status"] for b in receiver.bodies] == ["firing"]
        page = receiver.bodies[0]["json"]
        assert page["commonLabels"]["deployment"] == deployment and page["alerts"][0]["labels"]["feature"] == "x"

        # the shift is removed: the alert resolves, and the resolution is sent
        traffic.shift = 0.0
        wait_until(lambda: not firing() and api.get("/alerts/list", rule=rule["name"], state="resolved")["alerts"],
                   60, "the alert to resolve")
        assert [b["json"]["status"] for b in receiver.wait_for(2)] == ["firing", "resolved"]
        assert traffic.failures == 0

        # labels arrive late for rows already evaluated: the performance series changes
        traffic.stop_event.set()
        traffic.join(10)
        api.post("/monitors/update", {"name": mon, "enabled": False})  # from here on, evaluations are ours
        last = int(time.time() * 1000)  # the last rows were sent just before this
        time.sleep(2.5)  # and have reached the prediction log by now
        before = api.post("/monitors/evaluate", {"name": mon, "at_ms": last + 1000,
                                                 "include_report": False})["evaluation"]
        values = {s["metric"]: s["value"] for s in before["series"] if not s.get("feature")}
        assert values["labeled_rows"] == 0 and "accuracy" not in values
        recent = traffic.sent[-60:]
        api.post("/predictions/labels", {"labels": [{"request_id": rid, "label": int(x > 0)} for rid, x in recent]})
        after = api.post("/monitors/evaluate", {"name": mon, "at_ms": last + 2000,
                                                "include_report": False})["evaluation"]
        values = {s["metric"]: s["value"] for s in after["series"] if not s.get("feature")}
        assert values["labeled_rows"] > 0 and values["accuracy"] > 0.7
        points = dict(map(tuple, api.get("/monitors/series", name=mon, metric="labeled_rows")["series"][0]["points"]))
        assert points[before["ts_ms"]] == 0 and points[after["ts_ms"]] == values["labeled_rows"] > 0
    finally:
        if traffic is not None:
            traffic.stop_event.set()
        if serve is not None:
            serve.stop()
        receiver.close()
        server.stop()
