"""Monitors and reference profiles through the API of a real server: evaluation on demand and on
schedule, drift, quality, performance with late labels, health, series, reports and /metrics."""
from __future__ import annotations

import io
import math
import time

import numpy as np
import pytest

from conftest import seed
from test_monitoring_support import Api, ApiError, Receiver, monitoring_server, name, predictions, rows


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def mserver(request, tmp_path_factory):
    args = []
    if request.param == "postgres":
        args = ["--database-url", request.getfixturevalue("pg_database")()]
    proc = monitoring_server(tmp_path_factory.mktemp("monitoring"), *args)
    proc.backend = request.param
    yield proc
    proc.stop()


@pytest.fixture()
def mapi(mserver):
    return Api(mserver.url)


def reference(mapi, n=2000, seed=1, **kw) -> str:
    body = {"name": name("ref"), "records": rows(n, seed=seed), **kw}
    return mapi.post("/references/create", body)["reference"]["reference_id"]


def monitor(mapi, deployment, ref_id=None, scheduled=False, **config) -> str:
    """A monitor evaluated only on demand, unless ``scheduled`` (the scheduler's windows would
    otherwise interleave with the test's own evaluations)."""
    mon = name("mon")
    cfg = {"window_seconds": 60, **config}
    if ref_id:
        cfg["reference"] = {"reference_id": ref_id}
    mapi.post("/monitors/create", {"name": mon, "deployment": deployment, "config": cfg, "enabled": scheduled})
    return mon


def latest(evaluation: dict) -> dict:
    return {(s["metric"], s.get("feature", "")): s["value"] for s in evaluation["series"]}


def test_a_monitor_is_created_with_its_defaults_listed_updated_and_deleted(mapi):
    dep = name("dep")
    mon = name("mon")
    created = mapi.post("/monitors/create", {"name": mon, "deployment": dep, "config": {"window_seconds": 120}})["monitor"]
    cfg = created["config"]
    assert cfg["kinds"] == ["data_drift", "prediction_drift", "data_quality", "performance", "health"]
    assert cfg["mode"] == "tumbling" and cfg["every_seconds"] == 120 and cfg["min_rows"] == 100
    assert created["next_eval_ms"] % 120_000 == 0 and created["enabled"] is True
    assert mon in [m["name"] for m in mapi.get("/monitors/list", deployment=dep)["monitors"]]
    updated = mapi.post("/monitors/update", {"name": mon, "enabled": False,
                                             "config": {"mode": "sliding", "window_seconds": 60, "every_seconds": 10}})
    assert updated["monitor"]["enabled"] is False and updated["monitor"]["config"]["every_seconds"] == 10
    assert mapi.get("/monitors/get", name=mon)["monitor"]["config"]["mode"] == "sliding"
    with pytest.raises(ApiError) as exc:
        mapi.post("/monitors/create", {"name": mon, "deployment": dep})
    assert exc.value.body["error_code"] == "RESOURCE_ALREADY_EXISTS"
    mapi.delete("/monitors/delete", {"name": mon})
    with pytest.raises(ApiError) as exc:
        mapi.get("/monitors/get", name=mon)
    assert exc.value.status == 404


@pytest.mark.parametrize("config,fragment", [
    ({"colour": "red"}, "Unknown monitor setting"),
    ({"kinds": ["vibes"]}, "kinds"),
    ({"mode": "hopping"}, "mode"),
    ({"window_seconds": 0}, "window_seconds"),
    ({"window_seconds": 60, "every_seconds": 30}, "tumbling"),
    ({"drift": {"method": "magic"}}, "drift method"),
    ({"drift": {"drift_share": 2}}, "drift_share"),
    ({"reference": {}}, "reference"),
    ({"task": "ranking"}, "task"),
])
def test_a_bad_monitor_config_is_a_400_that_says_what_is_wrong_and_creates_nothing(mapi, config, fragment):
    mon = name("bad")
    r = mapi.raw("POST", "/monitors/create", json={"name": mon, "deployment": "d", "config": config})
    assert r.status_code == 400 and fragment in r.json()["message"], r.text
    assert mapi.raw("GET", "/monitors/get", params={"name": mon}).status_code == 404


def test_evaluating_flags_exactly_the_shifted_feature_and_stores_series_and_report(mapi):
    dep = name("dep")
    ref = reference(mapi)
    mon = monitor(mapi, dep, ref)
    mapi.post("/predictions/log", {"predictions": predictions(dep, rows(1500, shift=1.0, seed=2))})
    ev = mapi.post("/monitors/evaluate", {"name": mon})["evaluation"]
    values = latest(ev)
    assert values[("drift_detected", "x")] == 1.0
    assert values[("drift_detected", "z")] == 0.0 and values[("drift_detected", "c")] == 0.0
    assert values[("drifted_features", "")] == 1.0 and values[("rows", "")] == 1500
    drift = {c["column"]: c for c in ev["report"]["data_drift"]["columns"]}
    assert drift["x"]["method"] == "wasserstein" and drift["c"]["method"] == "jensenshannon"
    assert drift["x"]["value"] == pytest.approx(1.0, abs=0.15)
    assert len(drift["x"]["histogram"]["reference"]) == 30 and drift["c"]["histogram"]["labels"]
    series = mapi.get("/monitors/series", name=mon, metric="drift_detected")["series"]
    assert {s["feature"]: dict(map(tuple, s["points"]))[ev["ts_ms"]] for s in series} == {"x": 1.0, "z": 0.0, "c": 0.0}
    report = mapi.get("/monitors/report", name=mon)
    assert report["ts_ms"] == ev["ts_ms"] and report["report"]["reference"]["reference_id"] == ref


def test_a_reference_of_at_most_1000_rows_gets_p_value_tests_as_evidently_chooses(mapi):
    dep = name("dep")
    ref = reference(mapi, n=600)
    mon = monitor(mapi, dep, ref)
    mapi.post("/predictions/log", {"predictions": predictions(dep, rows(400, seed=5))})
    ev = mapi.post("/monitors/evaluate", {"name": mon})["evaluation"]
    methods = {c["column"]: (c["method"], c["statistic"]) for c in ev["report"]["data_drift"]["columns"]}
    assert methods == {"x": ("ks", "p_value"), "z": ("ks", "p_value"), "c": ("chisquare", "p_value")}
    assert latest(ev)[("drift_detected", "x")] == 0.0


def test_user_thresholds_and_methods_apply_per_column(mapi):
    dep = name("dep")
    ref = reference(mapi)
    mon = monitor(mapi, dep, ref, drift={"method": "psi", "per_column": {"z": {"method": "wasserstein",
                                                                              "threshold": 0.0}}})
    mapi.post("/predictions/log", {"predictions": predictions(dep, rows(1500, seed=9))})
    cols = {c["column"]: c for c in mapi.post("/monitors/evaluate", {"name": mon})["evaluation"]["report"]
            ["data_drift"]["columns"]}
    assert cols["x"]["method"] == "psi" and not cols["x"]["drifted"]
    assert cols["z"]["method"] == "wasserstein" and cols["z"]["threshold"] == 0.0 and cols["z"]["drifted"]


def test_prediction_drift_compares_the_outputs_with_the_references_target_column(mapi):
    dep = name("dep")
    records = rows(2000, seed=1)
    for i, r in enumerate(records):
        r["target"] = i % 2  # the model is expected to answer both classes half the time
    ref = mapi.post("/references/create", {"name": name("ref"), "records": records})["reference"]["reference_id"]
    mon = monitor(mapi, dep, ref, kinds=["prediction_drift"])
    mapi.post("/predictions/log", {"predictions": predictions(dep, rows(500), outputs=lambda f: 1)})
    ev = mapi.post("/monitors/evaluate", {"name": mon})["evaluation"]
    assert latest(ev)[("prediction_drift_detected", "prediction")] == 1.0
    col = ev["report"]["prediction_drift"]["columns"][0]
    assert col["method"] == "jensenshannon" and col["value"] == pytest.approx(0.4645, abs=1e-3)
    balanced = name("dep")
    mon2 = monitor(mapi, balanced, ref, kinds=["prediction_drift"])
    mapi.post("/predictions/log", {"predictions": predictions(balanced, rows(500), outputs=lambda f: int(f["x"] > 0))})
    assert latest(mapi.post("/monitors/evaluate", {"name": mon2})["evaluation"])[
        ("prediction_drift_detected", "prediction")] == 0.0


def test_a_window_below_min_rows_is_not_judged_for_drift(mapi):
    dep = name("dep")
    mon = monitor(mapi, dep, reference(mapi))
    mapi.post("/predictions/log", {"predictions": predictions(dep, rows(30, shift=5.0))})
    ev = mapi.post("/monitors/evaluate", {"name": mon})["evaluation"]
    assert not [s for s in ev["series"] if s["metric"].startswith("drift")]
    assert "min_rows" in ev["report"]["note"] and latest(ev)[("rows", "")] == 30


def test_data_quality_counts_nulls_out_of_range_unseen_categories_type_errors_and_extra_columns(mapi):
    dep = name("dep")
    mon = monitor(mapi, dep, reference(mapi), kinds=["data_quality"])
    feats = rows(100, seed=3)
    for f in feats[:10]:
        f["x"] = None
    for f in feats[10:15]:
        f["z"] = 1000.0
    for f in feats[15:35]:
        f["c"] = "never-seen"
    feats[35]["x"] = "text"
    feats[36]["surprise"] = 1
    mapi.post("/predictions/log", {"predictions": predictions(dep, feats)})
    v = latest(mapi.post("/monitors/evaluate", {"name": mon})["evaluation"])
    assert v[("null_ratio", "x")] == pytest.approx(0.10)
    assert v[("out_of_range_ratio", "z")] == pytest.approx(0.05)
    assert v[("unseen_category_ratio", "c")] == pytest.approx(0.20)
    assert v[("type_error_ratio", "x")] == pytest.approx(0.01)
    assert v[("extra_columns", "")] == 1 and v[("schema_violations", "")] == 2


def test_late_labels_change_the_performance_series(mapi):
    dep = name("dep")
    mon = monitor(mapi, dep, kinds=["performance"])
    items = predictions(dep, rows(200, seed=4))
    mapi.post("/predictions/log", {"predictions": items})
    before = mapi.post("/monitors/evaluate", {"name": mon})["evaluation"]
    assert latest(before)[("labeled_rows", "")] == 0 and ("accuracy", "") not in latest(before)
    # ground truth arrives later: the model was right on the first 150, wrong on the last 50
    labels = [{"request_id": p["request_id"], "label": p["outputs"] if i < 150 else 1 - p["outputs"]}
              for i, p in enumerate(items)]
    mapi.post("/predictions/labels", {"labels": labels})
    time.sleep(1.1)  # the next evaluation falls in the next bucket, so the series has two points
    evaluation = mapi.post("/monitors/evaluate", {"name": mon})["evaluation"]
    after = latest(evaluation)
    assert after[("labeled_rows", "")] == 200 and after[("label_ratio", "")] == 1.0
    assert after[("accuracy", "")] == pytest.approx(0.75)
    points = dict(map(tuple, mapi.get("/monitors/series", name=mon, metric="labeled_rows")["series"][0]["points"]))
    assert (points[before["ts_ms"]], points[evaluation["ts_ms"]]) == (0.0, 200.0)


def test_classification_metrics_equal_scikit_learns(mapi):
    from sklearn import metrics as skm

    dep = name("dep")
    mon = monitor(mapi, dep, kinds=["performance"])
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(y * 0.35 + rng.random(400) * 0.65, 0.001, 0.999)
    pred = (p > 0.5).astype(int)
    items = predictions(dep, rows(400))
    for item, pi, yi in zip(items, p, pred):
        item["outputs"] = {"prediction": int(yi), "probabilities": [float(1 - pi), float(pi)]}
    mapi.post("/predictions/log", {"predictions": items})
    mapi.post("/predictions/labels", {"labels": [{"request_id": it["request_id"], "label": int(t)}
                                                 for it, t in zip(items, y)]})
    v = latest(mapi.post("/monitors/evaluate", {"name": mon})["evaluation"])
    assert v[("accuracy", "")] == pytest.approx(skm.accuracy_score(y, pred))
    assert v[("precision", "")] == pytest.approx(skm.precision_score(y, pred))
    assert v[("recall", "")] == pytest.approx(skm.recall_score(y, pred))
    assert v[("f1", "")] == pytest.approx(skm.f1_score(y, pred))
    assert v[("log_loss", "")] == pytest.approx(skm.log_loss(y, p), rel=1e-6)
    assert v[("roc_auc", "")] == pytest.approx(skm.roc_auc_score(y, p), abs=0.005)  # 1000 score bins


def test_regression_metrics_equal_scikit_learns(mapi):
    from sklearn import metrics as skm

    dep = name("dep")
    mon = monitor(mapi, dep, kinds=["performance"], task="regression")
    rng = np.random.default_rng(1)
    y = rng.normal(10, 3, 300)
    yhat = y + rng.normal(0, 1, 300)
    items = predictions(dep, rows(300))
    for item, v in zip(items, yhat):
        item["outputs"] = [float(v)]
    mapi.post("/predictions/log", {"predictions": items})
    mapi.post("/predictions/labels", {"labels": [{"request_id": it["request_id"], "label": float(t)}
                                                 for it, t in zip(items, y)]})
    v = latest(mapi.post("/monitors/evaluate", {"name": mon})["evaluation"])
    assert v[("mae", "")] == pytest.approx(skm.mean_absolute_error(y, yhat))
    assert v[("rmse", "")] == pytest.approx(math.sqrt(skm.mean_squared_error(y, yhat)))
    assert v[("r2", "")] == pytest.approx(skm.r2_score(y, yhat))


def test_health_reports_traffic_errors_and_latency_percentiles(mapi):
    dep = name("dep")
    mon = monitor(mapi, dep, kinds=["health"])
    items = predictions(dep, rows(100))
    for i, it in enumerate(items):
        it["latency_ms"] = float(i + 1)
        if i < 5:
            it["error"] = "boom"
    mapi.post("/predictions/log", {"predictions": items})
    v = latest(mapi.post("/monitors/evaluate", {"name": mon})["evaluation"])
    assert v[("rows", "")] == 100 and v[("error_rate", "")] == pytest.approx(0.05)
    assert v[("latency_p50_seconds", "")] == pytest.approx(0.0505, abs=0.001)
    assert v[("latency_p99_seconds", "")] == pytest.approx(0.099, abs=0.0015)
    assert v[("traffic_per_second", "")] == pytest.approx(100 / 60)


def test_rows_that_arrive_late_for_a_summarised_bucket_are_counted_at_the_next_evaluation(mapi):
    dep = name("dep")
    mon = monitor(mapi, dep, kinds=["health"])
    ts = int(time.time() * 1000) - 5000
    mapi.post("/predictions/log", {"predictions": predictions(dep, rows(40), ts_ms=ts, prefix="a")})
    at = ts + 10_000
    assert latest(mapi.post("/monitors/evaluate", {"name": mon, "at_ms": at})["evaluation"])[("rows", "")] == 40
    mapi.post("/predictions/log", {"predictions": predictions(dep, rows(25), ts_ms=ts, prefix="b")})
    assert latest(mapi.post("/monitors/evaluate", {"name": mon, "at_ms": at})["evaluation"])[("rows", "")] == 65


def test_shadow_predictions_are_kept_but_not_monitored(mapi):
    dep = name("dep")
    mon = monitor(mapi, dep, kinds=["health"])
    items = predictions(dep, rows(20))
    for it in items[:8]:
        it["shadow"] = True
    mapi.post("/predictions/log", {"predictions": items})
    assert latest(mapi.post("/monitors/evaluate", {"name": mon})["evaluation"])[("rows", "")] == 12
    assert len(mapi.get("/predictions/search", deployment=dep)["predictions"]) == 20


def test_the_scheduler_evaluates_a_tumbling_monitor_once_per_window_on_its_own(mapi):
    dep = name("dep")
    mon = monitor(mapi, dep, scheduled=True, kinds=["health"], window_seconds=2)
    deadline = time.time() + 8
    while time.time() < deadline:
        mapi.post("/predictions/log", {"predictions": predictions(dep, rows(10))})
        time.sleep(0.5)
    points = mapi.get("/monitors/series", name=mon, metric="rows")["series"][0]["points"]
    stamps = [p[0] for p in points]
    assert len(stamps) >= 2 and all(b - a == 2000 for a, b in zip(stamps, stamps[1:]))
    assert all(s % 2000 == 0 for s in stamps) and all(p[1] > 0 for p in points)
    assert mapi.get("/monitors/get", name=mon)["monitor"]["last_status"] == "ok"


def test_a_sliding_monitor_overlaps_its_windows(mapi):
    dep = name("dep")
    mon = monitor(mapi, dep, scheduled=True, kinds=["health"], mode="sliding", window_seconds=4, every_seconds=1)
    deadline = time.time() + 5
    while time.time() < deadline:
        mapi.post("/predictions/log", {"predictions": predictions(dep, rows(10))})
        time.sleep(0.25)
    points = mapi.get("/monitors/series", name=mon, metric="rows")["series"][0]["points"]
    assert all(b[0] - a[0] == 1000 for a, b in zip(points, points[1:]))
    assert max(p[1] for p in points) >= 100  # four seconds of ~40 rows a second in one window


def test_metrics_page_exposes_each_monitors_latest_series_in_prometheus_format(mserver, mapi):
    from prometheus_client.parser import text_string_to_metric_families

    dep = name("dep")
    mon = monitor(mapi, dep, reference(mapi))
    mapi.post("/predictions/log", {"predictions": predictions(dep, rows(300, shift=2.0))})
    mapi.post("/monitors/evaluate", {"name": mon})
    import requests

    text = requests.get(mserver.url + "/metrics", timeout=30).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.labels.get("monitor"), s.labels.get("feature")): s.value
               for s in families["modelyard_monitor_drift_detected"].samples}
    assert samples[(mon, "x")] == 1.0 and samples[(mon, "z")] == 0.0
    rows_sample = [s for s in families["modelyard_monitor_rows"].samples if s.labels["monitor"] == mon][0]
    assert rows_sample.value == 300 and rows_sample.labels["deployment"] == dep
    assert "modelyard_monitor_last_evaluation_timestamp_seconds" in families


def test_references_are_uploaded_listed_read_and_deleted(mapi):
    ref = mapi.post("/references/create", {"name": name("r"), "model_name": "m", "model_version": "3",
                                           "records": rows(50)})["reference"]
    assert ref["rows"] == 50 and ref["model_version"] == "3"
    got = mapi.get("/references/get", reference_id=ref["reference_id"], include_profile="true")["reference"]
    assert set(got["profile"]["columns"]) == {"x", "z", "c"}
    assert ref["reference_id"] in [r["reference_id"] for r in mapi.get("/references/list", model_name="m")["references"]]
    mapi.delete("/references/delete", {"reference_id": ref["reference_id"]})
    assert mapi.raw("GET", "/references/get", params={"reference_id": ref["reference_id"]}).status_code == 404
    bad = mapi.raw("POST", "/references/create", json={"name": "r", "records": rows(5), "profile": {}})
    assert bad.status_code == 400


def test_a_profile_computed_by_the_client_can_be_uploaded(mapi):
    import pandas as pd

    from modelyard.monitoring.profile import profile_frame

    prof = profile_frame(pd.DataFrame(rows(3000))).to_dict()
    import orjson

    body = orjson.loads(orjson.dumps({"name": name("p"), "profile": prof}, option=orjson.OPT_SERIALIZE_NUMPY))
    ref = mapi.post("/references/create", body)["reference"]
    assert ref["rows"] == 3000


def test_a_reference_is_computed_from_the_training_dataset_a_registered_versions_run_logged(mserver, mapi):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(mserver.url)
    client = MlflowClient(mserver.url)
    model = name("model")
    df = pd.DataFrame(rows(1500, seed=8))
    exp = mlflow.set_experiment(name("exp"))
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        buf = io.BytesIO()
        df.to_parquet(buf)
        path = f"/tmp/{name('train')}.parquet"
        with open(path, "wb") as f:
            f.write(buf.getvalue())
        mlflow.log_artifact(path, "data")
        # the client resolves http(s) dataset sources, not mlflow-artifacts:/ ones: give the artifact's URL
        artifact = mlflow.get_artifact_uri(f"data/{path.rsplit('/', 1)[1]}").split(":", 1)[1].lstrip("/")
        uri = f"{mserver.url}/api/2.0/mlflow-artifacts/artifacts/{artifact}"
        mlflow.log_input(mlflow.data.from_pandas(df, source=uri, name="train"), context="training")
    client.create_registered_model(model)
    client.create_model_version(model, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    # a monitor with no reference finds the version the traffic came from, and profiles its data
    dep = name("dep")
    mon = monitor(mapi, dep)
    mapi.post("/predictions/log", {"predictions": predictions(dep, rows(500, shift=1.5), model_name=model)})
    ev = mapi.post("/monitors/evaluate", {"name": mon})["evaluation"]
    assert ev["report"]["reference"]["model_name"] == model and ev["report"]["reference"]["rows"] == 1500
    assert latest(ev)[("drift_detected", "x")] == 1.0 and latest(ev)[("drift_detected", "z")] == 0.0
    refs = mapi.get("/references/list", model_name=model)["references"]
    assert len(refs) == 1 and refs[0]["model_version"] == "1" and "train" in refs[0]["source"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_version_profiled_by_several_writers_at_once_keeps_one_reference(backend, tmp_path, request):
    """The scheduler's sweep and a monitor's first window may profile a new version together."""
    import asyncio

    url = request.getfixturevalue("pg_database")() if backend == "postgres" else f"sqlite:///{tmp_path}/db.sqlite"

    async def race(stores):
        await stores.registry.create_model("default", "m", [], None)
        await stores.registry.create_version("default", "m", "s3://bucket/model", None, [], None, None, None)
        made = await asyncio.gather(*[
            stores.monitors.create_reference("default", "m/1", "m", "1", f"writer {i}", 10, b"{}", once=True)
            for i in range(8)])
        again = await stores.monitors.create_reference("default", "m/1", "m", "1", "by hand", 10, b"{}")
        return made, again, await stores.monitors.list_references("default", "m")

    made, again, refs = seed(url, race)
    assert len({r["reference_id"] for r in made}) == 1
    assert len(refs) == 2 and {r["reference_id"] for r in refs} == {made[0]["reference_id"], again["reference_id"]}


def test_a_version_registered_from_a_run_with_training_data_gets_its_reference_profile_by_itself(mserver, mapi):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(mserver.url)
    model = name("auto")
    df = pd.DataFrame(rows(1200, seed=11))
    exp = mlflow.set_experiment(name("exp"))
    path = f"/tmp/{name('train')}.csv"
    df.to_csv(path, index=False)
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        mlflow.log_artifact(path, "data")
        artifact = mlflow.get_artifact_uri(f"data/{path.rsplit('/', 1)[1]}").split(":", 1)[1].lstrip("/")
        source = f"{mserver.url}/api/2.0/mlflow-artifacts/artifacts/{artifact}"
        mlflow.log_input(mlflow.data.from_pandas(df, source=source, name="train"), context="training")
    client = MlflowClient(mserver.url)
    client.create_registered_model(model)
    client.create_model_version(model, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    deadline = time.time() + 30
    refs = []
    while time.time() < deadline and not refs:
        refs = mapi.get("/references/list", model_name=model)["references"]
        time.sleep(0.3)
    assert [(r["model_version"], r["rows"]) for r in refs] == [("1", 1200)]
    profile = mapi.get("/references/get", reference_id=refs[0]["reference_id"], include_profile="true")
    assert set(profile["reference"]["profile"]["columns"]) == {"x", "z", "c"}


def test_from_version_without_a_readable_dataset_is_a_400(mserver, mapi):
    from mlflow import MlflowClient

    client = MlflowClient(mserver.url)
    model = name("bare")
    client.create_registered_model(model)
    client.create_model_version(model, "s3://bucket/elsewhere/model")
    r = mapi.raw("POST", "/references/create", json={"model_name": model, "model_version": "1", "from_version": True})
    assert r.status_code == 400 and "training dataset" in r.json()["message"]


def test_each_window_is_evaluated_once_by_one_of_several_server_processes(tmp_path, pg_database):
    """Two servers share one PostgreSQL database; both run the scheduler. A rule that notifies on
    every evaluation shows how many evaluations happened: one per window."""
    url = pg_database()
    first = monitoring_server(tmp_path, "--database-url", url)
    second = monitoring_server(tmp_path, "--database-url", url)
    receiver = Receiver()
    try:
        api = Api(first.url)
        dep = name("dep")
        api.post("/notification-channels/create", {"name": "hook", "type": "webhook", "config": {"url": receiver.url}})
        mon = monitor(api, dep, scheduled=True, kinds=["health"], window_seconds=1)
        api.post("/alert-rules/create", {"name": "every", "expr": f'rows{{monitor="{mon}"}} >= 0', "channels": ["hook"],
                                         "repeat_interval_seconds": 0})
        deadline = time.time() + 6
        while time.time() < deadline:
            Api(second.url).post("/predictions/log", {"predictions": predictions(dep, rows(5))})
            time.sleep(0.3)
        time.sleep(2)
        points = api.get("/monitors/series", name=mon, metric="rows")["series"][0]["points"]
        stamps = [p[0] for p in points]
        assert len(stamps) >= 4 and all(b - a == 1000 for a, b in zip(stamps, stamps[1:]))
        deliveries = api.get("/notifications/deliveries", channel="hook", max_results=1000)["deliveries"]
        assert len(deliveries) == len(stamps)
    finally:
        receiver.close()
        first.stop()
        second.stop()
