"""Runs through the real mlflow client (SQLite and PostgreSQL), and bad input through raw REST."""
import math
import time

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from conftest import unique


@pytest.fixture()
def exp_id(client):
    return client.create_experiment(unique("runs"))


def test_a_run_keeps_params_latest_metrics_and_tags(client, exp_id):
    run = client.create_run(exp_id, run_name="first", tags={"team": "a"})
    rid = run.info.run_id
    client.log_param(rid, "lr", "0.1")
    client.log_metric(rid, "loss", 3.0, step=0)
    client.log_metric(rid, "loss", 1.0, step=2)
    client.log_metric(rid, "loss", 2.0, step=1)
    client.set_tag(rid, "stage", "dev")
    got = client.get_run(rid)
    assert got.info.run_name == "first"
    assert got.data.params == {"lr": "0.1"}
    assert got.data.metrics == {"loss": 1.0}  # the value at the highest step
    assert got.data.tags["team"] == "a" and got.data.tags["stage"] == "dev"
    assert got.info.artifact_uri == f"mlflow-artifacts:/{exp_id}/{rid}/artifacts"


def test_a_run_is_created_only_in_an_active_experiment_that_exists(client, exp_id):
    run = client.create_run(exp_id, tags={"a": "1"}, start_time=1234)
    assert run.info.artifact_uri == f"mlflow-artifacts:/{exp_id}/{run.info.run_id}/artifacts"
    assert run.info.start_time == 1234 and run.info.status == "RUNNING" and run.data.tags["a"] == "1"
    with pytest.raises(MlflowException) as err:
        client.create_run("987654321")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST" and "No Experiment with id=987654321" in err.value.message
    client.delete_experiment(exp_id)
    with pytest.raises(MlflowException, match=f"The experiment {exp_id} must be in the 'active' state"):
        client.create_run(exp_id)
    client.restore_experiment(exp_id)
    assert [r.info.run_id for r in client.search_runs([exp_id])] == [run.info.run_id]


def test_relogging_a_param_with_the_same_value_is_accepted_and_a_different_value_is_refused(client, exp_id):
    rid = client.create_run(exp_id).info.run_id
    client.log_param(rid, "depth", "3")
    client.log_param(rid, "depth", "3")
    with pytest.raises(MlflowException) as err:
        client.log_param(rid, "depth", "5")
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "Changing param values is not allowed" in err.value.message
    assert client.get_run(rid).data.params == {"depth": "3"}


def test_nan_and_infinities_round_trip(client, exp_id):
    rid = client.create_run(exp_id).info.run_id
    client.log_batch(rid, metrics=[Metric("nan", math.nan, 0, 0), Metric("inf", math.inf, 0, 0),
                                   Metric("ninf", -math.inf, 0, 0)])
    m = client.get_run(rid).data.metrics
    assert math.isnan(m["nan"]) and m["inf"] >= 1.797e308 and m["ninf"] <= -1.797e308


def test_a_retried_identical_metric_is_idempotent(client, exp_id):
    rid = client.create_run(exp_id).info.run_id
    for _ in range(3):
        client.log_batch(rid, metrics=[Metric("m", 1.5, 1000, 7)])
    assert [(h.value, h.step) for h in client.get_metric_history(rid, "m")] == [(1.5, 7)]


def test_update_delete_and_restore_a_run(client, exp_id):
    rid = client.create_run(exp_id).info.run_id
    client.set_terminated(rid, "FAILED", end_time=12345)
    info = client.get_run(rid).info
    assert info.status == "FAILED" and info.end_time == 12345
    client.update_run(rid, name="renamed")
    assert client.get_run(rid).info.run_name == "renamed"
    assert client.get_run(rid).data.tags["mlflow.runName"] == "renamed"
    client.delete_run(rid)
    assert client.get_run(rid).info.lifecycle_stage == "deleted"
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        client.log_metric(rid, "x", 1.0)
    assert "x" not in client.get_run(rid).data.metrics
    client.restore_run(rid)
    client.log_metric(rid, "x", 1.0)
    assert client.get_run(rid).data.metrics == {"x": 1.0}


def test_delete_tag_removes_it_and_a_missing_tag_is_an_error(client, exp_id):
    rid = client.create_run(exp_id).info.run_id
    client.set_tag(rid, "k", "v")
    client.delete_tag(rid, "k")
    assert "k" not in client.get_run(rid).data.tags
    with pytest.raises(MlflowException, match="No tag with name: k"):
        client.delete_tag(rid, "k")


def test_log_inputs_records_datasets_with_their_context(tracking, client, exp_id):
    import pandas as pd

    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.1, 0.2, 0.3]})
    ds = tracking.data.from_pandas(df, name="train-set")
    with tracking.start_run(experiment_id=exp_id) as run:
        tracking.log_input(ds, context="training")
    got = client.get_run(run.info.run_id)
    [inp] = got.inputs.dataset_inputs
    assert inp.dataset.name == "train-set" and inp.dataset.digest == ds.digest
    assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "training"}
    found = client.search_runs([exp_id], "datasets.name = 'train-set' AND datasets.context = 'training'")
    assert [r.info.run_id for r in found] == [run.info.run_id]


def test_a_run_shows_its_datasets_and_model_inputs_and_outputs_when_read_and_when_searched(tracking, client, exp_id):
    import pandas as pd
    from mlflow.entities import LoggedModelInput, LoggedModelOutput

    ds = tracking.data.from_pandas(pd.DataFrame({"a": [1, 2]}), name="eval-set")
    made = client.create_logged_model(exp_id, name="made")
    used = client.create_logged_model(exp_id, name="used")
    with tracking.start_run(experiment_id=exp_id) as run:
        tracking.log_input(ds, context="eval")
    rid = run.info.run_id
    client.log_inputs(rid, models=[LoggedModelInput(used.model_id)])
    client.log_outputs(rid, [LoggedModelOutput(made.model_id, step=3)])
    client.log_param(rid, "p", "1")
    bare = client.create_run(exp_id).info.run_id
    for got in (client.get_run(rid), *[r for r in client.search_runs([exp_id]) if r.info.run_id == rid]):
        [inp] = got.inputs.dataset_inputs
        assert inp.dataset.name == "eval-set" and {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "eval"}
        assert [m.model_id for m in got.inputs.model_inputs] == [used.model_id]
        assert [(m.model_id, m.step) for m in got.outputs.model_outputs] == [(made.model_id, 3)]
        assert got.data.params == {"p": "1"}
    other = client.get_run(bare)
    assert other.inputs.dataset_inputs == [] and other.inputs.model_inputs == [] and other.data.params == {}


def test_get_run_of_an_unknown_id_is_resource_does_not_exist(client):
    with pytest.raises(MlflowException) as err:
        client.get_run("0" * 32)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_create_run_in_a_missing_experiment_is_not_found(api):
    r = api.post("/runs/create", {"experiment_id": "987654321", "start_time": 1})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


class TestBadInput:
    """Each refusal is a 400 in MLflow's shape and stores nothing."""

    @pytest.fixture()
    def run_id(self, client, exp_id):
        return client.create_run(exp_id).info.run_id

    def _stored(self, client, run_id):
        data = client.get_run(run_id).data
        return data.metrics, data.params, data.tags

    def test_log_batch_rejects_1001_metrics_and_stores_nothing(self, api, client, run_id):
        before = self._stored(client, run_id)
        metrics = [{"key": f"m{i}", "value": 1.0, "timestamp": 1, "step": 0} for i in range(1001)]
        r = api.post("/runs/log-batch", {"run_id": run_id, "metrics": metrics})
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "at most 1000 metrics" in r.json()["message"]
        assert self._stored(client, run_id) == before

    def test_log_batch_rejects_101_params_and_101_tags(self, api, client, run_id):
        before = self._stored(client, run_id)
        params = [{"key": f"p{i}", "value": "1"} for i in range(101)]
        assert api.post("/runs/log-batch", {"run_id": run_id, "params": params}).status_code == 400
        tags = [{"key": f"t{i}", "value": "1"} for i in range(101)]
        assert api.post("/runs/log-batch", {"run_id": run_id, "tags": tags}).status_code == 400
        assert self._stored(client, run_id) == before

    def test_a_batch_with_one_bad_metric_key_stores_none_of_it(self, api, client, run_id):
        before = self._stored(client, run_id)
        metrics = [{"key": "good", "value": 1.0, "timestamp": 1}, {"key": "../bad", "value": 1.0, "timestamp": 1}]
        r = api.post("/runs/log-batch", {"run_id": run_id, "metrics": metrics, "params": [{"key": "p", "value": "v"}]})
        assert r.status_code == 400 and "Invalid value" in r.json()["message"]
        assert self._stored(client, run_id) == before

    def test_a_batch_whose_param_clashes_stores_none_of_its_metrics(self, api, client, run_id):
        client.log_param(run_id, "p", "1")
        r = api.post("/runs/log-batch", {"run_id": run_id, "params": [{"key": "p", "value": "2"}],
                                         "metrics": [{"key": "m", "value": 1.0, "timestamp": 1}]})
        assert r.status_code == 400
        assert client.get_run(run_id).data.metrics == {}

    def test_a_body_over_one_megabyte_is_refused(self, api, client, run_id):
        before = self._stored(client, run_id)
        tags = [{"key": f"t{i}", "value": "x" * 7999} for i in range(100)]
        tags += [{"key": "more", "value": "y" * 7999}] * 0
        params = [{"key": f"p{i}", "value": "z" * 6000} for i in range(100)]
        r = api.post("/runs/log-batch", {"run_id": run_id, "tags": tags, "params": params})
        assert r.status_code == 400 and "1000000 bytes" in r.json()["message"]
        assert self._stored(client, run_id) == before

    @pytest.mark.parametrize("body, needle", [
        ({"key": "m", "value": "high", "timestamp": 1}, "Invalid value \"high\" for parameter 'value' supplied"),
        ({"key": "m", "value": 1.0, "timestamp": "soon"}, "for parameter 'timestamp' supplied"),
        ({"key": "m", "value": 1.0}, "Missing value for required parameter 'timestamp'"),
        ({"value": 1.0, "timestamp": 1}, "Missing value for required parameter 'key'"),
        ({"key": "bad!key", "value": 1.0, "timestamp": 1}, "Names may only contain"),
        ({"key": "/abs", "value": 1.0, "timestamp": 1}, "Invalid value"),
        ({"key": "m", "value": True, "timestamp": 1}, "for parameter 'value' supplied"),
    ])
    def test_log_metric_with_wrong_types_or_keys_is_refused(self, api, client, run_id, body, needle):
        r = api.post("/runs/log-metric", {"run_id": run_id, **body})
        assert r.status_code == 400, r.text
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert needle in r.json()["message"]
        assert client.get_run(run_id).data.metrics == {}

    def test_malformed_json_is_a_400_and_not_a_500(self, api, run_id):
        r = api.call("POST", "/runs/log-metric", data=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error_code"] == "BAD_REQUEST"
        r = api.call("POST", "/runs/log-metric", data=b"[1, 2]", headers={"Content-Type": "application/json"})
        assert r.status_code == 400

    def test_a_too_long_param_value_is_refused(self, api, client, run_id):
        r = api.post("/runs/log-parameter", {"run_id": run_id, "key": "p", "value": "v" * 6001})
        assert r.status_code == 400
        assert client.get_run(run_id).data.params == {}

    def test_an_invalid_run_id_is_refused(self, api):
        r = api.get("/runs/get", {"run_id": "../../etc/passwd"})
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"

    def test_an_unknown_endpoint_is_endpoint_not_found(self, api):
        r = api.post("/runs/no-such-thing", {})
        assert r.status_code == 404


def test_concurrent_writers_on_one_run_never_see_a_locked_database(client, exp_id, server):
    import concurrent.futures

    import requests

    rid = client.create_run(exp_id).info.run_id
    ts = int(time.time() * 1000)

    def write(i):
        r = requests.post(server.url + "/api/2.0/mlflow/runs/log-metric",
                          json={"run_id": rid, "key": f"k{i % 5}", "value": float(i), "timestamp": ts, "step": i})
        return r.status_code, r.text[:300]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(write, range(400)))
    assert [code for code, _ in answers] == [200] * 400, {a for a in answers if a[0] != 200}
    total = sum(len(client.get_metric_history(rid, f"k{k}")) for k in range(5))
    assert total == 400
