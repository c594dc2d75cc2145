"""Artifacts in an S3 bucket: a real S3-compatible server (moto's server mode) started here, a
modelyard server pointed at it with ``--artifacts-uri s3://bucket/prefix --s3-endpoint-url``, and
the real mlflow client. Each test checks what the client sees and what the bucket holds.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
import requests

from conftest import ServerProcess, free_port, unique
from test_artifacts import ARTIFACTS, BLOCK, TRAVERSALS, _generated_body, peak_rss, raw_request

BUCKET = "modelyard-artifacts"
PREFIX = "team/prefix"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """moto's S3 server on a free port, with the bucket made; yields its URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            requests.get(url + "/moto-api/", timeout=1)
            break
        except requests.RequestException:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start:\n" + log_path.read_text())
            time.sleep(0.1)
    s3(url).create_bucket(Bucket=BUCKET)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(15)


def s3(url: str):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def s3_server(s3_endpoint, tmp_path_factory):
    data = tmp_path_factory.mktemp("s3-server") / "data"
    proc = ServerProcess(data, "--artifacts-uri", f"s3://{BUCKET}/{PREFIX}", "--s3-endpoint-url", s3_endpoint,
                         env=AWS_ENV).start()
    yield proc
    proc.stop()


@pytest.fixture()
def bucket(s3_endpoint):
    return s3(s3_endpoint)


@pytest.fixture()
def tracking(s3_server, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", s3_server.url)
    mlflow.set_tracking_uri(s3_server.url)
    yield mlflow
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture()
def run(tracking):
    tracking.set_experiment(unique("s3"))
    with tracking.start_run() as r:
        yield r


def keys_under(bucket, prefix: str) -> dict[str, int]:
    out = {}
    for page in bucket.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return out


def run_key(run, rel: str = "") -> str:
    base = f"{PREFIX}/{run.info.experiment_id}/{run.info.run_id}/artifacts"
    return f"{base}/{rel}" if rel else base


def test_logged_artifacts_become_objects_under_the_prefix_in_mlflow_layout(tracking, run, bucket, tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("stored in S3\n")
    tracking.log_artifact(str(src), "reports")
    tracking.log_dict({"lr": 0.1}, "config/params.json")
    tracking.log_text("ünïcode", "texts/ünï name.txt")
    assert keys_under(bucket, run_key(run)) == {
        run_key(run, "reports/notes.txt"): 13,
        run_key(run, "config/params.json"): len(b'{\n  "lr": 0.1\n}'),
        run_key(run, "texts/ünï name.txt"): len("ünïcode".encode()),
    }
    body = bucket.get_object(Bucket=BUCKET, Key=run_key(run, "reports/notes.txt"))["Body"].read()
    assert body == b"stored in S3\n"

    rid = run.info.run_id
    assert tracking.artifacts.load_dict(f"runs:/{rid}/config/params.json") == {"lr": 0.1}
    assert tracking.artifacts.load_text(f"runs:/{rid}/texts/ünï name.txt") == "ünïcode"
    client = tracking.MlflowClient()
    assert [(f.path, f.is_dir) for f in client.list_artifacts(rid)] == [
        ("config", True), ("reports", True), ("texts", True)]
    assert [(f.path, f.file_size) for f in client.list_artifacts(rid, "reports")] == [("reports/notes.txt", 13)]
    assert client.list_artifacts(rid, "reports/notes.txt") == []  # a file, not a directory
    out = tracking.artifacts.download_artifacts(run_id=rid, dst_path=str(tmp_path / "all"))
    assert (tmp_path / "all" / "reports" / "notes.txt").read_text() == "stored in S3\n"
    assert os.path.isdir(out)


def test_sklearn_model_logs_to_the_bucket_and_loads_back(tracking, run, bucket):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    info = tracking.sklearn.log_model(LogisticRegression().fit(X, y), name="model", input_example=X[:2])
    model_prefix = f"{PREFIX}/{run.info.experiment_id}/models/{info.model_id}/artifacts/"
    names = {k[len(model_prefix):] for k in keys_under(bucket, model_prefix)}
    assert {"MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt"} <= names
    loaded = tracking.pyfunc.load_model(info.model_uri)
    assert list(loaded.predict(X)) == [0, 0, 1, 1]


def test_raw_api_lists_files_by_name_and_answers_404_for_missing_files(s3_server, bucket):
    base = f"raw/{uuid.uuid4().hex}"
    for name, data in (("a.txt", b"abc"), ("dir/b.bin", b"12345"), ("dir/c/d.txt", b"x")):
        requests.put(s3_server.url + f"{ARTIFACTS}/{base}/{name}", data=data).raise_for_status()
    listed = requests.get(s3_server.url + ARTIFACTS, params={"path": base}).json()
    assert listed == {"files": [{"path": "a.txt", "is_dir": False, "file_size": 3},
                                {"path": "dir", "is_dir": True}]}
    one = requests.get(s3_server.url + ARTIFACTS, params={"path": f"{base}/dir/b.bin"}).json()
    assert one == {"files": [{"path": "b.bin", "is_dir": False, "file_size": 5}]}
    assert requests.get(s3_server.url + ARTIFACTS, params={"path": f"{base}/nothing"}).json() == {}
    got = requests.get(s3_server.url + f"{ARTIFACTS}/{base}/dir/b.bin")
    assert got.content == b"12345" and got.headers["content-length"] == "5"
    assert got.headers["content-disposition"] == 'attachment; filename="b.bin"'
    missing = requests.get(s3_server.url + f"{ARTIFACTS}/{base}/dir/nope")
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    head = requests.head(s3_server.url + f"{ARTIFACTS}/{base}/a.txt")
    assert head.status_code == 200 and head.headers["content-length"] == "3"
    assert set(keys_under(bucket, f"{PREFIX}/{base}/")) == {
        f"{PREFIX}/{base}/a.txt", f"{PREFIX}/{base}/dir/b.bin", f"{PREFIX}/{base}/dir/c/d.txt"}


def test_listing_pages_past_1000_keys_and_deleting_a_directory_removes_every_key(s3_server, bucket):
    base = f"{PREFIX}/bulk-{uuid.uuid4().hex[:8]}"
    keys = [f"{base}/many/f{i:04d}" for i in range(1005)] + [f"{base}/many/sub/deep.txt"]
    survivors = [f"{base}/many-not/x", f"{base}/manyx", f"{base}/keep.txt"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: bucket.put_object(Bucket=BUCKET, Key=k, Body=b"1"), keys + survivors))
    rel = base[len(PREFIX) + 1:]
    listed = requests.get(s3_server.url + ARTIFACTS, params={"path": f"{rel}/many"}).json()["files"]
    assert len(listed) == 1006
    assert listed[-1] == {"path": "sub", "is_dir": True}
    resp = requests.delete(s3_server.url + f"{ARTIFACTS}/{rel}/many")
    assert resp.status_code == 200 and resp.json() == {}
    assert sorted(keys_under(bucket, base + "/")) == sorted(survivors)


def test_deleting_a_single_file_keeps_its_neighbours(s3_server, bucket):
    rel = f"raw/{uuid.uuid4().hex}"
    for name in ("a.txt", "a.txt2", "b.txt"):
        requests.put(s3_server.url + f"{ARTIFACTS}/{rel}/{name}", data=b"x").raise_for_status()
    assert requests.delete(s3_server.url + f"{ARTIFACTS}/{rel}/a.txt").status_code == 200
    assert sorted(keys_under(bucket, f"{PREFIX}/{rel}/")) == [f"{PREFIX}/{rel}/a.txt2", f"{PREFIX}/{rel}/b.txt"]
    assert requests.delete(s3_server.url + f"{ARTIFACTS}/{rel}/never-was").status_code == 200


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
def test_traversal_paths_are_400_and_the_bucket_is_untouched(s3_server, bucket, method):
    bucket.put_object(Bucket=BUCKET, Key="outside-the-prefix.txt", Body=b"keep")
    before = keys_under(bucket, "")
    token = f"pwned-{uuid.uuid4().hex[:8]}"
    for template in [*TRAVERSALS, "../outside-the-prefix.txt", "%2e%2e/%2e%2e/outside-the-prefix.txt"]:
        path = template.format(t=token)
        status, body = raw_request(s3_server, method, f"{ARTIFACTS}/{path}", b"evil" if method == "PUT" else None)
        assert (status, body) == (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid path"}), path
    after = keys_under(bucket, "")
    assert {k: v for k, v in after.items() if k in before} == before
    assert not any(token in k for k in after)


def test_ui_routes_read_run_artifacts_from_the_bucket(s3_server, tracking, run):
    tracking.log_text("for the UI", "ui/f.txt")
    got = requests.get(s3_server.url + "/get-artifact", params={"run_uuid": run.info.run_id, "path": "ui/f.txt"})
    assert got.status_code == 200 and got.text == "for the UI"
    listed = requests.get(s3_server.url + "/api/2.0/mlflow/artifacts/list",
                          params={"run_id": run.info.run_id, "path": "ui"}).json()
    assert listed == {"root_uri": run.info.artifact_uri,
                      "files": [{"path": "ui/f.txt", "is_dir": False, "file_size": 10}]}


S3_BIG = 200 * 1024 * 1024


def test_a_large_artifact_goes_to_s3_in_parts_without_sitting_in_server_memory(s3_server, bucket):
    rel = f"big/{uuid.uuid4().hex[:8]}/blob.bin"
    url = s3_server.url + f"{ARTIFACTS}/{rel}"
    requests.put(url, data=b"warm-up").raise_for_status()
    requests.get(url).raise_for_status()
    baseline = peak_rss(s3_server.proc.pid)

    sent = hashlib.sha256()
    assert requests.put(url, data=_generated_body(S3_BIG, sent)).status_code == 200
    head = bucket.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{rel}")
    assert head["ContentLength"] == S3_BIG
    assert "-" in head["ETag"]  # a multipart upload's ETag: "<md5 of md5s>-<parts>"
    # The spooled copy is gone once the upload is done.
    assert not any((s3_server.data_dir / "tmp").iterdir())

    received = hashlib.sha256()
    with requests.get(url, stream=True) as got:
        assert got.headers["content-length"] == str(S3_BIG)
        for chunk in got.iter_content(BLOCK):
            received.update(chunk)
    assert received.hexdigest() == sent.hexdigest()

    peak = peak_rss(s3_server.proc.pid)
    print(f"server peak RSS {peak / 2**20:.0f} MB (baseline {baseline / 2**20:.0f} MB) for {S3_BIG >> 20} MB via S3")
    # The growth is boto3's part buffers (4 in flight x 8 MB), not the file.
    # What streaming bounds is the growth: the baseline is the server's own imports.
    assert peak - baseline < 64 * 1024 * 1024
    bucket.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{rel}")


def test_a_missing_bucket_is_a_clear_server_error_not_a_traceback(s3_endpoint, fresh_server):
    srv = fresh_server("--artifacts-uri", "s3://no-such-bucket-here/x", "--s3-endpoint-url", s3_endpoint,
                       env=AWS_ENV)
    listed = requests.get(srv.url + ARTIFACTS, params={"path": "a"})
    assert listed.status_code == 500
    assert listed.json() == {"error_code": "INTERNAL_ERROR",
                             "message": "The bucket 'no-such-bucket-here' does not exist."}
    put = requests.put(srv.url + f"{ARTIFACTS}/a/b.txt", data=b"x")
    assert put.status_code == 500 and put.json()["error_code"] == "INTERNAL_ERROR"
    assert "NoSuchBucket" in put.json()["message"]
    assert not any((srv.data_dir / "tmp").iterdir())


def test_an_upload_cut_off_midway_leaves_no_object_and_no_spooled_file(s3_server, bucket):
    from test_artifacts import send_half_an_upload, wait_until

    rel = f"raw/{uuid.uuid4().hex}/cut.bin"
    send_half_an_upload(s3_server, f"{ARTIFACTS}/{rel}", declared=32 * BLOCK, sent=12 * BLOCK)
    assert wait_until(lambda: not any((s3_server.data_dir / "tmp").iterdir()))
    assert keys_under(bucket, f"{PREFIX}/{rel}") == {}
