"""Fixtures: real server processes on SQLite and PostgreSQL, driven by the real mlflow client.

``server`` is parametrised over both stores, so every test that takes it runs on both. PostgreSQL
is the machine's server on 127.0.0.1:5432 (database ``test``); each test session works in a fresh
database of its own and drops it at the end. Without a PostgreSQL server the PostgreSQL cases skip
with the reason, except under CI (``CI=true``), where they fail: CI must run them.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# A server error must surface at once in a test rather than after minutes of client retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")

PG_ADMIN_URL = os.environ.get("MODELYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``modelyard server`` in a child process, on a free port."""

    def __init__(self, data_dir: Path, *args: str, env: dict | None = None):
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"

    def start(self, timeout: float = 60) -> "ServerProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "server", "--port", str(self.port),
             "--data-dir", str(self.data_dir), *self.args],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean shutdown, as in a crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def _pg_available() -> str | None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001
        return str(exc).strip().splitlines()[0]


@pytest.fixture(scope="session")
def pg_database():
    """Factory of fresh PostgreSQL databases (dropped at the end of the session); yields URLs."""
    import psycopg

    reason = _pg_available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required under CI: {reason}")
        pytest.skip(f"no PostgreSQL server at {PG_ADMIN_URL}: {reason}")
    made = []

    def make() -> str:
        name = "modelyard_test_" + uuid.uuid4().hex[:10]
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    yield make
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(request, tmp_path_factory):
    """A running server per store, shared by the session's tests."""
    data_dir = tmp_path_factory.mktemp(f"server-{request.param}")
    args = []
    if request.param == "postgres":
        args = ["--database-url", request.getfixturevalue("pg_database")()]
    proc = ServerProcess(data_dir / "data", *args).start()
    proc.backend = request.param
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _fresh_fluent_mlflow():
    """The fluent ``mlflow`` API keeps its active experiment in a module global: a test that set
    one on an earlier server must not send the next test's runs to that id."""
    import mlflow.tracking.fluent as fluent

    # Likewise the variables that pin a client to an experiment or a run (a job's environment,
    # say, run in this process by an executor test).
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        os.environ.pop(name, None)
    fluent._active_experiment_id = None
    yield
    fluent._active_experiment_id = None


@pytest.fixture()
def client(server):
    from mlflow import MlflowClient

    return MlflowClient(server.url)


@pytest.fixture()
def tracking(server, monkeypatch):
    """The fluent ``mlflow`` API pointed at the server."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    mlflow.set_tracking_uri(server.url)
    yield mlflow
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture()
def api(server):
    """Raw REST calls, for what the client would not send (bad input, odd spellings)."""
    return RestApi(server.url)


class RestApi:
    def __init__(self, url: str):
        self.url = url
        self.session = requests.Session()

    def post(self, path: str, json=None, **kw):
        return self.session.post(self.url + "/api/2.0/mlflow" + path, json=json, **kw)

    def get(self, path: str, params=None, **kw):
        return self.session.get(self.url + "/api/2.0/mlflow" + path, params=params, **kw)

    def call(self, method: str, path: str, **kw):
        return self.session.request(method, self.url + "/api/2.0/mlflow" + path, **kw)


def seed(database_url: str, action):
    """Run ``await action(stores)`` on a server's database before the server starts (users,
    projects, tokens), through the stores' Python API as ``modelyard admin`` does."""
    from modelyard.store import run_offline

    return run_offline(database_url, action)


def unique(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def fresh_server(tmp_path):
    """A server of its own, for tests that kill or restart it. Call with extra CLI args."""
    made = []

    def start(*args, env=None):
        proc = ServerProcess(tmp_path / f"data{len(made)}", *args, env=env).start()
        made.append(proc)
        return proc

    yield start
    for proc in made:
        proc.stop()
    shutil.rmtree(tmp_path, ignore_errors=True)
