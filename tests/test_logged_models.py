"""Logged models (MLflow 3) through the real client."""
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException

from conftest import unique


@pytest.fixture()
def exp_id(client):
    return client.create_experiment(unique("lm"))


def test_create_finalize_tag_and_get_a_logged_model(client, exp_id):
    run = client.create_run(exp_id)
    model = client.create_logged_model(exp_id, name="clf", source_run_id=run.info.run_id,
                                       params={"alpha": "0.5"}, tags={"k": "v"}, model_type="sklearn")
    assert model.status == LoggedModelStatus.PENDING
    assert model.artifact_location == f"mlflow-artifacts:/{exp_id}/models/{model.model_id}/artifacts"
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.set_logged_model_tags(model.model_id, {"k2": "v2"})
    client.delete_logged_model_tag(model.model_id, "k")
    got = client.get_logged_model(model.model_id)
    assert got.status == LoggedModelStatus.READY
    assert got.tags == {"k2": "v2"} and got.params == {"alpha": "0.5"}
    assert got.source_run_id == run.info.run_id and got.model_type == "sklearn"


def test_a_deleted_logged_model_is_not_found(client, exp_id):
    model = client.create_logged_model(exp_id, name="gone")
    client.delete_logged_model(model.model_id)
    with pytest.raises(MlflowException) as err:
        client.get_logged_model(model.model_id)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_metrics_logged_with_a_model_id_appear_on_the_model(client, exp_id):
    from mlflow.entities import Metric

    run = client.create_run(exp_id)
    model = client.create_logged_model(exp_id, name="m", source_run_id=run.info.run_id)
    client.log_batch(run.info.run_id, metrics=[Metric("acc", 0.9, 1, 0, model_id=model.model_id)])
    got = client.get_logged_model(model.model_id)
    assert [(m.key, m.value, m.run_id) for m in got.metrics] == [("acc", 0.9, run.info.run_id)]


def test_search_logged_models_by_name_and_metric_with_order(client, exp_id):
    from mlflow.entities import Metric

    run = client.create_run(exp_id)
    made = []
    for i in range(3):
        m = client.create_logged_model(exp_id, name=f"model-{i}", source_run_id=run.info.run_id)
        client.log_batch(run.info.run_id, metrics=[Metric("acc", i / 10, 1, 0, model_id=m.model_id)])
        made.append(m.model_id)
    found = client.search_logged_models([exp_id], filter_string="name = 'model-1'")
    assert [m.model_id for m in found] == [made[1]]
    found = client.search_logged_models([exp_id], filter_string="metrics.acc >= 0.1",
                                        order_by=[{"field_name": "metrics.acc", "ascending": False}])
    assert [m.model_id for m in found] == [made[2], made[1]]
    page = client.search_logged_models([exp_id], max_results=2)
    assert len(page) == 2 and page.token


def test_finalize_with_an_unknown_status_is_refused(api, client, exp_id):
    model = client.create_logged_model(exp_id, name="x")
    r = api.call("PATCH", f"/logged-models/{model.model_id}", json={"status": "SHINY"})
    assert r.status_code == 400
    assert client.get_logged_model(model.model_id).status == LoggedModelStatus.PENDING
