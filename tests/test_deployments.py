"""Deployments API (/api/modelyard/v1/deployments) on SQLite and PostgreSQL, through raw REST."""
import pytest
import requests

from conftest import unique

API = "/api/modelyard/v1"


@pytest.fixture()
def dep(server):
    session = requests.Session()

    class Calls:
        url = server.url

        def post(self, path, body):
            return session.post(server.url + API + path, json=body)

        def get(self, path, **params):
            return session.get(server.url + API + path, params=params)

        def delete(self, name):
            return session.delete(server.url + API + "/deployments/delete", json={"name": name})

    return Calls()


@pytest.fixture()
def model(client):
    """A registered model with versions 1..3 and the alias champion -> 2."""
    name = unique("dm")
    client.create_registered_model(name)
    for i in range(3):
        client.create_model_version(name, f"s3://bucket/{name}/{i + 1}")
    client.set_registered_model_alias(name, "champion", "2")
    return name


def error_of(response):
    return response.status_code, response.json()["error_code"]


def test_posting_an_alias_creates_a_deployment_of_one_arm_at_generation_1(dep, model):
    name = unique("d")
    r = dep.post("/deployments", {"name": name, "model_name": model, "alias": "champion",
                                  "endpoint_url": "http://10.0.0.5:5001"})
    assert r.status_code == 200
    body = r.json()
    assert body["created"] is True
    d = body["deployment"]
    assert d["name"] == name and d["model_name"] == model and d["alias"] == "champion"
    assert d["versions"] == [{"alias": "champion", "weight": 100}]
    assert d["status"] == "pending" and d["generation"] == 1 and d["replicas"] == []
    assert d["endpoint_url"] == "http://10.0.0.5:5001"
    assert d["creation_timestamp"] == d["last_updated_timestamp"]
    stored = dep.get("/deployments/get", name=name).json()["deployment"]
    assert stored == d


def test_reposting_the_same_spec_keeps_the_generation_and_a_new_spec_bumps_it(dep, model):
    name = unique("d")
    spec = {"name": name, "model_name": model, "versions": [{"version": "1", "weight": 90}, {"version": 2, "weight": 10}]}
    assert dep.post("/deployments", spec).json()["deployment"]["generation"] == 1
    again = dep.post("/deployments", {**spec, "versions": [{"version": 1, "weight": 90.0}, {"version": "2", "weight": 10}]})
    assert again.json()["created"] is False and again.json()["deployment"]["generation"] == 1
    # A status or endpoint change is state, not spec: no new generation.
    state = dep.post("/deployments", {**spec, "status": "serving", "endpoint_url": "http://h:1"}).json()["deployment"]
    assert state["generation"] == 1 and state["status"] == "serving"
    moved = dep.post("/deployments", {**spec, "versions": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
                                      "shadow_version": 3}).json()["deployment"]
    assert moved["generation"] == 2 and moved["shadow_version"] == "3"
    assert moved["versions"] == [{"version": "1", "weight": 50}, {"version": "2", "weight": 50}]
    assert dep.get("/deployments/get", name=name).json()["deployment"]["generation"] == 2


def test_a_canary_may_mix_an_alias_arm_with_a_fixed_version(dep, model):
    name = unique("d")
    d = dep.post("/deployments", {"name": name, "model_name": model, "shadow_alias": "champion",
                                  "versions": [{"alias": "champion", "weight": 95}, {"version": 3, "weight": 5}]}
                 ).json()["deployment"]
    assert d["versions"] == [{"alias": "champion", "weight": 95}, {"version": "3", "weight": 5}]
    assert d["alias"] == "champion" and d["shadow_alias"] == "champion"


MODEL = object()  # stands for the registered model's name in the cases below


@pytest.mark.parametrize("body, message", [
    ({"model_name": MODEL}, "Missing value for required parameter 'name'"),
    ({"name": "x"}, "Missing value for required parameter 'model_name'"),
    ({"name": "bad name", "model_name": MODEL, "alias": "champion"}, "a deployment name is"),
    ({"name": "-x", "model_name": MODEL, "alias": "champion"}, "a deployment name is"),
    ({"name": "x", "model_name": MODEL}, "needs 'alias' or 'versions'"),
    ({"name": "x", "model_name": MODEL, "alias": "champion", "versions": [{"version": 1}]}, "either 'alias' or"),
    ({"name": "x", "model_name": MODEL, "versions": [{"version": 1, "weight": -1}]}, "a weight is a number >= 0"),
    ({"name": "x", "model_name": MODEL, "versions": [{"version": 1, "weight": "ten"}]}, "a weight is a number"),
    ({"name": "x", "model_name": MODEL, "versions": [{"version": 1, "weight": 0}]}, "add up to more than 0"),
    ({"name": "x", "model_name": MODEL, "versions": [{"version": "one"}]}, "a model version is a positive integer"),
    ({"name": "x", "model_name": MODEL, "versions": [{"version": 1, "alias": "champion"}]}, "exactly one of"),
    ({"name": "x", "model_name": MODEL, "versions": [{"version": 1}, {"version": "1"}]}, "listed twice"),
    ({"name": "x", "model_name": MODEL, "versions": [{"version": 1, "colour": "red"}]}, "unknown field"),
    ({"name": "x", "model_name": MODEL, "versions": ["1"]}, "each entry is an object"),
    ({"name": "x", "model_name": MODEL, "alias": "champion", "status": "exploded"}, "one of pending"),
    ({"name": "x", "model_name": MODEL, "alias": "champion", "endpoint_url": "ftp://h"}, "an http(s) URL"),
    ({"name": "x", "model_name": MODEL, "alias": "champion", "shadow_version": 1, "shadow_alias": "champion"},
     "not both"),
])
def test_a_malformed_spec_is_a_400_and_stores_nothing(dep, model, body, message):
    body = {k: (model if v is MODEL else v) for k, v in body.items()}
    r = dep.post("/deployments", body)
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert message in r.json()["message"]
    assert dep.get("/deployments", model_name=model).json()["deployments"] == []


def test_a_deployment_of_a_model_version_or_alias_that_does_not_exist_is_refused(dep, model):
    r = dep.post("/deployments", {"name": unique("d"), "model_name": unique("nomodel"), "alias": "champion"})
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")
    r = dep.post("/deployments", {"name": unique("d"), "model_name": model, "versions": [{"version": 9}]})
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST") and "version=9" in r.json()["message"]
    r = dep.post("/deployments", {"name": unique("d"), "model_name": model, "alias": "champion", "shadow_version": 7})
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")
    r = dep.post("/deployments", {"name": unique("d"), "model_name": model, "alias": "nosuchalias"})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE") and "nosuchalias" in r.json()["message"]
    assert dep.get("/deployments", model_name=model).json()["deployments"] == []


def test_heartbeats_record_each_replica_and_the_deployment_takes_the_latest_status(dep, model):
    name = unique("d")
    dep.post("/deployments", {"name": name, "model_name": model, "alias": "champion"})
    beat = {"name": name, "replica_id": "host-a:5001:11", "status": "serving", "model_version": "2",
            "endpoint_url": "http://host-a:5001"}
    first = dep.post("/deployments/heartbeat", beat)
    assert first.status_code == 200
    d = first.json()["deployment"]
    assert d["status"] == "serving" and d["endpoint_url"] == "http://host-a:5001"
    assert [r["replica_id"] for r in d["replicas"]] == ["host-a:5001:11"]
    started = d["replicas"][0]["started_timestamp"]
    dep.post("/deployments/heartbeat", {**beat, "replica_id": "host-b:5001:12", "endpoint_url": "http://host-b:5001"})
    d = dep.post("/deployments/heartbeat", {**beat, "status": "degraded", "message": "version 3 failed to load"}
                 ).json()["deployment"]
    assert d["status"] == "degraded" and d["message"] == "version 3 failed to load"
    replicas = {r["replica_id"]: r for r in d["replicas"]}
    assert set(replicas) == {"host-a:5001:11", "host-b:5001:12"}
    a = replicas["host-a:5001:11"]
    assert a["status"] == "degraded" and a["model_version"] == "2" and a["started_timestamp"] == started
    assert a["last_heartbeat_timestamp"] >= started and d["last_heartbeat_timestamp"] == a["last_heartbeat_timestamp"]
    assert d["generation"] == 1  # heartbeats never change the spec
    assert dep.get("/deployments/get", name=name).json()["deployment"]["replicas"] == d["replicas"]


def test_a_heartbeat_for_an_unknown_deployment_is_a_404_and_a_bad_one_a_400(dep, model):
    r = dep.post("/deployments/heartbeat", {"name": unique("ghost"), "replica_id": "r", "status": "serving"})
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")
    name = unique("d")
    dep.post("/deployments", {"name": name, "model_name": model, "alias": "champion"})
    assert error_of(dep.post("/deployments/heartbeat", {"name": name, "status": "serving"})) == \
        (400, "INVALID_PARAMETER_VALUE")
    assert error_of(dep.post("/deployments/heartbeat", {"name": name, "replica_id": "r", "status": "meh"})) == \
        (400, "INVALID_PARAMETER_VALUE")
    assert dep.get("/deployments/get", name=name).json()["deployment"]["replicas"] == []


def test_listing_filters_by_model_and_pages_in_name_order(dep, model, client):
    other = unique("dm2")
    client.create_registered_model(other)
    client.create_model_version(other, f"s3://bucket/{other}/1")
    names = sorted(unique("page") for _ in range(5))
    for n in names:
        dep.post("/deployments", {"name": n, "model_name": model, "versions": [{"version": 1}]})
    dep.post("/deployments", {"name": unique("elsewhere"), "model_name": other, "versions": [{"version": 1}]})
    seen, token = [], None
    while True:
        params = {"model_name": model, "max_results": 2, **({"page_token": token} if token else {})}
        page = dep.get("/deployments", **params).json()
        seen += [d["name"] for d in page["deployments"]]
        token = page.get("next_page_token")
        if not token:
            break
    assert seen == names
    assert error_of(dep.get("/deployments", max_results=0)) == (400, "INVALID_PARAMETER_VALUE")


def test_deleting_a_deployment_removes_it_and_its_replicas(dep, model):
    name = unique("d")
    dep.post("/deployments", {"name": name, "model_name": model, "alias": "champion"})
    dep.post("/deployments/heartbeat", {"name": name, "replica_id": "r1", "status": "serving"})
    assert dep.delete(name).status_code == 200
    assert error_of(dep.get("/deployments/get", name=name)) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert error_of(dep.delete(name)) == (404, "RESOURCE_DOES_NOT_EXIST")
    # Re-created under the same name, it starts afresh: no replicas from before.
    again = dep.post("/deployments", {"name": name, "model_name": model, "alias": "champion"}).json()
    assert again["created"] is True and again["deployment"]["replicas"] == []


def test_deployments_belong_to_their_project(dep, model, server):
    name = unique("d")
    dep.post("/deployments", {"name": name, "model_name": model, "alias": "champion"})
    project = unique("proj")
    created = requests.post(server.url + API + "/projects", json={"name": project})
    if created.status_code != 200:
        pytest.skip(f"cannot create a project here: {created.text[:200]}")
    scoped = requests.get(f"{server.url}/p/{project}{API}/deployments/get", params={"name": name})
    assert error_of(scoped) == (404, "RESOURCE_DOES_NOT_EXIST")
    # The model is not registered in that project either, so nothing can be deployed there.
    r = requests.post(f"{server.url}/p/{project}{API}/deployments",
                      json={"name": name, "model_name": model, "alias": "champion"})
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")
