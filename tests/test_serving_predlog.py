"""The prediction log of ``modelyard serve``: delivered to the server in batches, off the request
path; with the server down, a bounded buffer, counted drops and no waiting request."""
from __future__ import annotations

import time

import numpy as np
import pytest
import requests
from sklearn.datasets import load_iris

from conftest import ServerProcess, free_port, unique
from test_serving_support import Registry, ServeProcess, metric, wait_for

X, _ = load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serving-predlog")
    server = ServerProcess(workdir / "data").start()
    yield Registry(server, workdir)
    server.stop()


def logged(registry: Registry, deployment: str) -> list[dict]:
    r = registry.api("GET", "/predictions/search", params={"deployment": deployment, "max_results": 1000})
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def test_each_prediction_reaches_the_server_with_its_request_id_inputs_output_and_version(registry):
    name = unique("logged")
    version = registry.iris(name)
    proc = ServeProcess(registry.workdir, registry.url, f"models:/{name}/{version}").start()
    try:
        deployment = proc.deployment()["name"]
        one = proc.invoke({"inputs": X[:1].tolist()}, headers={"X-Request-Id": unique("req")})
        three = proc.invoke({"inputs": X[50:53].tolist()})
        failed = proc.invoke({"inputs": [[1.0, 2.0]]}, headers={"X-Request-Id": unique("bad")})
        assert (one.status_code, three.status_code, failed.status_code) == (200, 200, 400)
        rid1, rid3 = one.headers["x-request-id"], three.headers["x-request-id"]
        wanted = {rid1, f"{rid3}:0", f"{rid3}:1", f"{rid3}:2", failed.headers["x-request-id"]}
        rows = wait_for(lambda: (lambda r: r if wanted <= {x["request_id"] for x in r} else None)(
            logged(registry, deployment)), what="the predictions in the server's log")
        by_id = {x["request_id"]: x for x in rows}
        first = by_id[rid1]
        assert first["inputs"] == {str(i): v for i, v in enumerate(X[0].tolist())}
        assert first["outputs"] == one.json()["predictions"][0]
        assert first["model_name"] == name and first["model_version"] == version and first["shadow"] is False
        assert first["latency_ms"] > 0 and abs(first["timestamp_ms"] - time.time() * 1000) < 120_000
        for i in range(3):
            row = by_id[f"{rid3}:{i}"]
            assert row["inputs"]["2"] == X[50 + i][2] and row["outputs"] == three.json()["predictions"][i]
        bad = by_id[failed.headers["x-request-id"]]
        assert bad["outputs"] is None and "does not match expected shape" in bad["error"]
        assert proc.deployment()["prediction_log"]["dropped_rows"] == 0
        assert metric(proc.metrics(), "modelyard_serving_prediction_log_rows_total", outcome="sent") >= 5
    finally:
        proc.stop()


@pytest.fixture()
def processes():
    """Every process a test starts, stopped at its end whatever happens."""
    started = []
    yield started.append
    for proc in reversed(started):
        proc.stop()


def test_with_the_server_down_the_buffer_stays_bounded_drops_are_counted_and_no_request_waits(tmp_path, processes):
    server = ServerProcess(tmp_path / "data").start()
    processes(server)
    own = Registry(server, tmp_path)
    name = unique("down")
    version = own.iris(name)
    proc = ServeProcess(tmp_path, server.url, f"models:/{name}/{version}", "--prediction-buffer-rows", "50",
                        "--poll-interval", "0.3").start()
    processes(proc)
    server.kill()
    latencies = []
    for i in range(300):
        started = time.perf_counter()
        r = proc.invoke({"inputs": X[i % 150:i % 150 + 1].tolist()})
        latencies.append(time.perf_counter() - started)
        assert r.status_code == 200
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.05, "a request must not wait for the prediction log"
    state = wait_for(lambda: (lambda d: d if "server" in d["problems"] and d["prediction_log"]["failed_posts"]
                              else None)(proc.deployment()), what="the unreachable server reported")
    log = state["prediction_log"]
    assert log["buffered_rows"] <= 50
    # At most one post's worth is held for retry beside the 50 buffered; the rest are dropped.
    assert log["dropped_rows"] >= 300 - 50 - 50 and log["sent_rows"] == 0
    assert log["failed_posts"] >= 1 and log["last_error"]
    assert state["status"] == "serving"  # serving goes on: only reporting suffers
    wait_for(lambda: metric(proc.metrics(), "modelyard_serving_prediction_log_rows_total", outcome="dropped")
             == log["dropped_rows"], what="the drops in /metrics")
    assert metric(proc.metrics(), "modelyard_serving_prediction_log_buffered_rows") <= 50

    # The server comes back on the same port: what was held is delivered.
    back = ServerProcess(server.data_dir)
    back.port, back.url = server.port, server.url
    processes(back.start())
    delivered = wait_for(lambda: proc.deployment()["prediction_log"]["sent_rows"] or None, timeout=60,
                         what="delivery after the server returned")
    assert delivered >= 1
    deployment = proc.deployment()["name"]
    assert len(logged(Registry(back, tmp_path), deployment)) == delivered


def test_the_buffer_never_blocks_and_counts_what_it_drops():
    import socket

    from modelyard.serving.predlog import PredictionLog
    from modelyard.serving.protocol import payload_of

    # A server that takes the log's connection and never answers: its first post hangs in flight.
    hung = socket.create_server(("127.0.0.1", 0))
    hung.settimeout(30)
    log = PredictionLog(f"http://127.0.0.1:{hung.getsockname()[1]}", "d", "m", max_rows=100, batch_rows=10,
                        flush_interval=0.05, timeout=120)
    log.start()
    payload = payload_of(np.ones((3, 4)))
    try:
        log.add("first", 0, "1", payload, np.zeros(3), 1.0)
        conn, _ = hung.accept()  # the post is under way
        accepted = sum(log.add(f"r{i}", 0, "1", payload, np.zeros(3), 1.0) for i in range(1000))
        # Every add returned while that post still hung: none of them waited on the network.
        assert log.failed_posts == 0 and log.sent_rows == 0
        assert 3 + accepted * 3 + log.dropped_rows == 3003
        assert log.buffered_rows <= 100
        conn.close()  # the post fails now
        wait_for(lambda: log.failed_posts >= 1, what="a failed post")
        assert log.sent_rows == 0 and "cannot reach" in log.last_error
    finally:
        hung.close()
        log.stop(timeout=0.5)
    # What could not be shipped before stopping counts as dropped too: every row is accounted for.
    assert log.dropped_rows == 3003 and log.buffered_rows == 0


def test_a_post_the_server_refuses_is_dropped_and_counted_not_retried(registry):
    from modelyard.serving.predlog import PredictionLog
    from modelyard.serving.protocol import payload_of

    log = PredictionLog(registry.url, "", "m", batch_rows=1, flush_interval=0.05)  # "" is not a deployment name
    log.start()
    try:
        log.add("r1", int(time.time() * 1000), "1", payload_of(np.ones((1, 4))), np.zeros(1), 1.0)
        wait_for(lambda: log.rejected_rows == 1, what="the refused post")
        assert log.sent_rows == 0 and log.buffered_rows == 0 and "400" in log.last_error
    finally:
        log.stop(timeout=1)
    assert requests.get(registry.url + "/health").status_code == 200


def test_a_request_bigger_than_a_post_sends_its_first_ten_thousand_rows_and_counts_the_rest_dropped(registry):
    from modelyard.serving.predlog import MAX_ITEMS_PER_POST, PredictionLog
    from modelyard.serving.protocol import payload_of

    deployment = unique("big-request")
    log = PredictionLog(registry.url, deployment, "m", max_rows=20_000, batch_rows=1, flush_interval=0.05,
                        input_names={"1": ["a", "b", "c", "d"]})
    log.start()
    try:
        rows = MAX_ITEMS_PER_POST + 5
        log.add("big", int(time.time() * 1000), "1", payload_of(np.arange(rows * 4.0).reshape(rows, 4)),
                np.arange(rows) % 3, 2.0)
        wait_for(lambda: log.sent_rows == MAX_ITEMS_PER_POST or None, what="the first post")
        assert log.dropped_rows == 5 and log.buffered_rows == 0
    finally:
        log.stop(timeout=1)
    newest = logged(registry, deployment)[0]
    row = int(newest["request_id"].split(":")[1])
    assert newest["request_id"].startswith("big:") and row < MAX_ITEMS_PER_POST
    assert newest["inputs"] == {"a": row * 4.0, "b": row * 4.0 + 1, "c": row * 4.0 + 2, "d": row * 4.0 + 3}
    assert newest["outputs"] == row % 3
