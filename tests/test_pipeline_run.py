"""The example pipeline end to end with the local executor, against a real server, through the CLI.

One server and one copy of examples/pipeline for the module; the tests run in file order, each
starting from the cached state the one before left (they undo their edits) and checking which
jobs ran, what the registry, the deployment and the MLflow runs hold afterwards.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from mlflow import MlflowClient

from conftest import ServerProcess, unique

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pipeline"
JOBS = ["generate", "prepare", "train_logreg", "train_forest", "evaluate", "gate", "register", "promote", "deploy",
        "monitor"]
DOWNSTREAM = {
    "generate": set(JOBS),
    "prepare": set(JOBS) - {"generate"},
    "train_forest": {"train_forest", "evaluate", "gate", "register", "promote", "deploy", "monitor"},
    "train_logreg": {"train_logreg", "evaluate", "gate", "register", "promote", "deploy", "monitor"},
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A server, a copy of the example, and the names this module's runs use."""
    base = tmp_path_factory.mktemp("pipeline-run")
    server = ServerProcess(base / "data").start()
    work = base / "example"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(".modelyard", "models", "reports", "__pycache__"))
    for stale in ("raw.csv", "train.parquet", "test.parquet"):
        (work / "data" / stale).unlink(missing_ok=True)
    env = {"MLFLOW_TRACKING_URI": server.url, "MODEL_NAME": unique("fraud"), "DEPLOYMENT": unique("fraud-api")}
    yield {"server": server, "work": work, "env": env, "base": base}
    server.stop()


def pipeline(site, *args, cwd: Path | None = None, env: dict | None = None, check: bool = True):
    proc = subprocess.run([sys.executable, "-m", "modelyard", "pipeline", *args], cwd=cwd or site["work"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **site["env"], **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def api(site, path: str, **params) -> dict:
    r = requests.get(site["server"].url + "/api/modelyard/v1" + path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def last_run(site) -> dict:
    run_id = api(site, "/pipelines/runs", pipeline="fraud-example", max_results=1)["runs"][0]["run_id"]
    return api(site, "/pipelines/runs/get", run_id=run_id)["run"]


def statuses(run: dict) -> dict[str, str]:
    return {j["name"]: j["status"] for j in run["jobs"]}


def ran(run: dict) -> set[str]:
    return {name for name, status in statuses(run).items() if status != "CACHED"}


def test_the_example_runs_end_to_end_and_registers_promotes_and_deploys(site):
    proc = pipeline(site, "run")
    run = last_run(site)
    assert run["status"] == "FINISHED" and statuses(run) == {j: "SUCCEEDED" for j in JOBS}, proc.stdout
    assert "[train_forest] forest: train f1" in proc.stdout  # the jobs' output is streamed
    client = MlflowClient(site["server"].url)
    model = site["env"]["MODEL_NAME"]
    champion = client.get_model_version_by_alias(model, "champion")
    assert champion.version == "1"
    assert champion.tags["modelyard.pipeline"] == "fraud-example" and champion.tags["modelyard.job"] == "evaluate"
    assert champion.tags["modelyard.pipeline.run_id"] == run["run_id"]
    deployment = api(site, "/deployments/get", name=site["env"]["DEPLOYMENT"])["deployment"]
    assert deployment["model_name"] == model and deployment["versions"] == [{"version": "1", "weight": 100}]
    watched = f"{site['env']['DEPLOYMENT']}-drift"
    assert api(site, "/monitors/get", name=watched)["monitor"]["deployment"] == site["env"]["DEPLOYMENT"]
    rule = api(site, "/alert-rules/get", name=watched)["rule"]
    assert rule["actions"] == [{"type": "pipeline", "pipeline": "fraud-example", "reason": "the live data drifted: retrain"}]

    # Each job is a nested MLflow run with its params, metrics and log; the parent stands for the pipeline run.
    parent = client.get_run(run["mlflow_run_id"])
    assert parent.data.tags["modelyard.trigger.type"] == "manual" and parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_job = {r.data.tags["modelyard.job"]: r for r in children}
    assert set(by_job) == set(JOBS)
    assert by_job["train_logreg"].data.params["train.logreg.C"] == "1.0"
    assert 0.6 < by_job["evaluate"].data.metrics["f1"] <= 1
    assert by_job["train_forest"].data.metrics["train_f1"] > 0
    assert {a.path for a in client.list_artifacts(by_job["prepare"].info.run_id, "logs")} == {"logs/prepare.log"}
    assert all(r.info.status == "FINISHED" for r in children)

    # Lineage: the registered version's run lists the data the model was trained and tested on.
    version_run = client.get_run(champion.run_id)
    assert version_run.data.metrics["f1"] == by_job["evaluate"].data.metrics["f1"]
    inputs = {d.dataset.name: d for d in version_run.inputs.dataset_inputs}
    assert {"data/raw.csv", "data/train.parquet", "data/test.parquet", "data/merchants.csv"} <= set(inputs)
    train = inputs["data/train.parquet"]
    assert train.dataset.source_type == "http" and "/outputs/data/train.parquet" in train.dataset.source
    assert json.loads(train.dataset.profile)["num_rows"] > 1000
    assert "is_fraud" in train.dataset.schema
    assert requests.get(json.loads(train.dataset.source)["url"]).content == (site["work"] / "data/train.parquet").read_bytes()
    prepare_inputs = {d.dataset.name for d in by_job["prepare"].inputs.dataset_inputs}
    assert prepare_inputs == {"data/raw.csv", "data/merchants.csv"}


def test_a_second_run_skips_every_job_and_registers_nothing(site):
    before = api(site, "/pipelines/runs", pipeline="fraud-example")["runs"]
    proc = pipeline(site, "run")
    run = last_run(site)
    assert statuses(run) == {j: "CACHED" for j in JOBS}, proc.stdout
    assert run["status"] == "FINISHED" and len(api(site, "/pipelines/runs", pipeline="fraud-example")["runs"]) == len(before) + 1
    assert MlflowClient(site["server"].url).get_model_version_by_alias(site["env"]["MODEL_NAME"], "champion").version == "1"


def _edit(path: Path, old: str, new: str) -> str:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return text


def test_changing_one_param_reruns_exactly_the_job_that_uses_it_and_what_follows(site):
    params = site["work"] / "params.yaml"
    original = _edit(params, "n_estimators: 60", "n_estimators: 40")
    try:
        dry = pipeline(site, "run", "--dry-run")
        assert "param train.forest.n_estimators changed (60 -> 40)" in dry.stdout
        assert [line.split()[0] for line in dry.stdout.splitlines() if line.split()[1] == "generate"] == ["cached"]
        runs_before = len(api(site, "/pipelines/runs", pipeline="fraud-example")["runs"])
        pipeline(site, "run")
        run = last_run(site)
        assert len(api(site, "/pipelines/runs", pipeline="fraud-example")["runs"]) == runs_before + 1  # dry run recorded nothing
        assert ran(run) == DOWNSTREAM["train_forest"]
        assert run["status"] == "FINISHED"
    finally:
        params.write_text(original)
    # The gate passed (the champion is not beaten by less than 0.0), so version 2 is the 10% canary.
    deployment = api(site, "/deployments/get", name=site["env"]["DEPLOYMENT"])["deployment"]
    assert deployment["versions"] == [{"version": "1", "weight": 90}, {"version": "2", "weight": 10}]
    assert MlflowClient(site["server"].url).get_model_version_by_alias(site["env"]["MODEL_NAME"], "champion").version == "2"
    # Back to the old value: every job's key was seen before, so nothing runs.
    pipeline(site, "run")
    assert ran(last_run(site)) == set()


def test_changing_a_code_file_reruns_the_jobs_that_name_it(site):
    train_py = site["work"] / "pipeline" / "train.py"
    original = _edit(train_py, '"""``train_logreg`` and', '"""Edited. ``train_logreg`` and')
    try:
        pipeline(site, "run")
        assert ran(last_run(site)) == DOWNSTREAM["train_logreg"] | DOWNSTREAM["train_forest"]
    finally:
        train_py.write_text(original)


def test_changing_the_command_reruns_the_job_and_what_follows(site):
    spec = site["work"] / "modelyard.yml"
    original = _edit(spec, "python -m pipeline.prepare data/raw.csv data/merchants.csv data",
                     "python -m pipeline.prepare data/raw.csv data/merchants.csv data && echo prepared")
    try:
        proc = pipeline(site, "run")
        assert ran(last_run(site)) == DOWNSTREAM["prepare"]
        assert "[prepare] prepared" in proc.stdout
    finally:
        spec.write_text(original)


def test_changing_one_byte_of_an_input_reruns_the_jobs_that_read_it(site):
    merchants = site["work"] / "data" / "merchants.csv"
    original = merchants.read_bytes()
    i = original.index(b"0.", original.index(b"\n", 20))
    merchants.write_bytes(original[:i + 2] + bytes([original[i + 2] ^ 1]) + original[i + 3:])
    try:
        dry = pipeline(site, "run", "--dry-run")
        assert "input data/merchants.csv changed" in dry.stdout
        pipeline(site, "run")
        assert ran(last_run(site)) == DOWNSTREAM["prepare"]
    finally:
        merchants.write_bytes(original)


def test_a_deleted_output_is_restored_from_the_artifact_store(site):
    (site["work"] / "data" / "train.parquet").unlink()
    shutil.rmtree(site["work"] / "models" / "forest")
    pipeline(site, "run", "--quiet")
    assert ran(last_run(site)) == set()
    assert (site["work"] / "data" / "train.parquet").stat().st_size > 0
    assert (site["work"] / "models" / "forest" / "model.joblib").exists()


def test_a_failing_gate_stops_register_promote_and_deploy(site):
    client = MlflowClient(site["server"].url)
    model = site["env"]["MODEL_NAME"]
    versions_before = len(client.search_model_versions(f"name = '{model}'"))
    champion_before = client.get_model_version_by_alias(model, "champion").version
    deployment_before = api(site, "/deployments/get", name=site["env"]["DEPLOYMENT"])["deployment"]
    proc = pipeline(site, "run", env={"MIN_F1": "0.99"}, check=False)
    assert proc.returncode == 1
    run = last_run(site)
    assert run["status"] == "FAILED" and "gate" in run["message"]
    jobs = statuses(run)
    assert jobs["gate"] == "FAILED" and {jobs[j] for j in ("register", "promote", "deploy", "monitor")} == {"SKIPPED"}
    gate = next(j for j in run["jobs"] if j["name"] == "gate")
    assert "metrics.f1 >= 0.99" in gate["message"] and gate["result"]["passed"] is False
    assert len(client.search_model_versions(f"name = '{model}'")) == versions_before
    assert client.get_model_version_by_alias(model, "champion").version == champion_before
    after = api(site, "/deployments/get", name=site["env"]["DEPLOYMENT"])["deployment"]
    assert after["versions"] == deployment_before["versions"]


def test_a_promote_job_refuses_a_protected_alias_unless_it_says_so(site):
    spec = site["work"] / "modelyard.yml"
    original = _edit(spec, "    protected: true   #", "    protected: false   #")
    try:
        proc = pipeline(site, "run", "--force-job", "promote", check=False)
        assert proc.returncode == 1
        promote = next(j for j in last_run(site)["jobs"] if j["name"] == "promote")
        assert promote["status"] == "FAILED" and "alias 'champion' is protected" in promote["message"]
    finally:
        spec.write_text(original)


def test_a_triggered_run_is_queued_then_run_with_its_trigger_recorded(site):
    r = requests.post(site["server"].url + "/api/modelyard/v1/pipelines/runs/trigger", json={
        "pipeline": "fraud-example", "trigger": {"type": "alert", "alert_id": "a-17", "rule": "f1-drop"}})
    assert r.status_code == 200, r.text
    queued = r.json()["run"]
    assert queued["status"] == "QUEUED" and queued["trigger"]["alert_id"] == "a-17"
    assert requests.post(site["server"].url + "/api/modelyard/v1/pipelines/runs/trigger",
                         json={"pipeline": "no-such-pipeline"}).status_code == 404
    proc = pipeline(site, "run", "--queued", "--quiet")
    assert "claimed fraud-example" in proc.stdout
    run = api(site, "/pipelines/runs/get", run_id=queued["run_id"])["run"]
    assert run["status"] == "FINISHED" and run["trigger"]["type"] == "alert" and run["claimed_by"]
    parent = MlflowClient(site["server"].url).get_run(run["mlflow_run_id"])
    assert parent.data.tags["modelyard.trigger.type"] == "alert" and "a-17" in parent.data.tags["modelyard.trigger"]
    again = pipeline(site, "run", "--queued")
    assert "no queued run" in again.stdout


def test_gitlab_ci_jobs_report_to_one_run_and_take_their_inputs_from_the_artifact_store(site):
    ci = {"GITLAB_CI": "true", "CI_PIPELINE_ID": "4242", "CI_COMMIT_SHA": "0123abcd", "CI_JOB_ID": "1",
          "CI_PROJECT_URL": "https://gitlab.example.com/team/fraud", "CI_JOB_URL": "https://gitlab.example.com/team/fraud/-/jobs/1"}
    pipeline(site, "run", "--only", "generate", "--run-key", "gitlab-4242", env=ci)
    # The next CI job runs on another runner: a fresh checkout without any data.
    other = site["base"] / "runner-2"
    shutil.copytree(EXAMPLE, other, ignore=shutil.ignore_patterns(".modelyard", "models", "reports", "__pycache__",
                                                                   "raw.csv", "*.parquet"))
    pipeline(site, "run", "--only", "prepare", "--force-job", "prepare", "--run-key", "gitlab-4242", cwd=other,
             env={**ci, "CI_JOB_ID": "2",
             "CI_JOB_URL": "https://gitlab.example.com/team/fraud/-/jobs/2"})
    assert (other / "data" / "train.parquet").read_bytes() == (site["work"] / "data" / "train.parquet").read_bytes()
    assert (other / "data" / "raw.csv").read_bytes() == (site["work"] / "data" / "raw.csv").read_bytes()
    runs = [r for r in api(site, "/pipelines/runs", pipeline="fraud-example")["runs"] if r.get("run_key") == "gitlab-4242"]
    assert len(runs) == 1 and runs[0]["status"] == "RUNNING"  # the other CI jobs have not run yet
    run = api(site, "/pipelines/runs/get", run_id=runs[0]["run_id"])["run"]
    assert set(statuses(run)) == {"generate", "prepare"} and run["ci"]["CI_PIPELINE_ID"] == "4242"
    assert run["git_commit"] == "0123abcd"
    client = MlflowClient(site["server"].url)
    prepare = next(j for j in run["jobs"] if j["name"] == "prepare")
    tags = client.get_run(prepare["mlflow_run_id"]).data.tags
    assert tags["gitlab.CI_JOB_ID"] == "2" and tags["gitlab.CI_JOB_URL"].endswith("/jobs/2")
    assert client.get_run(run["mlflow_run_id"]).data.tags["gitlab.CI_PIPELINE_ID"] == "4242"


def test_the_mlflow_client_in_a_gitlab_ci_job_tags_its_runs_with_the_ci_variables(site):
    script = ("import mlflow\nmlflow.set_experiment('ci-tagged')\n"
              "with mlflow.start_run() as r:\n    print('RUN_ID=' + r.info.run_id)\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": site["server"].url, "GITLAB_CI": "true", "CI_JOB_ID": "99",
           "CI_JOB_URL": "https://gitlab.example.com/g/p/-/jobs/99"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    run_id = next(line[7:] for line in out.stdout.splitlines() if line.startswith("RUN_ID="))
    tags = MlflowClient(site["server"].url).get_run(run_id).data.tags
    assert tags["gitlab.CI_JOB_ID"] == "99" and tags["gitlab.CI_JOB_URL"].endswith("/jobs/99")


def test_export_writes_a_gitlab_ci_file_with_the_same_dag(site):
    pipeline(site, "export", "--gitlab-ci", "-o", "ci.yml")
    doc = yaml.safe_load((site["work"] / "ci.yml").read_text())
    assert doc["evaluate"]["needs"] == ["prepare", "train_logreg", "train_forest"]
    assert doc["stages"] == ["data", "train", "evaluate", "release"]


def test_a_bad_pipeline_file_exits_2_naming_the_line(site, tmp_path):
    (tmp_path / "modelyard.yml").write_text("train:\n  script: echo\n  needs: [nothing]\n")
    proc = pipeline(site, "run", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "modelyard.yml:3: job 'train' needs 'nothing', which is not defined" in proc.stderr
