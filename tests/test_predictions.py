"""Prediction logs and labels: POST /predictions/log, /predictions/labels, GET /predictions/search."""
from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from test_monitoring_support import Api, ApiError, name, predictions, rows

DAY_MS = 86_400_000


@pytest.fixture()
def mapi(server):
    return Api(server.url)


def test_logging_a_batch_answers_accepted_and_stores_every_row_with_its_fields(mapi):
    dep = name("dep")
    items = predictions(dep, rows(50))
    items[0]["shadow"] = True
    items[1]["error"] = "model raised ValueError"
    assert mapi.post("/predictions/log", {"predictions": items}) == {"accepted": 50}
    found = mapi.get("/predictions/search", deployment=dep, max_results=100)["predictions"]
    assert len(found) == 50
    by_id = {p["request_id"]: p for p in found}
    first = by_id[items[0]["request_id"]]
    assert first["shadow"] is True and first["inputs"] == items[0]["inputs"] and first["model_version"] == "1"
    assert by_id[items[1]["request_id"]]["error"] == "model raised ValueError"
    assert by_id[items[2]["request_id"]]["latency_ms"] == items[2]["latency_ms"]
    assert by_id[items[2]["request_id"]]["outputs"] == items[2]["outputs"]


def test_text_with_tabs_newlines_backslashes_and_unicode_comes_back_as_it_was_sent(mapi):
    """PostgreSQL stores the rows through COPY, whose text format escapes these."""
    dep = name("dep")
    items = predictions(dep, rows(3))
    tricky = "a\tb\nc\\N \\ d\r\x01 é 🙂 \\."
    for item in items:
        item["inputs"]["note"] = tricky
    items[0]["request_id"] = "req\t1\\N"
    items[1]["error"] = tricky
    mapi.post("/predictions/log", {"predictions": items})
    found = {p["request_id"]: p for p in mapi.get("/predictions/search", deployment=dep, max_results=10)["predictions"]}
    assert set(found) == {i["request_id"] for i in items}
    assert all(found[i["request_id"]]["inputs"]["note"] == tricky for i in items)
    assert found[items[1]["request_id"]]["error"] == tricky


@pytest.mark.parametrize("field,value,fragment", [
    ("request_id", "", "request_id"),
    ("request_id", 7, "request_id"),
    ("timestamp_ms", "yesterday", "timestamp_ms"),
    ("timestamp_ms", 0, "retention"),
    ("deployment", None, "deployment"),
    ("inputs", [1, 2], "inputs"),
    ("latency_ms", -1, "latency_ms"),
    ("shadow", "no", "shadow"),
    ("error", 5, "error"),
])
def test_a_bad_item_rejects_the_whole_batch_with_a_400_naming_it_and_stores_nothing(mapi, field, value, fragment):
    dep = name("bad")
    items = predictions(dep, rows(5))
    items[3][field] = value
    r = mapi.raw("POST", "/predictions/log", json={"predictions": items})
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert f"predictions[3].{field}" in r.json()["message"] and fragment in r.json()["message"]
    assert mapi.get("/predictions/search", deployment=dep)["predictions"] == []


def test_more_than_ten_thousand_predictions_in_one_request_are_refused(mapi):
    dep = name("big")
    item = predictions(dep, rows(1))[0]
    r = mapi.raw("POST", "/predictions/log", json={"predictions": [item] * 10_001})
    assert r.status_code == 400 and "at most 10000" in r.json()["message"]
    for body in ({}, {"predictions": []}, {"predictions": "x"}):
        assert mapi.raw("POST", "/predictions/log", json=body).status_code == 400
    assert mapi.get("/predictions/search", deployment=dep)["predictions"] == []


def test_ten_thousand_predictions_in_one_request_are_accepted(mapi):
    dep = name("max")
    assert mapi.post("/predictions/log", {"predictions": predictions(dep, rows(10_000))}) == {"accepted": 10_000}
    assert len(mapi.get("/predictions/search", deployment=dep, max_results=1000)["predictions"]) == 1000


def _request(dep: str, rid: str, n: int, **fields) -> dict:
    """One request's item of ``{"requests": [...]}``, as ``modelyard serve`` sends them."""
    return {"request_id": rid, "timestamp_ms": int(time.time() * 1000), "deployment": dep, "model_name": "m",
            "model_version": "2", "latency_ms": 1.5, "columns": ["x", "y"],
            "inputs": [[float(i), f"c{i}"] for i in range(n)], "outputs": [i % 2 for i in range(n)], **fields}


def test_requests_sent_with_their_rows_are_stored_as_one_prediction_per_row(mapi):
    dep = name("req")
    body = {"requests": [_request(dep, "one", 1), _request(dep, "three", 3),
                         _request(dep, "objects", 2, columns=None, inputs=[{"a": 1}, {"a": 2}], outputs=None),
                         _request(dep, "failed", 1, outputs=None, error="boom", shadow=True)]}
    assert mapi.post("/predictions/log", body) == {"accepted": 7}
    found = {p["request_id"]: p for p in mapi.get("/predictions/search", deployment=dep)["predictions"]}
    assert sorted(found) == ["failed", "objects:0", "objects:1", "one", "three:0", "three:1", "three:2"]
    assert found["three:2"]["inputs"] == {"x": 2.0, "y": "c2"} and found["three:2"]["outputs"] == 0
    assert found["three:1"]["outputs"] == 1 and found["three:1"]["model_version"] == "2"
    assert found["objects:1"]["inputs"] == {"a": 2} and found["objects:1"]["outputs"] is None
    assert found["failed"]["error"] == "boom" and found["failed"]["shadow"] is True
    # labels join a row of a request by its row id
    assert mapi.post("/predictions/labels", {"labels": [{"request_id": "three:1", "label": 1}]})["matched"] == 1


@pytest.mark.parametrize("change,fragment", [
    ({"inputs": []}, "requests[1].inputs"),
    ({"inputs": [[1.0, "a"], [2.0]]}, "requests[1].inputs[1]"),
    ({"inputs": [[1.0, "a"], 5]}, "requests[1].inputs[1]"),
    ({"outputs": [0]}, "requests[1].outputs"),
    ({"columns": [1, 2]}, "requests[1].columns"),
    ({"columns": None}, "requests[1].inputs[0]"),
    ({"request_id": ""}, "requests[1].request_id"),
    ({"timestamp_ms": 0}, "requests[1].timestamp_ms"),
    ({"shadow": 1}, "requests[1].shadow"),
])
def test_a_bad_request_item_rejects_the_whole_post_with_a_400_naming_it_and_stores_nothing(mapi, change, fragment):
    dep = name("badreq")
    bad = {**_request(dep, "r1", 2), **change}
    r = mapi.raw("POST", "/predictions/log", json={"requests": [_request(dep, "r0", 2), bad]})
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE" and fragment in r.json()["message"]
    assert mapi.get("/predictions/search", deployment=dep)["predictions"] == []


def test_a_post_sends_predictions_or_requests_and_at_most_ten_thousand_rows(mapi):
    dep = name("either")
    one = predictions(dep, rows(1))
    for body in ({"predictions": one, "requests": [_request(dep, "r", 1)]}, {"requests": []}, {"requests": {}}):
        r = mapi.raw("POST", "/predictions/log", json=body)
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text
    r = mapi.raw("POST", "/predictions/log", json={"requests": [_request(dep, "a", 5_000), _request(dep, "b", 5_001)]})
    assert r.status_code == 400 and "at most 10000" in r.json()["message"]
    assert mapi.get("/predictions/search", deployment=dep)["predictions"] == []
    assert mapi.post("/predictions/log", {"requests": [_request(dep, "a", 5_000), _request(dep, "b", 5_000)]}) == {
        "accepted": 10_000}


def test_labels_join_their_predictions_by_request_id_and_say_how_many_matched(mapi):
    dep = name("lab")
    items = predictions(dep, rows(10))
    mapi.post("/predictions/log", {"predictions": items})
    labels = [{"request_id": items[i]["request_id"], "label": i % 2} for i in range(4)]
    labels.append({"request_id": "never-logged", "label": 1})
    assert mapi.post("/predictions/labels", {"labels": labels}) == {"accepted": 5, "matched": 4}
    found = {p["request_id"]: p for p in mapi.get("/predictions/search", deployment=dep)["predictions"]}
    assert [found[items[i]["request_id"]].get("label") for i in range(5)] == [0, 1, 0, 1, None]


def test_a_label_sent_again_replaces_the_first(mapi):
    dep = name("relabel")
    items = predictions(dep, rows(1))
    mapi.post("/predictions/log", {"predictions": items})
    rid = items[0]["request_id"]
    mapi.post("/predictions/labels", {"labels": [{"request_id": rid, "label": "spam"}]})
    mapi.post("/predictions/labels", {"labels": [{"request_id": rid, "label": "ham"}]})
    assert mapi.get("/predictions/search", deployment=dep)["predictions"][0]["label"] == "ham"


def test_a_label_that_arrives_before_its_prediction_is_joined_when_the_prediction_comes(mapi):
    dep = name("early")
    items = predictions(dep, rows(1))
    assert mapi.post("/predictions/labels", {"labels": [{"request_id": items[0]["request_id"], "label": 1}]}) == \
        {"accepted": 1, "matched": 0}
    mapi.post("/predictions/log", {"predictions": items})
    assert mapi.get("/predictions/search", deployment=dep)["predictions"][0]["label"] == 1


@pytest.mark.parametrize("body", [
    {"labels": [{"request_id": "a"}]},
    {"labels": [{"request_id": "a", "label": None}]},
    {"labels": [{"label": 1}]},
    {"labels": []},
    {"labels": ["a"]},
])
def test_malformed_labels_are_a_400(mapi, body):
    r = mapi.raw("POST", "/predictions/labels", json=body)
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_predictions_of_two_days_go_to_two_day_partitions_and_a_search_spans_both(server, mapi):
    dep = name("days")
    now = int(time.time() * 1000)
    mapi.post("/predictions/log", {"predictions": predictions(dep, rows(3), ts_ms=now - DAY_MS, prefix="old")
                                   + predictions(dep, rows(2), ts_ms=now, prefix="new")})
    found = mapi.get("/predictions/search", deployment=dep, start_ms=now - 2 * DAY_MS, end_ms=now + 1)["predictions"]
    assert sorted(p["request_id"].split("-")[0] for p in found) == ["new", "new", "old", "old", "old"]
    assert [p["timestamp_ms"] for p in found] == sorted((p["timestamp_ms"] for p in found), reverse=True)
    today = mapi.get("/predictions/search", deployment=dep, start_ms=now - 1000, end_ms=now + 1)["predictions"]
    assert len(today) == 2
    if server.backend == "sqlite":
        db = sqlite3.connect(server.data_dir / "modelyard.db")
        tables = {t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'prediction_log_%' "
                                           "AND type = 'table'")}
        listed = {t for (t,) in db.execute("SELECT table_name FROM prediction_partitions")}
        assert len(tables) >= 2 and tables == listed


def test_search_checks_its_arguments(mapi):
    assert mapi.raw("GET", "/predictions/search").status_code == 400
    assert mapi.raw("GET", "/predictions/search", params={"deployment": "d", "max_results": 5000}).status_code == 400
    assert mapi.raw("GET", "/predictions/search", params={"deployment": "d", "start_ms": 5, "end_ms": 5}).status_code == 400


def test_retention_drops_whole_day_partitions_and_their_buckets(tmp_path):
    from modelyard.store.db import Database
    from modelyard.store.migrate import upgrade
    from modelyard.store.predictions import PredictionStore

    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade(db.write_engine)
    db.start()
    store = PredictionStore(db)
    now = int(time.time() * 1000)

    def row(ts, i):
        return ("default", "d", ts, f"r{i}", "m", "1", 1.0, False, None, '{"x": 1}', "0")

    async def run():
        await store.log("default", [row(now - 40 * DAY_MS, 1), row(now - 40 * DAY_MS + 1, 2), row(now, 3)], 60_000)
        assert len(await store.days()) == 2
        dropped = await store.drop_before(now - 30 * DAY_MS)
        assert len(dropped) == 1
        assert len(await store.days()) == 1
        assert len(await store.search("default", "d", now - 50 * DAY_MS, now + 1, 10)) == 1

    try:
        asyncio.run(run())
        names = {n for (n,) in sqlite3.connect(tmp_path / "r.db").execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'prediction_log_%'")}
        assert len(names) == 1
    finally:
        db.close()


def test_an_unknown_deployment_has_no_predictions(mapi):
    with pytest.raises(ApiError):
        mapi.get("/predictions/search")
    assert mapi.get("/predictions/search", deployment=name("none"))["predictions"] == []


def test_a_projects_predictions_and_monitors_are_not_seen_from_another_project(server, mapi):
    project = name("proj")
    r = mapi.session.post(server.url + "/api/modelyard/v1/projects", json={"name": project}, timeout=30)
    assert r.status_code == 200, r.text
    other = Api(server.url + f"/p/{project}")
    dep = name("dep")
    other.post("/predictions/log", {"predictions": predictions(dep, rows(7))})
    other.post("/monitors/create", {"name": "watch", "deployment": dep, "enabled": False})
    assert len(other.get("/predictions/search", deployment=dep)["predictions"]) == 7
    assert mapi.get("/predictions/search", deployment=dep)["predictions"] == []
    assert "watch" not in [m["name"] for m in mapi.get("/monitors/list")["monitors"]]
    assert [m["name"] for m in other.get("/monitors/list")["monitors"]] == ["watch"]
