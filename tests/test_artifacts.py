"""The proxied artifact API on the default backend (a local directory), driven by the real client.

Files land in MLflow's layout under ``<data-dir>/artifacts``; traversal attempts, sent byte for
byte with ``http.client`` (``requests`` would normalise ``..`` away), are refused with 400 and
write nothing anywhere.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import uuid
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings, strategies as st
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from conftest import unique
from modelyard.artifacts import clean_path
from modelyard.errors import MlflowError

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


@pytest.fixture()
def run(tracking):
    tracking.set_experiment(unique("art"))
    with tracking.start_run() as r:
        yield r


def root_of(server) -> Path:
    return server.data_dir / "artifacts"


def run_dir(server, run) -> Path:
    return root_of(server) / run.info.experiment_id / run.info.run_id / "artifacts"


def raw_request(server, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    """Send ``path`` exactly as written: no normalisation of ``..`` or re-encoding."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(data) if data else {}
    except ValueError:
        return resp.status, {"raw": data.decode(errors="replace")}


# --- the client's flow -------------------------------------------------------------------------

def test_log_artifact_lands_in_mlflow_layout_and_downloads_intact(server, tracking, run, tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("accuracy went up\n")
    tracking.log_artifact(str(src), "reports")
    stored = run_dir(server, run) / "reports" / "notes.txt"
    assert stored.read_text() == "accuracy went up\n"
    assert run.info.artifact_uri == f"mlflow-artifacts:/{run.info.experiment_id}/{run.info.run_id}/artifacts"
    got = tracking.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="reports/notes.txt",
                                                dst_path=str(tmp_path / "out"))
    assert Path(got).read_text() == "accuracy went up\n"


def test_log_dict_and_log_text_round_trip_through_the_client(server, tracking, run):
    tracking.log_dict({"layers": [64, 32], "name": "ünïcode"}, "config/model.json")
    tracking.log_text("line one\n", "notes/ünïcode name.txt")
    rid = run.info.run_id
    assert tracking.artifacts.load_dict(f"runs:/{rid}/config/model.json") == {"layers": [64, 32], "name": "ünïcode"}
    assert tracking.artifacts.load_text(f"runs:/{rid}/notes/ünïcode name.txt") == "line one\n"
    assert (run_dir(server, run) / "notes" / "ünïcode name.txt").read_text() == "line one\n"


def test_list_artifacts_gives_run_relative_paths_sizes_and_directories(client, tracking, run):
    tracking.log_text("abc", "a.txt")
    tracking.log_text("hello", "dir/b.txt")
    tracking.log_text("x", "dir/sub/c.txt")
    rid = run.info.run_id
    top = client.list_artifacts(rid)
    assert [(f.path, f.is_dir, f.file_size) for f in top] == [("a.txt", False, 3), ("dir", True, None)]
    inner = client.list_artifacts(rid, "dir")
    assert [(f.path, f.is_dir, f.file_size) for f in inner] == [("dir/b.txt", False, 5), ("dir/sub", True, None)]


def test_listing_a_file_is_recognised_by_the_client_as_a_file(server, client, tracking, run):
    tracking.log_text("hello", "dir/b.txt")
    assert client.list_artifacts(run.info.run_id, "dir/b.txt") == []
    path = f"{run.info.experiment_id}/{run.info.run_id}/artifacts/dir/b.txt"
    resp = requests.get(server.url + ARTIFACTS, params={"path": path})
    assert resp.status_code == 200
    assert resp.json() == {"files": [{"path": "b.txt", "is_dir": False, "file_size": 5}]}


def test_listing_a_missing_directory_returns_no_files(server):
    resp = requests.get(server.url + ARTIFACTS, params={"path": f"no/such/{uuid.uuid4().hex}"})
    assert resp.status_code == 200 and resp.json() == {}


def test_download_artifacts_of_a_directory_fetches_every_file(tracking, run, tmp_path):
    for name in ("d/one.txt", "d/two.txt", "d/deeper/three.txt"):
        tracking.log_text(name, name)
    out = Path(tracking.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="d",
                                                     dst_path=str(tmp_path)))
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.txt")) == [
        "deeper/three.txt", "one.txt", "two.txt"]
    assert (out / "deeper" / "three.txt").read_text() == "d/deeper/three.txt"


def test_sklearn_model_logs_to_models_layout_and_loads_back(server, tracking, run):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    info = tracking.sklearn.log_model(LogisticRegression().fit(X, y), name="model", input_example=X[:2])
    model_dir = root_of(server) / run.info.experiment_id / "models" / info.model_id / "artifacts"
    assert {"MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt"} <= {p.name for p in model_dir.iterdir()}
    loaded = tracking.pyfunc.load_model(info.model_uri)
    assert list(loaded.predict(X)) == [0, 0, 1, 1]


def test_delete_artifacts_removes_a_directory_and_everything_under_it(server, tracking, run):
    tracking.log_text("1", "keep.txt")
    tracking.log_text("2", "gone/a.txt")
    tracking.log_text("3", "gone/deep/b.txt")
    tracking.log_text("4", "gone-not/c.txt")  # shares the prefix "gone", must survive
    get_artifact_repository(run.info.artifact_uri).delete_artifacts("gone")
    base = run_dir(server, run)
    assert not (base / "gone").exists()
    assert (base / "keep.txt").read_text() == "1" and (base / "gone-not" / "c.txt").read_text() == "4"


def test_deleting_a_missing_path_succeeds_and_changes_nothing(server, tracking, run):
    tracking.log_text("1", "keep.txt")
    resp = requests.delete(server.url + f"{ARTIFACTS}/{run.info.experiment_id}/{run.info.run_id}/artifacts/nothing")
    assert resp.status_code == 200 and resp.json() == {}
    assert [p.name for p in run_dir(server, run).iterdir()] == ["keep.txt"]


def test_deleting_the_artifact_root_is_refused(server):
    before = sorted(p.name for p in root_of(server).iterdir())
    status, body = raw_request(server, "DELETE", ARTIFACTS + "/")
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert sorted(p.name for p in root_of(server).iterdir()) == before


# --- the raw API ---------------------------------------------------------------------------------

def test_put_then_get_streams_bytes_with_type_length_and_attachment(server):
    path = f"raw/{uuid.uuid4().hex}/page.html"
    payload = b"<script>alert(1)</script>"
    put = requests.put(server.url + f"{ARTIFACTS}/{path}", data=payload, headers={"Content-Type": "text/html"})
    assert put.status_code == 200 and put.json() == {}
    got = requests.get(server.url + f"{ARTIFACTS}/{path}")
    assert got.status_code == 200 and got.content == payload
    assert got.headers["content-type"].startswith("text/html")
    assert got.headers["content-length"] == str(len(payload))
    # Never rendered on the server's origin.
    assert got.headers["content-disposition"] == 'attachment; filename="page.html"'
    assert got.headers["x-content-type-options"] == "nosniff"
    head = requests.head(server.url + f"{ARTIFACTS}/{path}")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(payload)) and head.content == b""
    assert (root_of(server) / path).read_bytes() == payload


def test_mlmodel_and_yaml_are_served_as_text(server):
    base = f"raw/{uuid.uuid4().hex}"
    for name in ("MLmodel", "conda.yaml", "model.pkl"):
        requests.put(server.url + f"{ARTIFACTS}/{base}/{name}", data=b"x").raise_for_status()
    types = {n: requests.get(server.url + f"{ARTIFACTS}/{base}/{n}").headers["content-type"]
             for n in ("MLmodel", "conda.yaml", "model.pkl")}
    assert types["MLmodel"].startswith("text/plain") and types["conda.yaml"].startswith("text/plain")
    assert types["model.pkl"] == "application/octet-stream"


def test_put_overwrites_an_existing_file_whole(server):
    path = f"raw/{uuid.uuid4().hex}/f.bin"
    requests.put(server.url + f"{ARTIFACTS}/{path}", data=b"a" * 100).raise_for_status()
    requests.put(server.url + f"{ARTIFACTS}/{path}", data=b"b" * 10).raise_for_status()
    assert requests.get(server.url + f"{ARTIFACTS}/{path}").content == b"b" * 10
    # No temporary upload file is left beside it.
    assert [p.name for p in (root_of(server) / path).parent.iterdir()] == ["f.bin"]


def test_empty_file_round_trips(server):
    path = f"raw/{uuid.uuid4().hex}/empty"
    requests.put(server.url + f"{ARTIFACTS}/{path}", data=b"").raise_for_status()
    got = requests.get(server.url + f"{ARTIFACTS}/{path}")
    assert got.status_code == 200 and got.content == b"" and got.headers["content-length"] == "0"


def test_download_of_a_missing_file_is_404_resource_does_not_exist(server):
    resp = requests.get(server.url + f"{ARTIFACTS}/raw/{uuid.uuid4().hex}/missing.txt")
    assert resp.status_code == 404 and resp.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_client_download_of_a_missing_file_raises(tracking, run, tmp_path):
    with pytest.raises(MlflowException) as err:
        tracking.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="nope.txt",
                                              dst_path=str(tmp_path))
    assert "Failed to download artifacts from path 'nope.txt'" in str(err.value)


def test_download_of_a_directory_is_400_and_put_onto_a_directory_is_400(server):
    base = f"raw/{uuid.uuid4().hex}"
    requests.put(server.url + f"{ARTIFACTS}/{base}/dir/f.txt", data=b"x").raise_for_status()
    got = requests.get(server.url + f"{ARTIFACTS}/{base}/dir")
    assert got.status_code == 400 and got.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    put = requests.put(server.url + f"{ARTIFACTS}/{base}/dir", data=b"y")
    assert put.status_code == 400
    assert (root_of(server) / base / "dir" / "f.txt").read_bytes() == b"x"


def test_put_below_an_existing_file_is_400(server):
    base = f"raw/{uuid.uuid4().hex}"
    requests.put(server.url + f"{ARTIFACTS}/{base}/f", data=b"x").raise_for_status()
    resp = requests.put(server.url + f"{ARTIFACTS}/{base}/f/g", data=b"y")
    assert resp.status_code == 400 and resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert (root_of(server) / base / "f").read_bytes() == b"x"


def test_names_with_dots_spaces_percent_and_unicode_are_ordinary_files(server):
    base = f"raw/{uuid.uuid4().hex}"
    names = ["a..b.txt", "...", "with space.txt", "100%.txt", "ünï.txt", ".hidden"]
    for name in names:
        requests.put(server.url + f"{ARTIFACTS}/{base}/{name}", data=name.encode()).raise_for_status()
    for name in names:
        assert requests.get(server.url + f"{ARTIFACTS}/{base}/{name}").content == name.encode()
    listed = requests.get(server.url + ARTIFACTS, params={"path": base}).json()["files"]
    assert sorted(f["path"] for f in listed) == sorted(names)
    assert sorted(p.name for p in (root_of(server) / base).iterdir()) == sorted(names)


def test_a_name_too_long_for_the_filesystem_is_400(server):
    resp = requests.put(server.url + f"{ARTIFACTS}/raw/{'n' * 300}", data=b"x")
    assert resp.status_code == 400 and resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_the_ajax_prefix_serves_the_same_artifacts(server):
    path = f"raw/{uuid.uuid4().hex}/f.txt"
    requests.put(server.url + f"/ajax-api/2.0/mlflow-artifacts/artifacts/{path}", data=b"via ajax").raise_for_status()
    assert requests.get(server.url + f"{ARTIFACTS}/{path}").content == b"via ajax"
    listed = requests.get(server.url + "/ajax-api/2.0/mlflow-artifacts/artifacts",
                          params={"path": path.rsplit("/", 1)[0]}).json()
    assert listed == {"files": [{"path": "f.txt", "is_dir": False, "file_size": 8}]}


# --- multipart and presigned are off ------------------------------------------------------------

@pytest.mark.parametrize("action", ["create", "complete", "abort"])
def test_multipart_routes_answer_501_with_the_message_the_client_falls_back_on(server, action):
    resp = requests.post(server.url + f"/api/2.0/mlflow-artifacts/mpu/{action}/0/x/artifacts/f.bin",
                         json={"path": "f.bin", "num_parts": 2})
    assert resp.status_code == 501
    assert resp.json() == {"error_code": "NOT_IMPLEMENTED", "message": (
        "Multipart upload is not supported for the current artifact repository")}


def test_forced_multipart_upload_falls_back_to_a_single_put(server, tracking, run, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", "1")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4096))
    tracking.log_artifact(str(src))
    assert (run_dir(server, run) / "big.bin").read_bytes() == src.read_bytes()


def test_presigned_download_answers_501(server):
    resp = requests.get(server.url + "/api/2.0/mlflow-artifacts/presigned/0/x/artifacts/f.bin")
    assert resp.status_code == 501 and resp.json()["error_code"] == "NOT_IMPLEMENTED"


# --- the UI's routes -----------------------------------------------------------------------------

def test_get_artifact_by_run_downloads_the_file(server, tracking, run):
    tracking.log_text("for the UI", "ui/f.txt")
    resp = requests.get(server.url + "/get-artifact", params={"run_uuid": run.info.run_id, "path": "ui/f.txt"})
    assert resp.status_code == 200 and resp.text == "for the UI"
    assert resp.headers["content-disposition"] == 'attachment; filename="f.txt"'


def test_get_artifact_of_an_unknown_run_is_404(server):
    resp = requests.get(server.url + "/get-artifact", params={"run_uuid": uuid.uuid4().hex, "path": "f.txt"})
    assert resp.status_code == 404 and resp.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_artifacts_list_endpoint_lists_a_run_with_its_root_uri(server, api, tracking, run):
    tracking.log_text("abc", "a.txt")
    tracking.log_text("hello", "dir/b.txt")
    resp = api.get("/artifacts/list", params={"run_id": run.info.run_id})
    assert resp.status_code == 200
    assert resp.json() == {"root_uri": run.info.artifact_uri, "files": [
        {"path": "a.txt", "is_dir": False, "file_size": 3}, {"path": "dir", "is_dir": True}]}
    inner = api.get("/artifacts/list", params={"run_uuid": run.info.run_id, "path": "dir"}).json()
    assert inner["files"] == [{"path": "dir/b.txt", "is_dir": False, "file_size": 5}]
    ajax = requests.get(server.url + "/ajax-api/2.0/mlflow/artifacts/list", params={"run_id": run.info.run_id})
    assert ajax.json() == resp.json()


def test_artifacts_list_of_an_unknown_run_is_404(api):
    resp = api.get("/artifacts/list", params={"run_id": uuid.uuid4().hex})
    assert resp.status_code == 404 and resp.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_ui_upload_artifact_stores_a_small_file_in_the_run(server, run):
    url = server.url + "/ajax-api/2.0/mlflow/upload-artifact"
    resp = requests.post(url, params={"run_uuid": run.info.run_id, "path": "uploads/u.txt"}, data=b"from the UI")
    assert resp.status_code == 200
    assert (run_dir(server, run) / "uploads" / "u.txt").read_bytes() == b"from the UI"


def test_ui_upload_artifact_over_10mb_is_400_and_stores_nothing(server, run):
    url = server.url + "/ajax-api/2.0/mlflow/upload-artifact"
    resp = requests.post(url, params={"run_uuid": run.info.run_id, "path": "big.bin"},
                         data=b"\0" * (10 * 1024 * 1024 + 1))
    assert resp.status_code == 400 and "too large" in resp.json()["message"]
    empty = requests.post(url, params={"run_uuid": run.info.run_id, "path": "empty.bin"}, data=b"")
    assert empty.status_code == 400
    assert not run_dir(server, run).exists() or not any(run_dir(server, run).iterdir())


def test_model_version_get_artifact_serves_the_registered_models_files(server, client, tracking, run):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    name = unique("mv-art")
    X, y = np.array([[0.0], [1.0]]), np.array([0, 1])
    tracking.sklearn.log_model(LogisticRegression().fit(X, y), name="model", registered_model_name=name)
    resp = requests.get(server.url + "/model-versions/get-artifact",
                        params={"name": name, "version": "1", "path": "MLmodel"})
    assert resp.status_code == 200 and "flavors:" in resp.text
    missing = requests.get(server.url + "/model-versions/get-artifact",
                           params={"name": name, "version": "9", "path": "MLmodel"})
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    bad = requests.get(server.url + "/model-versions/get-artifact",
                       params={"name": name, "version": "1", "path": "../../../MLmodel"})
    assert bad.status_code == 400 and bad.json() == {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid path"}


# --- traversal -----------------------------------------------------------------------------------

TRAVERSALS = [
    "../{t}",
    "0/../../{t}",
    "a/b/../../../{t}",
    "%2e%2e/{t}",
    "%2E%2E%2F{t}",
    "..%2f..%2f{t}",
    "%252e%252e%252f{t}",
    "%25252e%25252e/{t}",
    "..%5c{t}",
    "a%5c..%5c..%5c{t}",
    "%00{t}",
    "{t}%00.txt",
    "/tmp/{t}",
    "%2Ftmp%2F{t}",
    "%252Ftmp%252F{t}",
    "C:/{t}",
    "a/%0a{t}",
]


def _no_file_named(token: str, *roots: Path) -> bool:
    for root in roots:
        for _dir, dirs, files in os.walk(root):
            if any(token in name for name in files + dirs):
                return False
    return True


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
def test_traversal_paths_are_400_invalid_path_and_write_nothing(server, method):
    token = f"pwned-{uuid.uuid4().hex[:8]}"
    before = sorted(str(p) for p in server.data_dir.parent.rglob("*") if "pwned" not in p.name)
    for template in TRAVERSALS:
        path = template.format(t=token)
        status, body = raw_request(server, method, f"{ARTIFACTS}/{path}", b"evil" if method == "PUT" else None)
        assert (status, body) == (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid path"}), path
        for prefix in ("/ajax-api/2.0/mlflow-artifacts/artifacts/",):
            status, _ = raw_request(server, method, prefix + path, b"evil" if method == "PUT" else None)
            assert status == 400, prefix + path
    # Nothing named after the token anywhere near the root: not in it, not in its ancestors, not in /tmp.
    root = root_of(server)
    assert _no_file_named(token, server.data_dir.parents[1])
    assert all(not (a / token).exists() for a in [*root.parents, Path("/tmp")])
    after = sorted(str(p) for p in server.data_dir.parent.rglob("*") if "pwned" not in p.name)
    assert set(after) >= set(before)  # nothing deleted either (other tests may add files meanwhile)


@pytest.mark.parametrize("path", ["..", "../", "a/../..", "%2e%2e", "%252e%252e", "/etc", "..\\x", "a\x00b"])
def test_listing_a_traversal_path_is_400(server, path):
    resp = requests.get(server.url + ARTIFACTS, params={"path": path})
    assert resp.status_code == 400
    assert resp.json() == {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid path"}


def test_ui_routes_refuse_traversal_paths(server, api, tracking, run):
    rid = run.info.run_id
    for path in ("../../../../etc/passwd", "%2e%2e/%2e%2e/x", "/etc/passwd"):
        got = requests.get(server.url + "/get-artifact", params={"run_uuid": rid, "path": path})
        assert got.status_code == 400 and got.json()["message"] == "Invalid path"
        listed = api.get("/artifacts/list", params={"run_id": rid, "path": path})
        assert listed.status_code == 400 and listed.json()["message"] == "Invalid path"
        up = requests.post(server.url + "/ajax-api/2.0/mlflow/upload-artifact",
                           params={"run_uuid": rid, "path": path}, data=b"evil")
        assert up.status_code == 400
    assert not run_dir(server, run).exists() or not any(run_dir(server, run).rglob("*"))


def test_a_symlink_inside_the_root_cannot_lead_outside_it(server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    link_parent = root_of(server) / "links" / uuid.uuid4().hex
    link_parent.mkdir(parents=True)
    (link_parent / "escape").symlink_to(outside, target_is_directory=True)
    rel = link_parent.relative_to(root_of(server)).as_posix()
    got = requests.get(server.url + f"{ARTIFACTS}/{rel}/escape/secret.txt")
    assert got.status_code == 400 and "secret" not in got.text
    put = requests.put(server.url + f"{ARTIFACTS}/{rel}/escape/planted.txt", data=b"evil")
    assert put.status_code == 400
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


# --- clean_path itself ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "..", "a/..", "../a", "a/../../b", "/abs", "%2e%2e", "%2E%2e/x", "%252e%252e", "%25252e%25252e",
    "a%2f..%2f..", "%2fetc", "a\\b", "%5c", "a\x00", "%00", "C:/x", "c:x", "a\nb", "%0d",
])
def test_clean_path_rejects(path):
    with pytest.raises(MlflowError) as err:
        clean_path(path)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE" and err.value.message == "Invalid path"


@pytest.mark.parametrize("path, cleaned", [
    (None, ""), ("", ""), ("a/b", "a/b"), ("a//b/", "a/b"), ("./a/./b", "a/b"), ("a..b", "a..b"),
    ("...", "..."), ("100%", "100%"), ("a%20b", "a%20b"), ("ünï", "ünï"),
])
def test_clean_path_accepts_and_normalises(path, cleaned):
    assert clean_path(path) == cleaned


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab./\\%2eEfF5c0:\x00")), max_size=24))
def test_any_path_clean_path_accepts_stays_inside_the_root(path):
    root = Path("/srv/artifacts")
    try:
        cleaned = clean_path(path)
    except MlflowError:
        return
    from urllib.parse import unquote

    # However many times a later component decodes it, it resolves inside the root.
    level = cleaned
    for _ in range(4):
        resolved = Path(os.path.normpath(root / level))
        assert resolved == root or root in resolved.parents, (path, level)
        level = unquote(level)


# --- streaming -----------------------------------------------------------------------------------

BIG = 300 * 1024 * 1024
BLOCK = 1024 * 1024


def _generated_body(size: int, digest):
    """``size`` bytes made on the fly, hashed as they go: the test never holds the file either."""
    seed = os.urandom(BLOCK)
    for i in range(size // BLOCK):
        block = i.to_bytes(8, "little") + seed[8:]
        digest.update(block)
        yield block


def peak_rss(pid: int) -> int:
    """VmHWM: the most resident memory the process has ever had, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_300mb_artifact_streams_up_and_down_without_sitting_in_server_memory(fresh_server):
    srv = fresh_server()
    url = srv.url + f"{ARTIFACTS}/0/big/artifacts/blob.bin"
    requests.put(url, data=b"warm-up").raise_for_status()
    baseline = peak_rss(srv.proc.pid)

    sent = hashlib.sha256()
    resp = requests.put(url, data=_generated_body(BIG, sent))  # chunked transfer encoding
    assert resp.status_code == 200
    assert (srv.data_dir / "artifacts" / "0" / "big" / "artifacts" / "blob.bin").stat().st_size == BIG

    received = hashlib.sha256()
    total = 0
    with requests.get(url, stream=True) as got:
        assert got.status_code == 200 and got.headers["content-length"] == str(BIG)
        for chunk in got.iter_content(BLOCK):
            received.update(chunk)
            total += len(chunk)
    assert total == BIG and received.hexdigest() == sent.hexdigest()

    peak = peak_rss(srv.proc.pid)
    print(f"server peak RSS {peak / 2**20:.0f} MB (baseline {baseline / 2**20:.0f} MB) for a {BIG >> 20} MB file")
    # What streaming bounds is the growth: the baseline is the server's own imports.
    assert peak - baseline < 64 * 1024 * 1024


@pytest.mark.parametrize("template", ["../{f}", "%2e%2e/{f}", "%252e%252e%252f{f}", "..%2f{f}", "x/../../{f}",
                                      "%2e%2e%5c{f}"])
def test_traversal_cannot_read_or_delete_a_file_next_to_the_root(server, template):
    sentinel = server.data_dir / f"sentinel-{uuid.uuid4().hex[:8]}.txt"  # beside <data-dir>/artifacts
    sentinel.write_text("keep me")
    path = f"{ARTIFACTS}/{template.format(f=sentinel.name)}"
    status, body = raw_request(server, "GET", path)
    assert status == 400 and body == {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid path"}
    status, _ = raw_request(server, "DELETE", path)
    assert status == 400
    status, _ = raw_request(server, "PUT", path, b"overwritten")
    assert status == 400
    assert sentinel.read_text() == "keep me"


def send_half_an_upload(server, path: str, declared: int = 8 * BLOCK, sent: int = BLOCK) -> None:
    """A PUT that promises ``declared`` bytes, sends ``sent`` and hangs up, as a crashed client does."""
    import socket
    import time

    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode())
        sock.sendall(b"x" * sent)
        time.sleep(0.3)


def wait_until(condition, timeout: float = 10) -> bool:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_an_upload_cut_off_midway_leaves_no_file_behind(server):
    rel = f"raw/{uuid.uuid4().hex}/cut.bin"
    send_half_an_upload(server, f"{ARTIFACTS}/{rel}")
    folder = root_of(server) / rel.rsplit("/", 1)[0]
    assert wait_until(lambda: not folder.exists() or not any(folder.iterdir())), list(folder.iterdir())
    assert requests.get(server.url + f"{ARTIFACTS}/{rel}").status_code == 404


# --- auth and projects ---------------------------------------------------------------------------

def admin_cli(server, *args: str) -> str:
    """``modelyard admin ...`` on the server's database; returns its output."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "modelyard", "admin", *args, "--data-dir", str(server.data_dir)],
                          capture_output=True, text=True, timeout=60, env=server.env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def new_token(server, *args: str) -> dict:
    return {"Authorization": "Bearer " + admin_cli(server, *args).strip().splitlines()[-1]}


def test_with_auth_artifacts_need_a_token_and_the_role_for_the_method(fresh_server):
    srv = fresh_server("--auth")
    root = new_token(srv, "create-user", "root", "--admin")
    dev = new_token(srv, "create-user", "dev")
    admin_cli(srv, "add-member", "default", "dev", "developer")
    guest = new_token(srv, "create-user", "guest")
    admin_cli(srv, "add-member", "default", "guest", "guest")
    url = srv.url + f"{ARTIFACTS}/0/r1/artifacts/f.txt"

    anonymous = requests.put(url, data=b"x")
    assert anonymous.status_code == 401 and anonymous.json()["error_code"] == "UNAUTHENTICATED"
    assert requests.put(url, data=b"x", headers=guest).status_code == 403
    assert not (srv.data_dir / "artifacts" / "0" / "r1").exists()
    assert requests.put(url, data=b"by dev", headers=dev).status_code == 200
    assert requests.get(url).status_code == 401
    assert requests.get(url, headers=guest).content == b"by dev"
    listed = requests.get(srv.url + ARTIFACTS, params={"path": "0/r1/artifacts"}, headers=guest)
    assert listed.json()["files"] == [{"path": "f.txt", "is_dir": False, "file_size": 6}]
    # Deleting needs a maintainer; a developer may write but not delete.
    assert requests.delete(url, headers=dev).status_code == 403
    assert (srv.data_dir / "artifacts" / "0" / "r1" / "artifacts" / "f.txt").read_bytes() == b"by dev"
    assert requests.delete(url, headers=root).status_code == 200
    assert not (srv.data_dir / "artifacts" / "0" / "r1" / "artifacts" / "f.txt").exists()
    # A path outside every experiment belongs to the administrator alone.
    outside = srv.url + f"{ARTIFACTS}/shared/f.txt"
    assert requests.put(outside, data=b"x", headers=dev).status_code == 403
    assert requests.get(srv.url + ARTIFACTS, headers=dev).status_code == 403
    assert requests.put(outside, data=b"x", headers=root).status_code == 200

    import sqlite3
    import time

    time.sleep(0.5)  # the audit log is written in batches every 200 ms
    with sqlite3.connect(srv.data_dir / "modelyard.db") as conn:
        events = conn.execute("SELECT actor, status, object_id FROM audit_events WHERE object_type = 'artifact' "
                              "ORDER BY time_ms").fetchall()
    assert ("dev", 200, "0/r1/artifacts/f.txt") in events and ("root", 200, "shared/f.txt") in events
    assert ("guest", 403, "0/r1/artifacts/f.txt") in events


def test_artifacts_of_one_project_are_missing_from_another(fresh_server):
    srv = fresh_server("--auth")
    root = new_token(srv, "create-user", "root", "--admin")
    bob = new_token(srv, "create-user", "bob")
    admin_cli(srv, "create-project", "team-b", "--owner", "bob")
    # An experiment and run of the default project, with a file.
    exp = requests.post(srv.url + "/api/2.0/mlflow/experiments/create", json={"name": unique("a")},
                        headers=root).json()["experiment_id"]
    run = requests.post(srv.url + "/api/2.0/mlflow/runs/create", json={"experiment_id": exp},
                        headers=root).json()["run"]["info"]
    path = f"{exp}/{run['run_id']}/artifacts/secret.txt"
    assert requests.put(srv.url + f"{ARTIFACTS}/{path}", data=b"default's", headers=root).status_code == 200

    # bob owns team-b, and reaches default's artifacts neither through team-b nor directly.
    via_b = requests.get(srv.url + f"/p/team-b{ARTIFACTS}/{path}", headers=bob)
    assert via_b.status_code == 404 and via_b.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert requests.put(srv.url + f"/p/team-b{ARTIFACTS}/{path}", data=b"overwrite", headers=bob).status_code == 404
    assert requests.delete(srv.url + f"/p/team-b{ARTIFACTS}/{path}", headers=bob).status_code == 404
    assert requests.get(srv.url + f"{ARTIFACTS}/{path}", headers=bob).status_code == 403
    by_run = requests.get(srv.url + "/p/team-b/get-artifact", params={"run_uuid": run["run_id"], "path": "secret.txt"},
                          headers=bob)
    assert by_run.status_code == 404
    listed = requests.get(srv.url + "/p/team-b/api/2.0/mlflow/artifacts/list", params={"run_id": run["run_id"]},
                          headers=bob)
    assert listed.status_code == 404
    assert (srv.data_dir / "artifacts" / path).read_bytes() == b"default's"

    # team-b's own runs work through its prefix, in its own experiment's folder.
    b_exp = requests.post(srv.url + "/p/team-b/api/2.0/mlflow/experiments/create", json={"name": "mine"},
                          headers=bob).json()["experiment_id"]
    b_run = requests.post(srv.url + "/p/team-b/api/2.0/mlflow/runs/create", json={"experiment_id": b_exp},
                          headers=bob).json()["run"]["info"]
    b_path = f"{b_exp}/{b_run['run_id']}/artifacts/ours.txt"
    assert requests.put(srv.url + f"/p/team-b{ARTIFACTS}/{b_path}", data=b"b's", headers=bob).status_code == 200
    got = requests.get(srv.url + "/p/team-b/get-artifact", params={"run_uuid": b_run["run_id"], "path": "ours.txt"},
                       headers=bob)
    assert got.status_code == 200 and got.content == b"b's"


def test_an_upload_over_max_artifact_body_is_400_and_leaves_nothing(fresh_server):
    srv = fresh_server("--max-artifact-body", "1000")
    root = srv.data_dir / "artifacts"
    declared = requests.put(srv.url + f"{ARTIFACTS}/0/r/artifacts/declared/big.bin", data=b"x" * 1001)
    assert declared.status_code == 400 and "limit of 1000 bytes" in declared.json()["message"]

    def chunked():  # no Content-Length: the limit is met mid-stream
        for _ in range(4):
            yield b"y" * 500

    streamed = requests.put(srv.url + f"{ARTIFACTS}/0/r/artifacts/streamed/big.bin", data=chunked())
    assert streamed.status_code == 400 and streamed.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    # Not a file, not a folder, not a staged leftover.
    assert [p.name for p in root.iterdir()] == [".modelyard-uploads"]
    assert not any((root / ".modelyard-uploads").iterdir())
    assert requests.put(srv.url + f"{ARTIFACTS}/0/r/artifacts/ok.bin", data=b"z" * 1000).status_code == 200
    assert (root / "0" / "r" / "artifacts" / "ok.bin").stat().st_size == 1000


def test_the_staging_folder_is_hidden_and_reserved(server):
    listed = requests.get(server.url + ARTIFACTS).json().get("files", [])
    assert ".modelyard-uploads" not in [f["path"] for f in listed]
    resp = requests.put(server.url + f"{ARTIFACTS}/.modelyard-uploads/x.part", data=b"x")
    assert resp.status_code == 400
