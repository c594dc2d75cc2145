"""modelyard's pipelines API: runs, jobs and their nested MLflow runs, the cache index, triggers and claims,
listing for the UI, and the alert action that queues a run. Raw HTTP against the real server."""
from __future__ import annotations

import asyncio
import concurrent.futures

import pytest
import requests
from mlflow import MlflowClient

from conftest import unique


def call(server, method: str, path: str, **kw):
    return requests.request(method, server.url + "/api/modelyard/v1" + path, **kw)


def start(server, pipeline: str, **body):
    r = call(server, "POST", "/pipelines/runs/start", json={"pipeline": pipeline, **body})
    assert r.status_code == 200, r.text
    return r.json()


def update(server, run_id: str, jobs: list[dict], **body):
    r = call(server, "POST", "/pipelines/runs/update", json={"run_id": run_id, "jobs": jobs, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_run_its_jobs_and_their_nested_mlflow_runs_are_recorded_and_listed(server):
    name = unique("pipe")
    started = start(server, name, planned_jobs=["prep", "train"], experiment_name=name,
                    tags=[{"key": "gitlab.CI_JOB_ID", "value": "5"}], params=[{"key": "train.C", "value": "1.0"}],
                    spec={"stages": ["s"], "jobs": [{"name": "prep"}, {"name": "train", "needs": ["prep"]}]})
    run = started["run"]
    assert run["status"] == "RUNNING" and run["number"] == 1 and started["created"] is True
    made = update(server, run["run_id"], [{"name": "prep", "status": "RUNNING", "stage": "s", "start_time": 1000,
                                           "params": [{"key": "prep.rows", "value": "10"}]}])
    prep_run = made["jobs"][0]
    assert prep_run["artifact_uri"].startswith("mlflow-artifacts:/")
    update(server, run["run_id"], [{"name": "prep", "status": "SUCCEEDED", "cache_key": "k-prep", "end_time": 2000,
                                    "outputs": {"a.csv": {"type": "file", "hash": "h", "size": 1}},
                                    "outputs_run_id": prep_run["mlflow_run_id"],
                                    "metrics": [{"key": "rows", "value": 10}]}])
    after = update(server, run["run_id"], [{"name": "train", "status": "FAILED", "message": "boom", "start_time": 2100,
                                            "end_time": 2200}])
    assert after["run"]["status"] == "FAILED" and "train" in after["run"]["message"]  # every planned job ended

    got = call(server, "GET", "/pipelines/runs/get", params={"run_id": run["run_id"]}).json()["run"]
    jobs = {j["name"]: j for j in got["jobs"]}
    assert jobs["prep"]["status"] == "SUCCEEDED" and jobs["prep"]["duration_ms"] == 1000
    assert jobs["train"]["message"] == "boom"

    client = MlflowClient(server.url)
    parent = client.get_run(run["mlflow_run_id"])
    assert parent.info.status == "FAILED" and parent.data.tags["gitlab.CI_JOB_ID"] == "5"
    assert parent.data.params["train.C"] == "1.0" and parent.info.run_name == f"{name} #1"
    prep = client.get_run(jobs["prep"]["mlflow_run_id"])
    assert prep.data.tags["mlflow.parentRunId"] == parent.info.run_id and prep.info.status == "FINISHED"
    assert prep.data.params["prep.rows"] == "10" and prep.data.metrics["rows"] == 10
    assert client.get_run(jobs["train"]["mlflow_run_id"]).info.status == "FAILED"

    listed = call(server, "GET", "/pipelines").json()["pipelines"]
    mine = next(p for p in listed if p["name"] == name)
    assert mine["last_run"]["run_id"] == run["run_id"] and mine["spec"]["jobs"][1]["needs"] == ["prep"]
    history = call(server, "GET", "/pipelines/jobs", params={"pipeline": name, "name": "prep"}).json()["jobs"]
    assert [h["status"] for h in history] == ["SUCCEEDED"] and history[0]["run_number"] == 1


def test_the_cache_index_answers_the_newest_successful_job_with_a_key_and_explains_a_miss(server):
    name = unique("cache")
    run = start(server, name, planned_jobs=["a"])["run"]
    made = update(server, run["run_id"], [{"name": "a", "status": "RUNNING"}])["jobs"][0]
    update(server, run["run_id"], [{"name": "a", "status": "SUCCEEDED", "cache_key": "key-1",
                                    "key_parts": {"v": 1, "params": {"x": 1}}, "result": {"metrics": {"f1": 0.9}},
                                    "outputs": {"o.txt": {"type": "file", "hash": "abc", "size": 3}},
                                    "outputs_run_id": made["mlflow_run_id"]}])
    second = start(server, name, planned_jobs=["a"], lookup=[{"job": "a", "cache_key": "key-1"},
                                                               {"job": "a", "cache_key": "key-2"}])
    hit, miss = second["cache"]
    assert hit["hit"]["run_id"] == run["run_id"] and hit["hit"]["outputs"]["o.txt"]["hash"] == "abc"
    assert hit["hit"]["outputs_artifact_uri"].endswith(f"{made['mlflow_run_id']}/artifacts")
    assert hit["hit"]["result"]["metrics"]["f1"] == 0.9
    assert "hit" not in miss and miss["last"]["key_parts"]["params"] == {"x": 1}
    assert second["run"]["number"] == 2
    other = call(server, "POST", "/pipelines/cache/lookup",
                 json={"pipeline": unique("elsewhere"), "lookup": [{"job": "a", "cache_key": "key-1"}]}).json()
    assert "hit" not in other["cache"][0]  # the index is per pipeline


def test_a_run_key_joins_one_run_and_a_queued_run_is_claimed_once(server):
    name = unique("ci")
    first = start(server, name, run_key="gitlab-1", planned_jobs=["a", "b"])
    again = start(server, name, run_key="gitlab-1", planned_jobs=["b"])
    assert again["run"]["run_id"] == first["run"]["run_id"] and again["created"] is False

    queued = call(server, "POST", "/pipelines/runs/trigger", json={
        "pipeline": name, "trigger": {"type": "alert", "alert": {"groupKey": "g"}}}).json()["run"]
    assert queued["status"] == "QUEUED" and queued["trigger"]["type"] == "alert"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        claims = list(pool.map(lambda i: call(server, "POST", "/pipelines/runs/claim",
                                              json={"pipelines": [name], "runner": f"r{i}"}).json(), range(4)))
    won = [c["run"] for c in claims if c.get("run")]
    assert len(won) == 1 and won[0]["run_id"] == queued["run_id"] and won[0]["status"] == "RUNNING"
    started = start(server, name, run_id=queued["run_id"], planned_jobs=["a"])["run"]
    assert started["run_id"] == queued["run_id"] and started["trigger"]["alert"]["groupKey"] == "g"
    assert MlflowClient(server.url).get_run(started["mlflow_run_id"]).data.tags["modelyard.trigger.type"] == "alert"
    runs = call(server, "GET", "/pipelines/runs", params={"pipeline": name}).json()["runs"]
    assert [r["number"] for r in runs] == [2, 1]


@pytest.mark.parametrize("path,body,message", [
    ("/pipelines/runs/start", {"pipeline": "bad name!"}, "pipeline name"),
    ("/pipelines/runs/start", {"pipeline": "ok", "planned_jobs": ["../x"]}, "job name"),
    ("/pipelines/runs/start", {"pipeline": "ok", "trigger": "not an object"}, "JSON object"),
    ("/pipelines/runs/update", {"run_id": "nope", "jobs": []}, "not found"),
    ("/pipelines/runs/trigger", {"pipeline": "never-ran-here"}, "not found"),
    ("/pipelines/runs/claim", {"pipelines": []}, "runner"),
])
def test_bad_requests_are_4xx_with_mlflows_error_shape(server, path, body, message):
    r = call(server, "POST", path, json=body)
    assert 400 <= r.status_code < 500, r.text
    assert message in r.json()["message"] and r.json()["error_code"]


def test_a_job_status_the_api_does_not_know_changes_nothing(server):
    name = unique("strict")
    run = start(server, name, planned_jobs=["a"])["run"]
    r = call(server, "POST", "/pipelines/runs/update", json={"run_id": run["run_id"],
                                                             "jobs": [{"name": "a", "status": "DONE-ISH"}]})
    assert r.status_code == 400
    got = call(server, "GET", "/pipelines/runs/get", params={"run_id": run["run_id"]}).json()["run"]
    assert got["jobs"] == [] and got["status"] == "RUNNING"


def test_an_alert_rule_can_carry_a_pipeline_action(server):
    r = call(server, "POST", "/alert-rules/create", json={
        "name": unique("retrain"), "expr": 'drift_detected{monitor="m"} > 0',
        "actions": [{"type": "pipeline", "pipeline": "fraud-example", "reason": "data drifted"}]})
    assert r.status_code == 200, r.text
    bad = call(server, "POST", "/alert-rules/create", json={
        "name": unique("retrain"), "expr": 'drift_detected{monitor="m"} > 0', "actions": [{"type": "pipeline"}]})
    assert bad.status_code == 400


def test_the_alert_action_queues_a_run_with_the_alert_as_its_trigger(tmp_path):
    """The action as the monitoring scheduler runs it, on the server's own stores (no HTTP in between)."""
    from modelyard.monitoring.actions import run_action, validate_action
    from modelyard.server.app import create_app
    from modelyard.settings import Settings

    app = create_app(Settings(data_dir=tmp_path))
    services = app.services
    action = validate_action({"type": "pipeline", "pipeline": "retrain-me", "reason": "drift"})
    alert = {"groupKey": "{}:{alertname=\"drift\"}", "status": "firing", "commonLabels": {"deployment": "fraud-api"}}

    async def go():
        missing = await run_action(services, {"action": action, "alert": alert, "project": "default", "rule_id": "r1"})
        await services.stores.pipelines.start("default", "retrain-me", {"planned_jobs": ["a"]})
        done = await run_action(services, {"action": action, "alert": alert, "project": "default", "rule_id": "r1"})
        queued = await services.stores.pipelines.get_run("default", done[1]["run_id"])
        return missing, done, queued

    try:
        missing, done, queued = asyncio.run(go())
    finally:
        services.db.close()
    assert missing[0] == "failed" and "not found" in missing[1]["error"]
    assert done[0] == "done" and queued["status"] == "QUEUED"
    assert queued["trigger"]["type"] == "alert" and queued["trigger"]["rule_id"] == "r1"
    assert queued["trigger"]["alert"]["commonLabels"] == {"deployment": "fraud-api"}


def test_a_fully_cached_run_is_settled_in_the_start_call_only_when_the_outputs_on_disk_match(server):
    name = unique("settle")
    run = start(server, name, planned_jobs=["a"])["run"]
    made = update(server, run["run_id"], [{"name": "a", "status": "RUNNING"}])["jobs"][0]
    update(server, run["run_id"], [{"name": "a", "status": "SUCCEEDED", "cache_key": "k",
                                    "outputs": {"o.bin": {"type": "file", "hash": "h1", "size": 1}},
                                    "outputs_run_id": made["mlflow_run_id"]}])
    lookup = [{"job": "a", "cache_key": "k"}]
    stale = start(server, name, planned_jobs=["a"], lookup=lookup, settle=True, local_outputs={"a": {"o.bin": "h0"}})
    assert "settled" not in stale and stale["run"]["status"] == "RUNNING"  # the runner restores, then records
    same = start(server, name, planned_jobs=["a"], lookup=lookup, settle=True, local_outputs={"a": {"o.bin": "h1"}})
    assert same["settled"] is True and same["run"]["status"] == "FINISHED"
    got = call(server, "GET", "/pipelines/runs/get", params={"run_id": same["run"]["run_id"]}).json()["run"]
    assert [(j["name"], j["status"], j["cached_from"]) for j in got["jobs"]] == [("a", "CACHED", run["run_id"])]
    assert got["jobs"][0]["mlflow_run_id"] == made["mlflow_run_id"]
    assert MlflowClient(server.url).get_run(same["run"]["mlflow_run_id"]).info.status == "FINISHED"
