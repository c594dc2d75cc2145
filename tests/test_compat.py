"""One test per compatibility quirk in modelyard/server/compat.py, named after the client
behaviour it serves."""
import json

import requests
from packaging.version import Version

from conftest import unique


def test_the_client_keeps_spans_off_otlp_because_version_is_below_3_4(server):
    # mlflow.tracing.utils.otlp: OTLP export only for servers reporting >= 3.4.
    assert Version(requests.get(server.url + "/version").text) < Version("3.4")


def test_an_older_client_s_double_encoded_json_body_is_understood(server, api):
    body = json.dumps(json.dumps({"name": unique("double")}))
    r = requests.post(server.url + "/api/2.0/mlflow/experiments/create", data=body,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["experiment_id"]


def test_run_uuid_is_accepted_where_the_client_sends_it_instead_of_run_id(client, api):
    exp = client.create_experiment(unique("uuid"))
    rid = client.create_run(exp).info.run_id
    r = api.post("/runs/log-metric", {"run_uuid": rid, "key": "m", "value": 1.0, "timestamp": 1})
    assert r.status_code == 200
    assert api.get("/runs/get", {"run_uuid": rid}).json()["run"]["data"]["metrics"][0]["value"] == 1.0


def test_a_history_page_larger_than_25000_is_capped_as_log_model_expects(client, api):
    exp = client.create_experiment(unique("cap"))
    rid = client.create_run(exp).info.run_id
    client.log_metric(rid, "m", 1.0)
    r = api.get("/metrics/get-history", {"run_id": rid, "metric_key": "m", "max_results": 100000})
    assert r.status_code == 200 and len(r.json()["metrics"]) == 1


def test_finalize_logged_model_accepts_the_status_enum_by_number(client, api):
    exp = client.create_experiment(unique("status"))
    model = client.create_logged_model(exp, name="m")
    r = api.call("PATCH", f"/logged-models/{model.model_id}", json={"model_id": model.model_id, "status": 2})
    assert r.status_code == 200 and r.json()["model"]["info"]["status"] == "LOGGED_MODEL_READY"
