"""``modelyard serve`` answering MLflow's scoring protocol and the V2 inference protocol.

Real processes: a modelyard server, models logged and registered through the real ``mlflow``
client, and ``modelyard serve`` started against the server; requests over HTTP.
"""
from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import requests
from sklearn.datasets import load_iris

from conftest import ServerProcess, unique
from test_serving_support import ECHO_MODEL, Registry, ServeProcess, metric, wait_for

X, Y = load_iris(return_X_y=True)
FRAME = load_iris(as_frame=True).data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serving")
    server = ServerProcess(workdir / "data").start()
    yield Registry(server, workdir)
    server.stop()


@pytest.fixture(scope="module")
def iris(registry):
    """models:/<iris>@champion served, with the sklearn model it serves for reference answers."""
    import mlflow.sklearn

    name = unique("iris")
    version = registry.iris(name)
    registry.set_alias(name, "champion", version)
    serve = ServeProcess(registry.workdir, registry.url, f"models:/{name}@champion", "--poll-interval", "1").start()
    serve.model_name = name
    serve.sklearn = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def frame(registry):
    import mlflow.sklearn

    name = unique("frame")
    version = registry.frame_model(name)
    serve = ServeProcess(registry.workdir, registry.url, f"models:/{name}/{version}").start()
    serve.model_name = name
    serve.sklearn = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def echo(registry):
    """A python_function model from code: rows times params['scale'], batches of at most 8 rows."""
    name = unique("echo")
    version = registry.code_model(name, ECHO_MODEL)
    serve = ServeProcess(registry.workdir, registry.url, f"models:/{name}/{version}", "--max-batch-rows", "8",
                         "--request-timeout", "1", "--max-body-bytes", "100000").start()
    serve.model_name = name
    yield serve
    serve.stop()


def predictions(response):
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


# -- MLflow's scoring protocol ----------------------------------------------------------------------
def test_a_tensor_model_answers_row_lists_under_inputs_and_instances_as_sklearn_does(iris):
    rows = X[::15]
    expected = iris.sklearn.predict(rows).tolist()
    for key in ("inputs", "instances"):
        r = iris.invoke({key: rows.tolist()})
        assert predictions(r) == expected
        assert r.headers["x-model-version"] == "1"
        assert r.headers["content-type"] == "application/json"
    # Integers become the signature's float64, as MLflow's parser makes them.
    assert predictions(iris.invoke({"inputs": [[5, 3, 1, 0]]})) == iris.sklearn.predict([[5.0, 3.0, 1.0, 0.0]]).tolist()


def test_a_column_model_answers_every_mlflow_input_format_with_the_same_predictions(frame):
    rows = FRAME.iloc[::10].reset_index(drop=True)
    expected = frame.sklearn.predict(rows).tolist()
    split = json.loads(rows.to_json(orient="split", index=False))
    bodies = {
        "dataframe_split": {"dataframe_split": split},
        "dataframe_split with index": {"dataframe_split": json.loads(rows.to_json(orient="split"))},
        "dataframe_records": {"dataframe_records": rows.to_dict(orient="records")},
        "instances": {"instances": rows.to_dict(orient="records")},
        "inputs (columns)": {"inputs": rows.to_dict(orient="list")},
    }
    for what, body in bodies.items():
        assert predictions(frame.invoke(body)) == expected, what
    assert predictions(frame.invoke(data=rows.to_csv(index=False).encode(), content_type="text/csv")) == expected
    buf = io.BytesIO()
    rows.to_parquet(buf)
    assert predictions(frame.invoke(data=buf.getvalue(), content_type="application/vnd.apache.parquet")) == expected
    charset = frame.invoke(data=json.dumps(bodies["dataframe_records"]).encode(),
                           content_type="application/json; charset=UTF-8")
    assert predictions(charset) == expected


@pytest.mark.parametrize("data, content_type, status, check", [
    (b"[1, 2]", "application/json", 400, "The input must be a JSON dictionary with exactly one of the input fields"),
    (b'{"foo": 1}', "application/json", 400, "The input must be a JSON dictionary with exactly one of the input fields"),
    (b'{"inputs": [[1,2,3,4]], "instances": [[1,2,3,4]]}', "application/json", 400, "exactly one of the input fields"),
    (b'{"inputs": [[1, 2', "application/json", 400, "Ensure that input is a valid JSON formatted string"),
    (b'{"inputs": [[1, 2, 3]]}', "application/json", 400, "does not match expected shape"),
    (b'{"inputs": [["a", "b", "c", "d"]]}', "application/json", 400, None),
    (b"a,b\n1,2", "text/plain", 415, "This predictor only supports the following content types"),
    (b'{"inputs": [[1,2,3,4]]}', "application/json; charset=latin-1", 415, "only supports UTF-8"),
    (b'{"inputs": [[1,2,3,4]]}', "application/json; format=pandas-split", 415, "Unrecognized content type parameters"),
    (b'{"inputs": [[1,2,3,4]]}', "", 415, "This predictor only supports the following content types"),
])
def test_a_bad_body_gets_mlflows_status_and_error_shape(iris, data, content_type, status, check):
    headers = {"Content-Type": content_type} if content_type else {}
    r = requests.post(iris.url + "/invocations", data=data, headers=headers, timeout=30)
    assert r.status_code == status, r.text
    if status == 415:
        assert r.headers["content-type"].startswith("text/plain")
        assert check in r.text
        return
    err = r.json()
    assert err["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE")
    if check:
        assert check in err["message"]
    assert predictions(iris.invoke({"inputs": X[:1].tolist()})) == iris.sklearn.predict(X[:1]).tolist()


def test_ping_health_version_and_unknown_routes(iris):
    for path in ("/ping", "/health"):
        r = iris.get(path)
        assert (r.status_code, r.text) == (200, "\n")
    import mlflow

    assert iris.get("/version").text == mlflow.__version__
    assert iris.get("/invocations").status_code == 405
    missing = iris.get("/nope")
    assert missing.status_code == 404 and missing.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_a_body_over_the_limit_is_refused_with_413(echo):
    r = echo.invoke({"inputs": [[1.0, 2.0, 3.0]] * 10_000})
    assert r.status_code == 413 and "exceeds the limit of 100000 bytes" in r.json()["message"]
    assert predictions(echo.invoke({"inputs": [[1, 2, 3]]})) == [[1.0, 2.0, 3.0]]


# -- batching ---------------------------------------------------------------------------------------
def test_params_reach_the_model_and_requests_with_other_params_are_never_merged(echo):
    def call(i):
        scale = 1 + i % 3
        return scale, i, predictions(echo.invoke({"inputs": [[i, i + 1, i + 2]], "params": {"scale": scale}}))

    with ThreadPoolExecutor(12) as pool:
        for scale, i, got in pool.map(call, range(90)):
            assert got == [[scale * i, scale * (i + 1), scale * (i + 2)]]


def test_concurrent_requests_share_model_calls_and_each_caller_gets_its_own_rows(echo):
    before = echo.metrics()
    calls_before = metric(before, "modelyard_serving_batch_rows_count")
    answered_before = metric(before, "modelyard_serving_requests_total", status="200")
    barrier = threading.Barrier(16)

    def worker(w):
        barrier.wait()
        out = []
        for j in range(15):
            n = 1 + (w + j) % 3  # 1 to 3 rows per request
            rows = [[w, j, k] for k in range(n)]
            out.append((rows, predictions(echo.invoke({"inputs": rows}))))
        return out

    with ThreadPoolExecutor(16) as pool:
        results = [pair for chunk in pool.map(worker, range(16)) for pair in chunk]
    for rows, got in results:
        assert got == [[float(v) for v in r] for r in rows]
    after = echo.metrics()
    requests_done = metric(after, "modelyard_serving_requests_total", status="200") - answered_before
    calls = metric(after, "modelyard_serving_batch_rows_count") - calls_before
    assert requests_done == 240
    assert calls < requests_done, "concurrent requests should share model calls"
    # Batches are counted in rows and never pass --max-batch-rows (8).
    assert metric(after, "modelyard_serving_batch_rows_bucket", le="8") == metric(after, "modelyard_serving_batch_rows_count")
    assert metric(after, "modelyard_serving_batch_rows_bucket", le="4") < metric(after, "modelyard_serving_batch_rows_count")


def test_a_request_that_fails_in_a_merged_call_fails_alone(echo):
    # A slow request (other params, so alone) keeps the model busy while the rest queue up and
    # are merged into one call; the negative rows make that merged call fail.
    slow = threading.Thread(target=echo.invoke, args=({"inputs": [[1, 1, 1]], "params": {"sleep": 0.4}},))
    before = metric(echo.metrics(), "modelyard_serving_batch_requests_bucket", le="1")
    slow.start()
    threading.Event().wait(0.1)
    bodies = [[[i, i, i]] if i % 4 else [[-1, i, i]] for i in range(1, 9)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda rows: echo.invoke({"inputs": rows}), bodies))
    slow.join()
    for rows, r in zip(bodies, responses):
        if rows[0][0] < 0:
            assert r.status_code == 400 and "negative inputs are refused" in r.json()["stack_trace"]
        else:
            assert predictions(r) == [[float(v) for v in rows[0]]]
    # The eight went in together (one merged call, then each alone after it failed).
    after = echo.metrics()
    merged = metric(after, "modelyard_serving_batch_requests_count") - metric(after, "modelyard_serving_batch_requests_bucket", le="1")
    assert merged >= 1
    assert metric(after, "modelyard_serving_batch_requests_bucket", le="1") >= before


def test_a_lone_request_is_called_at_once(iris):
    before = iris.metrics()
    for i in range(20):
        assert predictions(iris.invoke({"inputs": X[i:i + 1].tolist()})) == iris.sklearn.predict(X[i:i + 1]).tolist()
    after = iris.metrics()
    calls = metric(after, "modelyard_serving_batch_requests_count") - metric(before, "modelyard_serving_batch_requests_count")
    singles = (metric(after, "modelyard_serving_batch_requests_bucket", le="1")
               - metric(before, "modelyard_serving_batch_requests_bucket", le="1"))
    assert calls == singles == 20


def test_a_request_past_the_timeout_is_answered_504(echo):
    r = echo.invoke({"inputs": [[1, 2, 3]], "params": {"sleep": 2.5}})
    assert r.status_code == 504 and r.text == "Request processing time exceeded limit"
    assert metric(echo.metrics(), "modelyard_serving_request_timeouts_total") >= 1
    # The model call itself cannot be interrupted; once it ends, the server answers again.
    wait_for(lambda: echo.invoke({"inputs": [[1, 2, 3]]}).status_code == 200, timeout=10, what="a 200")
    assert predictions(echo.invoke({"inputs": [[1, 2, 3]]})) == [[1.0, 2.0, 3.0]]


# -- the Open Inference Protocol (V2) ---------------------------------------------------------------
def test_v2_health_and_metadata(iris):
    assert iris.get("/v2/health/live").json() == {"live": True}
    assert iris.get("/v2/health/ready").json() == {"ready": True}
    assert iris.get("/v2").json()["name"] == "modelyard"
    meta = iris.get(f"/v2/models/{iris.model_name}").json()
    assert meta["name"] == iris.model_name and meta["versions"] == ["1"] and meta["platform"] == "mlflow"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert iris.get(f"/v2/models/{iris.model_name}/ready").json() == {"name": iris.model_name, "ready": True}
    assert iris.get(f"/v2/models/{iris.model_name}/versions/1/ready").status_code == 200
    deployment = iris.deployment()["name"]
    assert iris.get(f"/v2/models/{deployment}").status_code == 200  # the deployment's name works too


def test_v2_infer_answers_tensors_and_refuses_malformed_requests(iris):
    rows = X[::30]
    body = {"id": "req-1", "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                                       "data": rows.ravel().tolist()}]}
    for path in (f"/v2/models/{iris.model_name}/infer", f"/v2/models/{iris.model_name}/versions/1/infer"):
        r = iris.session.post(iris.url + path, json=body, timeout=30)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["id"] == "req-1" and out["model_name"] == iris.model_name and out["model_version"] == "1"
        assert out["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [len(rows)],
                                   "data": iris.sklearn.predict(rows).tolist()}]
        assert r.headers["x-model-version"] == "1"
    bad = [
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}]}, 400, "datatype"),
        ({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}, 400, "4 values for shape"),
        ({"inputs": []}, 400, "non-empty 'inputs'"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}, 400, "shape"),
    ]
    for request, status, text in bad:
        r = iris.session.post(f"{iris.url}/v2/models/{iris.model_name}/infer", json=request, timeout=30)
        assert r.status_code == status and text in r.json()["error"], r.text
    assert iris.session.post(f"{iris.url}/v2/models/nope/infer", json=body).status_code == 404
    assert iris.session.post(f"{iris.url}/v2/models/{iris.model_name}/versions/9/infer", json=body).status_code == 404
    assert iris.get(f"/v2/models/{iris.model_name}/infer").status_code == 405


def test_v2_infer_with_one_input_per_column_feeds_a_column_model(frame):
    rows = FRAME.iloc[::25]
    inputs = [{"name": col, "shape": [len(rows)], "datatype": "FP64", "data": rows[col].tolist()} for col in rows]
    r = frame.session.post(f"{frame.url}/v2/models/{frame.model_name}/infer", json={"inputs": inputs}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == frame.sklearn.predict(rows).tolist()


# -- observability ----------------------------------------------------------------------------------
def test_metrics_count_requests_errors_latency_batches_and_name_the_version(iris):
    before = iris.metrics()
    for i in range(5):
        predictions(iris.invoke({"inputs": X[i:i + 2].tolist()}))
    iris.invoke({"inputs": [[1, 2]]})
    text = iris.metrics()
    assert "# TYPE modelyard_serving_request_duration_seconds histogram" in text
    delta = lambda name, **kw: metric(text, name, **kw) - metric(before, name, **kw)  # noqa: E731
    assert delta("modelyard_serving_requests_total", version="1", status="200") == 5
    assert delta("modelyard_serving_requests_total", version="1", status="400") == 1
    assert delta("modelyard_serving_request_errors_total", version="1", status="400") == 1
    assert delta("modelyard_serving_request_duration_seconds_count", version="1") == 6
    assert delta("modelyard_serving_prediction_rows_total", version="1") == 10
    assert delta("modelyard_serving_batch_rows_sum", version="1") >= 10
    assert metric(text, "modelyard_serving_model_info", version="1", ref="@champion", role="primary") == 100
    assert metric(text, "modelyard_serving_model_loads_total", version="1", outcome="loaded") == 1
    assert metric(text, "modelyard_serving_up") == 1


def test_the_access_log_has_a_json_line_per_request_with_its_request_id(iris):
    given = iris.invoke({"inputs": X[:1].tolist()}, headers={"X-Request-Id": unique("trace")})
    made = iris.invoke({"inputs": X[:1].tolist()})
    assert given.headers["x-request-id"] != made.headers["x-request-id"]

    def lines():
        return [json.loads(line) for line in iris.stdout().splitlines() if line.startswith("{")]

    ids = {given.headers["x-request-id"], made.headers["x-request-id"]}
    logged = wait_for(lambda: [e for e in lines() if e["request_id"] in ids] if
                      len([e for e in lines() if e["request_id"] in ids]) == 2 else None, what="access log lines")
    for entry in logged:
        assert entry["path"] == "/invocations" and entry["method"] == "POST" and entry["status"] == 200
        assert entry["model_version"] == "1" and entry["rows"] == 1 and entry["duration_ms"] >= 0
