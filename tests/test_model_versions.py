"""Model versions through the real mlflow client and raw REST, on SQLite and PostgreSQL."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from mlflow.exceptions import MlflowException

from conftest import unique


def make_model(client, versions=0):
    name = unique("mv")
    client.create_registered_model(name)
    for i in range(versions):
        client.create_model_version(name, f"s3://bucket/{name}/{i + 1}")
    return name


def error_of(response):
    return response.status_code, response.json()["error_code"]


def versions_of(api, name):
    r = api.get("/model-versions/search", {"filter": f"name = '{name}'"})
    return sorted(int(v["version"]) for v in r.json()["model_versions"])


def new_run(client):
    exp_id = client.create_experiment(unique("exp"))
    return client.create_run(exp_id)


# -- create ---------------------------------------------------------------------------------------
def test_create_model_version_answers_in_mlflow_wire_shape(client, api):
    name = make_model(client)
    r = api.post("/model-versions/create", {
        "name": name, "source": "s3://bucket/model", "tags": [{"key": "k", "value": "v"}],
        "description": "first", "run_link": "http://ci/1"})
    assert r.status_code == 200
    mv = r.json()["model_version"]
    assert mv["version"] == "1"  # a string on the wire
    assert mv["current_stage"] == "None" and mv["status"] == "READY"
    assert (mv["name"], mv["source"], mv["description"], mv["run_link"]) == (name, "s3://bucket/model", "first",
                                                                             "http://ci/1")
    assert mv["tags"] == [{"key": "k", "value": "v"}]
    assert isinstance(mv["creation_timestamp"], int) and "aliases" not in mv and "run_id" not in mv
    assert api.get("/model-versions/get", {"name": name, "version": "1"}).json()["model_version"] == mv


def test_versions_are_numbered_one_up_and_bump_the_model_timestamp(client):
    name = make_model(client)
    before = client.get_registered_model(name).last_updated_timestamp
    assert [client.create_model_version(name, f"s3://b/{i}").version for i in range(3)] == ["1", "2", "3"]
    assert client.get_registered_model(name).last_updated_timestamp >= before


def test_create_version_of_a_missing_model_is_404_and_stores_nothing(api):
    name = unique("ghost")
    r = api.post("/model-versions/create", {"name": name, "source": "s3://bucket/x"})
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert versions_of(api, name) == []


def test_version_numbers_are_never_reused_after_a_delete(client, api):
    name = make_model(client, versions=3)
    client.delete_model_version(name, "3")
    client.delete_model_version(name, "2")
    assert client.create_model_version(name, "s3://bucket/again").version == "4"
    assert versions_of(api, name) == [1, 4]


def test_concurrent_creations_get_distinct_consecutive_numbers(client, server):
    name = make_model(client)
    url = f"{server.url}/api/2.0/mlflow/model-versions/create"

    def create(i):
        r = requests.post(url, json={"name": name, "source": f"s3://bucket/c/{i}"}, timeout=60)
        assert r.status_code == 200, r.text
        return int(r.json()["model_version"]["version"])

    with ThreadPoolExecutor(8) as pool:
        numbers = list(pool.map(create, range(24)))
    assert sorted(numbers) == list(range(1, 25))
    stored = client.search_model_versions(f"name = '{name}'")
    assert sorted((int(v.version), v.source) for v in stored) == sorted((n, f"s3://bucket/c/{i}")
                                                                        for i, n in enumerate(numbers))


# -- sources and download URIs --------------------------------------------------------------------
def test_a_runs_source_resolves_to_the_runs_artifact_uri(client, api):
    run = new_run(client)
    name = make_model(client)
    mv = client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    assert mv.source == f"runs:/{run.info.run_id}/model" and mv.run_id == run.info.run_id
    assert client.get_model_version_download_uri(name, mv.version) == f"{run.info.artifact_uri}/model"
    # The run id may be left out: it is taken from the source.
    r = api.post("/model-versions/create", {"name": name, "source": f"runs:/{run.info.run_id}/sub/dir"})
    assert r.json()["model_version"]["run_id"] == run.info.run_id
    assert api.get("/model-versions/get-download-uri", {"name": name, "version": "2"}).json() == {
        "artifact_uri": f"{run.info.artifact_uri}/sub/dir"}


def test_a_runs_source_naming_another_run_or_a_missing_run_is_rejected(client, api):
    run = new_run(client)
    other = new_run(client)
    name = make_model(client)
    r = api.post("/model-versions/create", {"name": name, "source": f"runs:/{run.info.run_id}/model",
                                            "run_id": other.info.run_id})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    r = api.post("/model-versions/create", {"name": name, "source": "runs:/0123456789abcdef0123456789abcdef/model"})
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert versions_of(api, name) == []


def test_a_logged_model_source_resolves_to_its_artifact_location(client, api):
    run = new_run(client)
    logged = client.create_logged_model(run.info.experiment_id, name="clf", source_run_id=run.info.run_id)
    name = make_model(client)
    r = api.post("/model-versions/create", {"name": name, "source": f"models:/{logged.model_id}",
                                            "model_id": logged.model_id})
    mv = r.json()["model_version"]
    assert mv["source"] == f"models:/{logged.model_id}" and mv["model_id"] == logged.model_id
    assert mv["run_id"] == run.info.run_id  # inherited from the logged model
    uri = client.get_model_version_download_uri(name, "1")
    assert uri == logged.artifact_location and uri.endswith(f"/models/{logged.model_id}/artifacts")


def test_a_missing_logged_model_or_a_mismatched_model_id_is_rejected(client, api):
    run = new_run(client)
    logged = client.create_logged_model(run.info.experiment_id, name="clf")
    name = make_model(client)
    r = api.post("/model-versions/create", {"name": name, "source": "models:/m-0123456789abcdef0123456789abcdef"})
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")
    r = api.post("/model-versions/create", {"name": name, "source": f"models:/{logged.model_id}",
                                            "model_id": "m-ffffffffffffffffffffffffffffffff"})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert versions_of(api, name) == []


def test_a_source_naming_another_registered_version_reuses_its_files(client, api):
    run = new_run(client)
    first = make_model(client)
    client.create_model_version(first, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(first, "champion", "1")
    second = make_model(client)
    for source in (f"models:/{first}/1", f"models:/{first}@champion", f"models:/{first}/latest"):
        mv = client.create_model_version(second, source)
        assert mv.source == f"models:/{first}/1" and mv.run_id == run.info.run_id
        assert client.get_model_version_download_uri(second, mv.version) == f"{run.info.artifact_uri}/model"


@pytest.mark.parametrize("source", [
    "s3://bucket/models/../../secrets",
    "s3://bucket/models/%2e%2e/other",
    "s3://bucket/models/%252e%252e/other",
    "s3://bucket/./models",
    "runs:/0123456789abcdef0123456789abcdef/../../etc",
    "mlflow-artifacts:/1/../2/models",
    "file:///etc/passwd",
    "/etc/passwd",
    "relative/model",
])
def test_sources_that_escape_their_location_are_rejected_and_store_nothing(client, api, source):
    name = make_model(client)
    r = api.post("/model-versions/create", {"name": name, "source": source})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert "Invalid model version source" in r.json()["message"]
    assert versions_of(api, name) == []


def test_a_proxied_artifact_source_must_lie_under_its_runs_artifacts(client, api):
    run = new_run(client)
    other = new_run(client)
    name = make_model(client)
    inside = f"{run.info.artifact_uri}/model"
    r = api.post("/model-versions/create", {"name": name, "source": inside, "run_id": run.info.run_id})
    assert r.status_code == 200
    assert api.get("/model-versions/get-download-uri", {"name": name, "version": "1"}).json()["artifact_uri"] == inside
    for body in ({"source": f"{other.info.artifact_uri}/model", "run_id": run.info.run_id}, {"source": inside}):
        r = api.post("/model-versions/create", {"name": name, **body})
        assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert versions_of(api, name) == [1]


# -- update, stages, tags, delete -----------------------------------------------------------------
def test_update_model_version_changes_its_description(client):
    name = make_model(client, versions=1)
    mv = client.update_model_version(name, "1", description="better")
    assert mv.description == "better"
    assert client.get_model_version(name, "1").description == "better"


def test_transition_stage_archives_the_other_versions_in_that_stage_when_asked(client):
    name = make_model(client, versions=3)
    client.transition_model_version_stage(name, "1", "Production")
    client.transition_model_version_stage(name, "2", "production", archive_existing_versions=False)
    stages = {v.version: v.current_stage for v in client.search_model_versions(f"name = '{name}'")}
    assert stages == {"1": "Production", "2": "Production", "3": "None"}
    mv = client.transition_model_version_stage(name, "3", "Production", archive_existing_versions=True)
    assert mv.current_stage == "Production"
    stages = {v.version: v.current_stage for v in client.search_model_versions(f"name = '{name}'")}
    assert stages == {"1": "Archived", "2": "Archived", "3": "Production"}


def test_bad_stage_transitions_are_rejected_and_change_nothing(client, api):
    name = make_model(client, versions=2)
    client.transition_model_version_stage(name, "1", "Staging")
    r = api.post("/model-versions/transition-stage", {"name": name, "version": "2", "stage": "Shipped",
                                                      "archive_existing_versions": False})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert "Invalid Model Version stage: Shipped" in r.json()["message"]
    r = api.post("/model-versions/transition-stage", {"name": name, "version": "2", "stage": "Archived",
                                                      "archive_existing_versions": True})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    r = api.post("/model-versions/transition-stage", {"name": name, "version": "2", "stage": "Staging",
                                                      "archive_existing_versions": "sometimes"})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    stages = {v.version: v.current_stage for v in client.search_model_versions(f"name = '{name}'")}
    assert stages == {"1": "Staging", "2": "None"}


def test_model_version_tags_can_be_set_overwritten_and_deleted(client, api):
    name = make_model(client, versions=1)
    client.set_model_version_tag(name, "1", "quality", "low")
    client.set_model_version_tag(name, "1", "quality", "high")
    client.set_model_version_tag(name, "1", "owner", "ann")
    assert client.get_model_version(name, "1").tags == {"quality": "high", "owner": "ann"}
    client.delete_model_version_tag(name, "1", "owner")
    assert client.get_model_version(name, "1").tags == {"quality": "high"}
    r = api.post("/model-versions/set-tag", {"name": name, "version": "1", "key": "../up", "value": "x"})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    r = api.post("/model-versions/set-tag", {"name": name, "version": "1", "key": "k", "value": "v" * 100_001})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert client.get_model_version(name, "1").tags == {"quality": "high"}


def test_deleting_a_version_removes_it_with_its_tags_and_aliases(client, api):
    name = make_model(client, versions=2)
    client.set_model_version_tag(name, "2", "k", "v")
    client.set_registered_model_alias(name, "champion", "2")
    client.set_registered_model_alias(name, "old", "1")
    client.delete_model_version(name, "2")
    for path in ("/model-versions/get", "/model-versions/get-download-uri"):
        assert error_of(api.get(path, {"name": name, "version": "2"})) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert client.get_registered_model(name).aliases == {"old": "1"}
    assert [v.version for v in client.get_registered_model(name).latest_versions] == ["1"]
    r = api.call("DELETE", "/model-versions/delete", json={"name": name, "version": "2"})
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")
    r = api.post("/model-versions/set-tag", {"name": name, "version": "2", "key": "k", "value": "v"})
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")


# -- search ---------------------------------------------------------------------------------------
def test_search_model_versions_filters_on_names_runs_versions_sources_and_tags(client):
    run_a, run_b = new_run(client), new_run(client)
    a, b = make_model(client), make_model(client)
    for i in range(3):
        client.create_model_version(a, f"runs:/{run_a.info.run_id}/m{i}", run_id=run_a.info.run_id,
                                    tags={"i": str(i)})
    client.create_model_version(b, f"runs:/{run_b.info.run_id}/m", run_id=run_b.info.run_id)

    def found(flt, **kw):
        return [(v.name, v.version) for v in client.search_model_versions(flt, **kw)]

    assert found(f"name = '{a}'", order_by=["version_number ASC"]) == [(a, "1"), (a, "2"), (a, "3")]
    assert sorted(found(f"name IN ('{a}', '{b}') AND version_number = 1")) == sorted([(a, "1"), (b, "1")])
    assert found(f"run_id = '{run_b.info.run_id}'") == [(b, "1")]
    assert len(found(f"run_id IN ('{run_a.info.run_id}', '{run_b.info.run_id}')")) == 4
    assert found(f"name = '{a}' AND version_number >= 2", order_by=["version_number DESC"]) == [(a, "3"), (a, "2")]
    assert found(f"name = '{a}' AND source_path LIKE '%/m1'") == [(a, "2")]
    assert found(f"name = '{a}' AND tags.i = '0'") == [(a, "1")]
    # On versions, != on a tag needs the tag (as MLflow's SQL store does).
    assert found(f"name IN ('{a}', '{b}') AND tags.i != '0'", order_by=["version_number"]) == [(a, "2"), (a, "3")]


def test_search_model_versions_orders_newest_update_first_by_default_and_pages(client):
    name = make_model(client, versions=5)
    time.sleep(0.01)  # the update must land in a later millisecond than the creations
    client.update_model_version(name, "2", description="touched")
    # MLflow's default: last_updated_timestamp DESC, then name ASC, then version DESC.
    got = client.search_model_versions(f"name = '{name}'")
    assert [v.version for v in got] == ["2", "5", "4", "3", "1"]
    first = client.search_model_versions(f"name = '{name}'", max_results=2, order_by=["version_number ASC"])
    assert [v.version for v in first] == ["1", "2"] and first.token
    rest = client.search_model_versions(f"name = '{name}'", max_results=10, order_by=["version_number ASC"],
                                        page_token=first.token)
    assert [v.version for v in rest] == ["3", "4", "5"] and not rest.token


def test_search_model_versions_max_results_is_limited_to_200000(api):
    assert api.get("/model-versions/search", {"max_results": 200_000, "filter": "name = 'none'"}).status_code == 200
    r = api.get("/model-versions/search", {"max_results": 200_001})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert "Invalid value 200001 for parameter 'max_results' supplied" in r.json()["message"]


@pytest.mark.parametrize("flt", [
    "version_number = '1'",
    "version_number = 1.5",
    "version_number = 99999999999999999999",
    "source_path IN ('a')",
    "name IS NULL",
    "description = 'x'",
    "tags.k > 'a'",
    "name = 'a' OR name = 'b'",
])
def test_search_model_versions_rejects_filters_outside_the_grammar(api, flt):
    assert error_of(api.get("/model-versions/search", {"filter": flt})) == (400, "INVALID_PARAMETER_VALUE")


@pytest.mark.parametrize("order", ["run_id", "tags.k", "source_path DESC", "name, version_number"])
def test_search_model_versions_rejects_unknown_order_by_keys(api, order):
    assert error_of(api.get("/model-versions/search", {"order_by": order})) == (400, "INVALID_PARAMETER_VALUE")


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, message", [
    ({"source": "s3://b/x"}, "Missing value for required parameter 'name'"),
    ({"name": "NAME"}, "Missing value for required parameter 'source'"),
    ({"name": "NAME", "source": 7}, "Invalid value 7 for parameter 'source' supplied"),
    ({"name": "NAME", "source": "s3://b/x", "run_id": ["r"]}, "for parameter 'run_id' supplied"),
    ({"name": "NAME", "source": "s3://b/x", "tags": {"k": "v"}}, "for parameter 'tags' supplied"),
    ({"name": "NAME", "source": "s3://b/x", "run_id": "r" * 65}, "Invalid run_id"),
    ({"name": "NAME", "source": "s3://b/\x00x"}, "must not contain NUL"),
    ({"name": "NAME", "source": "s3://b/x", "tags": [{"key": "bad key!", "value": "v"}]}, "Names may only contain"),
])
def test_create_model_version_rejects_bad_input_and_stores_nothing(client, api, body, message):
    name = make_model(client)
    body = {k: (name if v == "NAME" else v) for k, v in body.items()}
    r = api.post("/model-versions/create", body)
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert message in r.json()["message"]
    assert versions_of(api, name) == []


@pytest.mark.parametrize("version", ["one", "1.0", "", "0x1"])
def test_a_version_that_is_not_an_integer_is_rejected(client, api, version):
    name = make_model(client, versions=1)
    r = api.get("/model-versions/get", {"name": name, "version": version})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")


@pytest.mark.parametrize("method, path, extra", [
    ("GET", "/model-versions/get", {}),
    ("PATCH", "/model-versions/update", {"description": "d"}),
    ("DELETE", "/model-versions/delete", {}),
    ("POST", "/model-versions/transition-stage", {"stage": "Staging", "archive_existing_versions": False}),
    ("GET", "/model-versions/get-download-uri", {}),
    ("POST", "/model-versions/set-tag", {"key": "k", "value": "v"}),
    ("DELETE", "/model-versions/delete-tag", {"key": "k"}),
])
@pytest.mark.parametrize("version", ["9", "0", "-1", "4294967296"])
def test_unknown_versions_are_resource_does_not_exist(client, api, method, path, extra, version):
    name = make_model(client, versions=1)
    body = {"name": name, "version": version, **extra}
    r = api.call(method, path, **({"params": body} if method == "GET" else {"json": body}))
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert r.json()["message"] == f"Model Version (name={name}, version={int(version)}) not found"
    assert versions_of(api, name) == [1]


def test_the_client_raises_resource_does_not_exist_for_an_unknown_version(client):
    name = make_model(client)
    with pytest.raises(MlflowException) as err:
        client.get_model_version(name, "1")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


# -- end to end -----------------------------------------------------------------------------------
def test_a_logged_sklearn_model_registers_and_loads_by_version_and_alias(tracking, client, api):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.9, 0.1], [0.1, 0.9]])
    y = np.array([0, 1, 1, 0])
    name = unique("e2e")
    tracking.set_experiment(unique("e2e-exp"))
    with tracking.start_run() as run:
        tracking.log_param("C", 1.0)
        tracking.log_metric("acc", 1.0)
        info = tracking.sklearn.log_model(LogisticRegression().fit(X, y), name="model", registered_model_name=name)
    # A second registration of the same name continues with a new version.
    with tracking.start_run():
        tracking.sklearn.log_model(LogisticRegression(C=0.5).fit(X, y), name="model", registered_model_name=name)
    v1 = api.get("/model-versions/get", {"name": name, "version": "1"}).json()["model_version"]
    assert (v1["run_id"], v1["model_id"], v1["source"]) == (run.info.run_id, info.model_id, f"models:/{info.model_id}")
    assert client.get_model_version_download_uri(name, "1") == client.get_logged_model(info.model_id).artifact_location
    assert [v.version for v in client.get_registered_model(name).latest_versions] == ["2"]
    client.set_registered_model_alias(name, "champion", "1")
    expected = LogisticRegression().fit(X, y).predict(X)
    for uri in (f"models:/{name}/1", f"models:/{name}@champion"):
        model = tracking.pyfunc.load_model(uri)
        assert list(model.predict(X)) == list(expected), uri
    assert tracking.pyfunc.load_model(f"models:/{name}/latest").metadata.model_id != info.model_id


def test_version_number_filters_beyond_32_bits_compare_instead_of_failing(client):
    name = make_model(client, versions=2)
    assert len(client.search_model_versions(f"name = '{name}' AND version_number < 99999999999")) == 2
    assert client.search_model_versions(f"name = '{name}' AND version_number > 9223372036854775807") == []


def test_nul_bytes_in_query_strings_are_rejected_without_a_server_error(api):
    for path, params in (("/model-versions/search", {"filter": "name = 'a\x00b'"}),
                         ("/model-versions/get", {"name": "a\x00b", "version": "1"}),
                         ("/registered-models/get", {"name": "a\x00b"})):
        assert error_of(api.get(path, params)) == (400, "INVALID_PARAMETER_VALUE"), path
