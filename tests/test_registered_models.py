"""Registered models through the real mlflow client and raw REST, on SQLite and PostgreSQL."""
import pytest
from mlflow.exceptions import MlflowException

from conftest import unique

PROMPT_TAG = "mlflow.prompt.is_prompt"


def make_model(client, prefix="rm", versions=0, **kw):
    name = unique(prefix)
    client.create_registered_model(name, **kw)
    for i in range(versions):
        client.create_model_version(name, f"s3://bucket/{name}/{i + 1}")
    return name


def error_of(response):
    return response.status_code, response.json()["error_code"]


def stored_model(api, name):
    r = api.get("/registered-models/get", {"name": name})
    return r.json()["registered_model"] if r.status_code == 200 else None


# -- create, get, update, delete ------------------------------------------------------------------
def test_create_get_update_and_delete_a_registered_model_round_trip(client):
    name = unique("life")
    created = client.create_registered_model(name, tags={"team": "fraud"}, description="first")
    assert created.name == name and created.tags == {"team": "fraud"} and created.description == "first"
    got = client.get_registered_model(name)
    assert got.creation_timestamp == created.creation_timestamp and got.latest_versions == []
    updated = client.update_registered_model(name, description="second")
    assert updated.description == "second"
    assert updated.last_updated_timestamp >= created.last_updated_timestamp
    assert client.get_registered_model(name).description == "second"
    client.delete_registered_model(name)
    with pytest.raises(MlflowException) as err:
        client.get_registered_model(name)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_get_registered_model_answers_in_mlflow_wire_shape(api):
    name = unique("wire")
    r = api.post("/registered-models/create", {"name": name, "tags": [{"key": "k", "value": "v"}]})
    assert r.status_code == 200
    body = api.get("/registered-models/get", {"name": name}).json()["registered_model"]
    assert body["name"] == name and body["tags"] == [{"key": "k", "value": "v"}]
    assert isinstance(body["creation_timestamp"], int) and isinstance(body["last_updated_timestamp"], int)
    assert "latest_versions" not in body and "aliases" not in body  # empty fields are omitted


def test_create_registered_model_twice_is_resource_already_exists_and_keeps_the_first(client, api):
    name = make_model(client, description="original")
    r = api.post("/registered-models/create", {"name": name, "description": "impostor"})
    assert error_of(r) == (400, "RESOURCE_ALREADY_EXISTS")
    assert f"Registered Model (name={name}) already exists" in r.json()["message"]
    assert stored_model(api, name)["description"] == "original"


def test_a_prompt_and_a_model_cannot_share_a_name(api):
    name = unique("prompt")
    assert api.post("/registered-models/create", {
        "name": name, "tags": [{"key": PROMPT_TAG, "value": "true"}]}).status_code == 200
    r = api.post("/registered-models/create", {"name": name})
    assert error_of(r) == (400, "RESOURCE_ALREADY_EXISTS")
    assert "already taken by a prompt" in r.json()["message"]


def test_delete_registered_model_removes_versions_tags_and_aliases(client, api):
    name = make_model(client, versions=2, tags={"a": "1"})
    client.set_model_version_tag(name, "1", "k", "v")
    client.set_registered_model_alias(name, "champion", "2")
    client.delete_registered_model(name)
    assert stored_model(api, name) is None
    assert client.search_model_versions(f"name = '{name}'") == []
    # Recreating the name starts afresh: no old tags, aliases or versions come back.
    client.create_registered_model(name)
    fresh = client.get_registered_model(name)
    assert fresh.tags == {} and fresh.aliases == {} and fresh.latest_versions == []
    assert client.create_model_version(name, "s3://bucket/new").version == "1"
    assert client.get_model_version(name, "1").tags == {}


def test_update_and_delete_of_an_unknown_model_are_404(api):
    name = unique("ghost")
    r = api.call("PATCH", "/registered-models/update", json={"name": name, "description": "x"})
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert r.json()["message"] == f"Registered Model with name={name} not found"
    assert error_of(api.call("DELETE", "/registered-models/delete", json={"name": name})) == (
        404, "RESOURCE_DOES_NOT_EXIST")


# -- rename ---------------------------------------------------------------------------------------
def test_rename_moves_versions_tags_and_aliases_to_the_new_name(client, api):
    old = make_model(client, versions=2, tags={"team": "a"})
    client.set_model_version_tag(old, "2", "validated", "yes")
    client.set_registered_model_alias(old, "champion", "2")
    client.delete_model_version(old, "1")
    new = unique("renamed")
    r = api.post("/registered-models/rename", {"name": old, "new_name": new})
    assert r.status_code == 200 and r.json()["registered_model"]["name"] == new
    assert stored_model(api, old) is None
    model = client.get_registered_model(new)
    assert model.tags == {"team": "a"} and model.aliases == {"champion": "2"}
    v2 = client.get_model_version_by_alias(new, "champion")
    assert (v2.name, v2.version, v2.tags) == (new, "2", {"validated": "yes"})
    assert client.search_model_versions(f"name = '{old}'") == []
    # The deleted version 1 moved too, so numbering continues instead of reusing 1 or 2.
    assert client.create_model_version(new, "s3://bucket/next").version == "3"


def test_rename_onto_an_existing_name_is_rejected_and_changes_nothing(client, api):
    a = make_model(client, versions=1)
    b = make_model(client, versions=1)
    r = api.post("/registered-models/rename", {"name": a, "new_name": b})
    assert error_of(r) == (400, "RESOURCE_ALREADY_EXISTS")
    assert stored_model(api, a)["latest_versions"][0]["name"] == a
    both = client.search_model_versions(f"name IN ('{a}', '{b}')", order_by=["name"])
    assert [v.name for v in both] == sorted([a, b])


def test_rename_to_an_invalid_name_is_rejected_and_changes_nothing(client, api):
    name = make_model(client)
    for bad in ("a/b", "a:b", "", "   ", ".."):
        r = api.post("/registered-models/rename", {"name": name, "new_name": bad})
        assert error_of(r) == (400, "INVALID_PARAMETER_VALUE"), bad
    assert stored_model(api, name) is not None


# -- tags -----------------------------------------------------------------------------------------
def test_registered_model_tags_can_be_set_overwritten_and_deleted(client, api):
    name = make_model(client)
    client.set_registered_model_tag(name, "stage", "dev")
    client.set_registered_model_tag(name, "stage", "prod")
    client.set_registered_model_tag(name, "owner", "ann")
    assert client.get_registered_model(name).tags == {"stage": "prod", "owner": "ann"}
    client.delete_registered_model_tag(name, "owner")
    # Deleting a tag that is not there is not an error, as in MLflow.
    client.delete_registered_model_tag(name, "owner")
    assert client.get_registered_model(name).tags == {"stage": "prod"}


def test_bad_registered_model_tags_are_rejected_and_store_nothing(client, api):
    name = make_model(client)
    for key, value in (("../x", "v"), ("bad\tkey", "v"), ("k" * 251, "v"), ("ok", "v" * 100_001)):
        r = api.post("/registered-models/set-tag", {"name": name, "key": key, "value": value})
        assert error_of(r) == (400, "INVALID_PARAMETER_VALUE"), key[:10]
    r = api.post("/registered-models/create", {"name": unique("tagged"), "tags": [{"key": "/abs", "value": "v"}]})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert "tags" not in stored_model(api, name)
    # The largest allowed value is stored whole.
    client.set_registered_model_tag(name, "big", "v" * 100_000)
    assert len(client.get_registered_model(name).tags["big"]) == 100_000


# -- aliases --------------------------------------------------------------------------------------
def test_aliases_point_at_versions_move_and_are_listed_on_models_and_versions(client, api):
    name = make_model(client, versions=3)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "3")
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    client.set_registered_model_alias(name, "champion", "2")
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    body = stored_model(api, name)
    assert body["aliases"] == [{"alias": "challenger", "version": "3"}, {"alias": "champion", "version": "2"}]
    v2 = api.get("/model-versions/get", {"name": name, "version": "2"}).json()["model_version"]
    assert v2["aliases"] == ["champion"]
    client.delete_registered_model_alias(name, "champion")
    assert client.get_registered_model(name).aliases == {"challenger": "3"}


def test_the_latest_alias_resolves_to_the_highest_live_version(client):
    name = make_model(client, versions=3)
    client.delete_model_version(name, "3")
    assert client.get_model_version_by_alias(name, "latest").version == "2"


def test_an_unknown_alias_is_invalid_parameter_value_as_in_mlflow(client, api):
    name = make_model(client, versions=1)
    r = api.get("/registered-models/alias", {"name": name, "alias": "nobody"})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert r.json()["message"] == "Registered model alias nobody not found."


@pytest.mark.parametrize("alias", ["latest", "LATEST", "v1", "V12", "bad alias", "a/b", "a.b", "x" * 256, ""])
def test_bad_alias_names_are_rejected_and_store_nothing(client, api, alias):
    name = make_model(client, versions=1)
    r = api.post("/registered-models/alias", {"name": name, "alias": alias, "version": "1"})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert "aliases" not in stored_model(api, name)


def test_an_alias_on_a_missing_or_deleted_version_is_404_and_stores_nothing(client, api):
    name = make_model(client, versions=2)
    client.delete_model_version(name, "2")
    for version in ("7", "2", "99999999999"):
        r = api.post("/registered-models/alias", {"name": name, "alias": "prod", "version": version})
        assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST"), version
    r = api.post("/registered-models/alias", {"name": name, "alias": "prod", "version": "two"})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert "must be an integer" in r.json()["message"]
    assert "aliases" not in stored_model(api, name)


# -- latest versions ------------------------------------------------------------------------------
def test_latest_versions_hold_the_newest_version_per_stage(client, api):
    name = make_model(client, versions=4)
    client.transition_model_version_stage(name, "1", "Production")
    client.transition_model_version_stage(name, "2", "Staging")
    latest = {v["current_stage"]: v["version"] for v in stored_model(api, name)["latest_versions"]}
    assert latest == {"Production": "1", "Staging": "2", "None": "4"}
    got = client.get_latest_versions(name, stages=["production"])
    assert [v.version for v in got] == ["1"]
    assert sorted(v.version for v in client.get_latest_versions(name)) == ["1", "2", "4"]
    # GET is routed as well as POST, as the proto declares.
    r = api.get("/registered-models/get-latest-versions", {"name": name, "stages": ["Staging", "None"]})
    assert sorted(v["version"] for v in r.json()["model_versions"]) == ["2", "4"]
    r = api.post("/registered-models/get-latest-versions", {"name": name, "stages": ["Nonsense"]})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")


# -- search ---------------------------------------------------------------------------------------
def test_search_registered_models_filters_by_name_and_tags(client):
    prefix = unique("srch")
    names = [f"{prefix}-{i}" for i in range(4)]
    for i, n in enumerate(names):
        client.create_registered_model(n, tags={"parity": "even" if i % 2 == 0 else "odd"})
    assert [m.name for m in client.search_registered_models(f"name LIKE '{prefix}-%'")] == names
    assert [m.name for m in client.search_registered_models(f"name = '{names[2]}'")] == [names[2]]
    found = client.search_registered_models(f"name IN ('{names[1]}', '{names[3]}', 'nope')")
    assert [m.name for m in found] == [names[1], names[3]]
    odd = client.search_registered_models(f"name ILIKE '{prefix.upper()}-%' AND tags.parity = 'odd'")
    assert [m.name for m in odd] == [names[1], names[3]]
    assert [m.name for m in client.search_registered_models(f"name LIKE '{prefix}%' AND tag.parity LIKE 'ev%'")] == [
        names[0], names[2]]


def test_search_not_equal_on_a_tag_also_matches_models_without_the_tag(client, api):
    prefix = unique("neq")
    client.create_registered_model(f"{prefix}-a", tags={"env": "prod"})
    client.create_registered_model(f"{prefix}-b", tags={"env": "dev"})
    client.create_registered_model(f"{prefix}-c")
    r = api.get("/registered-models/search", {"filter": f"name LIKE '{prefix}%' AND tags.env != 'prod'"})
    assert [m["name"] for m in r.json()["registered_models"]] == [f"{prefix}-b", f"{prefix}-c"]


def test_search_hides_prompts_unless_the_filter_asks_for_them(client, api):
    prefix = unique("pr")
    client.create_registered_model(f"{prefix}-model")
    api.post("/registered-models/create", {"name": f"{prefix}-prompt", "tags": [{"key": PROMPT_TAG, "value": "true"}]})
    # The client appends `tag.`mlflow.prompt.is_prompt` != 'true'` to every search.
    assert [m.name for m in client.search_registered_models(f"name LIKE '{prefix}%'")] == [f"{prefix}-model"]
    raw = api.get("/registered-models/search", {"filter": f"name LIKE '{prefix}%'"}).json()["registered_models"]
    assert [m["name"] for m in raw] == [f"{prefix}-model"]
    prompts = api.get("/registered-models/search", {
        "filter": f"name LIKE '{prefix}%' AND tags.`{PROMPT_TAG}` = 'true'"}).json()["registered_models"]
    assert [m["name"] for m in prompts] == [f"{prefix}-prompt"]


def test_search_orders_by_name_and_timestamp_and_pages_with_tokens(client):
    prefix = unique("ord")
    names = [f"{prefix}-{i}" for i in range(5)]
    for n in names:
        client.create_registered_model(n)
    client.update_registered_model(names[1], description="touched last")
    flt = f"name LIKE '{prefix}-%'"
    assert [m.name for m in client.search_registered_models(flt, order_by=["name DESC"])] == names[::-1]
    by_time = client.search_registered_models(flt, order_by=["last_updated_timestamp DESC"])
    assert by_time[0].name == names[1]
    assert client.search_registered_models(flt, order_by=["timestamp DESC"])[0].name == names[1]
    first = client.search_registered_models(flt, max_results=2)
    assert [m.name for m in first] == names[:2] and first.token
    second = client.search_registered_models(flt, max_results=2, page_token=first.token)
    third = client.search_registered_models(flt, max_results=2, page_token=second.token)
    assert [m.name for m in second] == names[2:4] and [m.name for m in third] == names[4:]
    assert not third.token


def test_search_max_results_is_limited_to_1000(api):
    ok = api.get("/registered-models/search", {"max_results": 1000})
    assert ok.status_code == 200
    for bad in (1001, 0, -1):
        r = api.get("/registered-models/search", {"max_results": bad})
        assert error_of(r) == (400, "INVALID_PARAMETER_VALUE"), bad
        assert f"Invalid value {bad} for parameter 'max_results' supplied" in r.json()["message"]


@pytest.mark.parametrize("flt", [
    "name = 'a' OR name = 'b'",
    "name = 'x' OR 1=1",
    "tags.a > 'b'",
    "description = 'x'",
    "name IS NULL",
    "metrics.acc > 1",
    "name = x",
    "name =",
])
def test_search_rejects_filters_outside_the_grammar(api, flt):
    r = api.get("/registered-models/search", {"filter": flt})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")


@pytest.mark.parametrize("order", ["tags.a", "description", "name ASC DESC", "name, timestamp", "version_number"])
def test_search_rejects_unknown_order_by_keys(api, order):
    assert error_of(api.get("/registered-models/search", {"order_by": order})) == (400, "INVALID_PARAMETER_VALUE")


def test_search_rejects_duplicate_order_by_fields_and_bad_page_tokens(api):
    r = api.get("/registered-models/search", {"order_by": ["timestamp", "last_updated_timestamp"]})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert error_of(api.get("/registered-models/search", {"page_token": "not-a-token"})) == (
        400, "INVALID_PARAMETER_VALUE")


def test_injection_attempts_in_filters_change_nothing(client, api):
    name = make_model(client, versions=1)
    r = api.get("/registered-models/search", {"filter": f"name = '{name}' OR 1=1"})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    r = api.get("/registered-models/search", {"filter": "name = 'x''; DROP TABLE registered_models; --'"})
    assert r.status_code == 200 and r.json()["registered_models"] == []
    r = api.get("/registered-models/search", {"filter": "tags.`a'; DELETE FROM model_versions; --` = 'x'"})
    assert r.status_code == 200 and r.json()["registered_models"] == []
    r = api.get("/model-versions/search", {"filter": "run_id IN ('a'); DROP TABLE model_versions; --')"})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert stored_model(api, name)["latest_versions"][0]["version"] == "1"
    assert client.search_model_versions(f"name = '{name}'")[0].version == "1"


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, message", [
    ({}, "Missing value for required parameter 'name'"),
    ({"name": ""}, "Missing value for required parameter 'name'"),
    ({"name": 5}, "Invalid value 5 for parameter 'name' supplied"),
    ({"name": ["a"]}, "Invalid value [\"a\"] for parameter 'name' supplied"),
    ({"name": "ok", "tags": "a=b"}, "for parameter 'tags' supplied"),
    ({"name": "ok", "tags": [{"key": "k", "value": 3}]}, "for parameter 'tags.value' supplied"),
    ({"name": "ok", "description": {"a": 1}}, "for parameter 'description' supplied"),
    ({"name": "a/b"}, "Names cannot contain '/' or ':'"),
    ({"name": "a:b"}, "Names cannot contain '/' or ':'"),
    ({"name": "   "}, "Missing value for required parameter 'name'"),
    ({"name": ".."}, "Names may be treated as files"),
    ({"name": "n" * 257}, "exceeds the limit 256"),
    ({"name": "nul\x00byte"}, "must not contain NUL"),
])
def test_create_registered_model_rejects_bad_input_and_stores_nothing(api, body, message):
    r = api.post("/registered-models/create", body)
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert message in r.json()["message"]
    if isinstance(body.get("name"), str) and body["name"].strip() and "\x00" not in body["name"]:
        assert api.get("/registered-models/get", {"name": body["name"]}).status_code in (400, 404)
    assert api.get("/registered-models/get", {"name": "ok"}).status_code == 404


def test_a_malformed_json_body_is_a_400(api):
    r = api.post("/registered-models/create", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/registered-models/get", {}),
    ("POST", "/registered-models/rename", {"new_name": "x"}),
    ("PATCH", "/registered-models/update", {}),
    ("DELETE", "/registered-models/delete", {}),
    ("POST", "/registered-models/set-tag", {"name": "x"}),
    ("DELETE", "/registered-models/delete-tag", {"name": "x"}),
    ("POST", "/registered-models/alias", {"name": "x", "alias": "a"}),
    ("GET", "/registered-models/alias", {"name": "x"}),
    ("POST", "/registered-models/get-latest-versions", {}),
])
def test_missing_required_fields_are_rejected(api, method, path, body):
    kw = {"params": body} if method == "GET" else {"json": body}
    r = api.call(method, path, **kw)
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    assert "Missing value for required parameter" in r.json()["message"]


@pytest.mark.parametrize("method, path, extra", [
    ("GET", "/registered-models/get", {}),
    ("POST", "/registered-models/rename", {"new_name": "elsewhere"}),
    ("PATCH", "/registered-models/update", {"description": "d"}),
    ("DELETE", "/registered-models/delete", {}),
    ("POST", "/registered-models/set-tag", {"key": "k", "value": "v"}),
    ("DELETE", "/registered-models/delete-tag", {"key": "k"}),
    ("DELETE", "/registered-models/alias", {"alias": "a"}),
    ("GET", "/registered-models/alias", {"alias": "a"}),
    ("GET", "/registered-models/get-latest-versions", {}),
])
def test_unknown_registered_models_are_resource_does_not_exist(api, method, path, extra):
    body = {"name": unique("nobody"), **extra}
    kw = {"params": body} if method == "GET" else {"json": body}
    r = api.call(method, path, **kw)
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert api.get("/registered-models/get", {"name": "elsewhere"}).status_code == 404


def test_registry_routes_answer_under_every_api_prefix(client, server):
    import requests

    name = make_model(client)
    for prefix in ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow", "/api/3.0/mlflow", "/ajax-api/3.0/mlflow"):
        r = requests.get(f"{server.url}{prefix}/registered-models/get", params={"name": name})
        assert r.status_code == 200 and r.json()["registered_model"]["name"] == name


def test_a_page_token_with_an_absurd_offset_is_rejected_or_empty_never_a_server_error(api):
    import base64
    import json

    for offset in (10**6, 2**63, 2**70):
        token = base64.b64encode(json.dumps({"offset": offset}).encode()).decode()
        for path in ("/registered-models/search", "/model-versions/search"):
            r = api.get(path, {"page_token": token})
            assert r.status_code in (200, 400), (path, offset, r.text)
            if r.status_code == 200:
                assert not r.json()[path.split("/")[1].replace("-", "_")]
