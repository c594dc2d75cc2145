"""Metric history: paging at 25,000, bulk and downsampled interval reads."""
import time

import pytest
from mlflow.entities import Metric

from conftest import unique


@pytest.fixture()
def run_with_history(client):
    exp = client.create_experiment(unique("hist"))
    rid = client.create_run(exp).info.run_id
    ts = int(time.time() * 1000)
    for start in range(0, 30_000, 1000):
        client.log_batch(rid, metrics=[Metric("loss", 1 / (s + 1), ts, s) for s in range(start, start + 1000)])
    return rid


def test_get_metric_history_pages_through_all_points_in_step_order(client, run_with_history):
    history = client.get_metric_history(run_with_history, "loss")
    assert [m.step for m in history] == list(range(30_000))


def test_get_history_returns_a_next_page_token_past_25000(api, run_with_history):
    r = api.get("/metrics/get-history", {"run_id": run_with_history, "metric_key": "loss", "max_results": 25000})
    body = r.json()
    assert len(body["metrics"]) == 25_000 and body["next_page_token"]
    r2 = api.get("/metrics/get-history", {"run_id": run_with_history, "metric_key": "loss",
                                          "max_results": 25000, "page_token": body["next_page_token"]})
    assert len(r2.json()["metrics"]) == 5_000 and "next_page_token" not in r2.json()
    assert api.get("/metrics/get-history", {"run_id": run_with_history, "metric_key": "loss",
                                            "page_token": "%%%"}).status_code == 400


def test_bulk_interval_downsamples_keeping_the_first_and_last_step(server, run_with_history):
    import requests

    r = requests.get(server.url + "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                     params={"run_ids": [run_with_history], "metric_key": "loss", "max_results": 100})
    steps = [m["step"] for m in r.json()["metrics"]]
    assert len(steps) == 100 and steps[0] == 0 and steps[-1] == 29_999
    assert all(m["run_id"] == run_with_history for m in r.json()["metrics"])
    r = requests.get(server.url + "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                     params={"run_ids": [run_with_history], "metric_key": "loss", "start_step": 10, "end_step": 19})
    assert [m["step"] for m in r.json()["metrics"]] == list(range(10, 20))


def test_bulk_interval_refuses_more_than_100_runs_and_a_half_open_range(api, run_with_history):
    r = api.get("/metrics/get-history-bulk-interval", {"run_ids": [run_with_history] * 101, "metric_key": "loss"})
    assert r.status_code == 400
    r = api.get("/metrics/get-history-bulk-interval", {"run_ids": [run_with_history], "metric_key": "loss",
                                                       "start_step": 1})
    assert r.status_code == 400


def test_history_of_an_unknown_run_is_not_found(api):
    r = api.get("/metrics/get-history", {"run_id": "f" * 32, "metric_key": "loss"})
    assert r.status_code == 404


def test_pages_end_on_infinite_values_without_breaking_the_token(client, api):
    import math

    from mlflow.entities import Metric

    exp = client.create_experiment(unique("inf"))
    rid = client.create_run(exp).info.run_id
    client.log_batch(rid, metrics=[Metric("m", math.inf if s % 2 else -math.inf, 1, s) for s in range(6)])
    token, seen = None, []
    while True:
        params = {"run_id": rid, "metric_key": "m", "max_results": 2}
        if token:
            params["page_token"] = token
        body = api.get("/metrics/get-history", params).json()
        seen += [m["step"] for m in body["metrics"]]
        token = body.get("next_page_token")
        if not token:
            break
    assert seen == list(range(6))
