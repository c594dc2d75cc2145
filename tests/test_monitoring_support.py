"""Helpers shared by the monitoring, alerting and prediction tests (no tests here).

- :class:`Receiver`: an HTTP server the test starts to receive webhook and Slack notifications;
  it can be told to fail its first requests, to check retries.
- :class:`Api`: raw calls to modelyard's own API (``/api/modelyard/v1``), raising on errors.
- :func:`predictions`: prediction log items drawn from known distributions.
- :func:`monitoring_server`: a server process whose buckets are one second wide, so windows of a
  few seconds make tests fast.
"""
from __future__ import annotations

import json
import random
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from conftest import ServerProcess

PREFIX = "/api/modelyard/v1"


class Receiver:
    """Collects POSTed JSON bodies; answers 500 to the first ``fail_first`` requests."""

    def __init__(self, fail_first: int = 0):
        self.bodies: list[dict] = []
        self.attempts = 0
        self.fail_first = fail_first
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's spelling
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.attempts += 1
                    fail = receiver.attempts <= receiver.fail_first
                    if not fail:
                        receiver.bodies.append({"path": self.path, "json": json.loads(body)})
                self.send_response(500 if fail else 200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 30) -> list[dict]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.bodies) >= n:
                    return list(self.bodies)
            time.sleep(0.1)
        raise AssertionError(f"expected {n} notifications, got {len(self.bodies)}: {self.bodies}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ApiError(Exception):
    def __init__(self, response: requests.Response):
        super().__init__(f"{response.status_code}: {response.text}")
        self.status = response.status_code
        self.body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}


class Api:
    def __init__(self, url: str):
        self.url = url
        self.session = requests.Session()

    def raw(self, method: str, path: str, **kw) -> requests.Response:
        return self.session.request(method, self.url + PREFIX + path, timeout=60, **kw)

    def post(self, path: str, body: dict) -> dict:
        r = self.raw("POST", path, json=body)
        if r.status_code != 200:
            raise ApiError(r)
        return r.json()

    def get(self, path: str, **params) -> dict:
        r = self.raw("GET", path, params=params)
        if r.status_code != 200:
            raise ApiError(r)
        return r.json()

    def delete(self, path: str, body: dict) -> dict:
        r = self.raw("DELETE", path, json=body)
        if r.status_code != 200:
            raise ApiError(r)
        return r.json()


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def rows(n: int, shift: float = 0.0, seed: int = 0, cats: str = "abc") -> list[dict]:
    """Feature rows: x ~ N(shift, 1), z ~ N(5, 2) (never shifted), c uniform over ``cats``."""
    rng = random.Random(seed)
    return [{"x": rng.gauss(shift, 1), "z": rng.gauss(5, 2), "c": rng.choice(cats)} for _ in range(n)]


def predictions(deployment: str, features: list[dict], ts_ms: int | None = None, version: str = "1",
                model_name: str = "model", prefix: str | None = None, outputs=None) -> list[dict]:
    ts = ts_ms if ts_ms is not None else int(time.time() * 1000)
    prefix = prefix or uuid.uuid4().hex[:8]
    return [{"request_id": f"{prefix}-{i}", "timestamp_ms": ts, "deployment": deployment, "model_name": model_name,
             "model_version": version, "inputs": f, "outputs": (outputs(f) if outputs else _positive(f.get("x"))),
             "latency_ms": 2.0 + (i % 10)} for i, f in enumerate(features)]


def _positive(x) -> int:
    return int(isinstance(x, (int, float)) and x > 0)


# The tests' receivers listen on 127.0.0.1 over http, which a server refuses to call by default.
LOCAL_RECEIVERS = {"MODELYARD_WEBHOOK_ALLOW_PRIVATE_IPS": "true", "MODELYARD_WEBHOOK_ALLOWED_SCHEMES": "http,https"}


def monitoring_server(tmp_path, *args, bucket: int = 1, tick_ms: int = 200, env=None) -> ServerProcess:
    return ServerProcess(tmp_path / f"mon-{uuid.uuid4().hex[:6]}", "--monitor-bucket-seconds", str(bucket),
                         "--monitor-tick-ms", str(tick_ms), *args, env={**LOCAL_RECEIVERS, **(env or {})}).start()
