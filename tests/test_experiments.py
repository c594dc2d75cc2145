"""Experiments through the real mlflow client, on SQLite and PostgreSQL."""
import pytest
from mlflow.exceptions import MlflowException

from conftest import unique


def test_default_experiment_zero_exists(client):
    exp = client.get_experiment("0")
    assert exp.name == "Default"
    assert exp.lifecycle_stage == "active"


def test_set_experiment_creates_it_once_and_then_finds_it_by_name(tracking, client):
    name = unique("exp")
    first = tracking.set_experiment(name)
    second = tracking.set_experiment(name)
    assert first.experiment_id == second.experiment_id
    assert client.get_experiment_by_name(name).experiment_id == first.experiment_id


def test_get_experiment_by_name_returns_none_for_a_missing_name(client):
    assert client.get_experiment_by_name(unique("missing")) is None


def test_create_experiment_twice_is_resource_already_exists(client):
    name = unique("dup")
    client.create_experiment(name)
    with pytest.raises(MlflowException) as err:
        client.create_experiment(name)
    assert err.value.error_code == "RESOURCE_ALREADY_EXISTS"


def test_experiment_tags_rename_delete_and_restore_round_trip(client):
    exp_id = client.create_experiment(unique("life"), tags={"team": "a"})
    client.set_experiment_tag(exp_id, "stage", "dev")
    client.delete_experiment_tag(exp_id, "team")
    new_name = unique("renamed")
    client.rename_experiment(exp_id, new_name)
    exp = client.get_experiment(exp_id)
    assert exp.name == new_name and exp.tags == {"stage": "dev"}
    client.delete_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "deleted"
    client.restore_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "active"


def test_search_experiments_filters_orders_and_pages(client):
    prefix = unique("srch")
    ids = [client.create_experiment(f"{prefix}-{i}", tags={"i": str(i)}) for i in range(5)]
    found = client.search_experiments(filter_string=f"name LIKE '{prefix}-%'", order_by=["name DESC"])
    assert [e.experiment_id for e in found] == ids[::-1]
    page = client.search_experiments(filter_string=f"name LIKE '{prefix}-%' AND tags.i = '3'")
    assert [e.experiment_id for e in page] == [ids[3]]
    first = client.search_experiments(max_results=2, filter_string=f"name LIKE '{prefix}-%'")
    assert len(first) == 2 and first.token
    rest = client.search_experiments(max_results=10, filter_string=f"name LIKE '{prefix}-%'", page_token=first.token)
    assert len(rest) == 3 and not rest.token


def test_search_experiments_rejects_a_bad_filter_with_invalid_parameter_value(api):
    r = api.post("/experiments/search", {"filter": "name = 'a' OR name = 'b'"})
    assert r.status_code == 400
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_create_experiment_with_a_non_string_name_is_rejected_and_stores_nothing(api):
    r = api.post("/experiments/create", {"name": 5})
    assert r.status_code == 400
    assert "Invalid value 5 for parameter 'name' supplied" in r.json()["message"]
    assert api.get("/experiments/get-by-name", {"experiment_name": "5"}).status_code == 404
