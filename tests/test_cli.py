"""The ``modelyard`` command line: server flags and environment, ``db upgrade``, several workers."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from conftest import free_port, unique
from modelyard.settings import env_name, setting_fields
from modelyard.store.migrate import alembic_config
from modelyard.store.schema import metadata

MODELYARD = [sys.executable, "-m", "modelyard"]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*MODELYARD, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def squash(text: str) -> str:
    """Text without whitespace, so help that click wrapped still matches its one-line source."""
    return "".join(text.split())


def wait_until_up(proc: subprocess.Popen, url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no answer from {url} in {timeout}s")


@pytest.fixture()
def bare_server(tmp_path):
    """Start ``modelyard server`` with exactly the given flags and environment (no defaults added)."""
    procs = []

    def start(*args: str, env: dict, url: str) -> subprocess.Popen:
        with open(tmp_path / f"server{len(procs)}.log", "wb") as log:
            proc = subprocess.Popen([*MODELYARD, "server", *args], env={**os.environ, **env},
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        wait_until_up(proc, url)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def assert_fully_migrated(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    finally:
        engine.dispose()
    assert set(metadata.tables) <= tables, set(metadata.tables) - tables
    assert revision == head_revision()


# --- server --help -------------------------------------------------------------------------------

def test_server_help_lists_every_setting_with_its_flag_env_var_and_help():
    result = run_cli("server", "--help")
    assert result.returncode == 0, result.stderr
    text = squash(result.stdout)
    for f in setting_fields():
        assert "--" + f.name.replace("_", "-") in text, f.name
        assert env_name(f.name) in text, f.name
        assert squash(f.metadata["help"]) in text, f.name


def test_readme_settings_table_has_a_row_for_every_setting():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {line.split("|")[1].strip(" `") for line in readme.splitlines() if line.startswith("| `--")}
    assert rows == {"--" + f.name.replace("_", "-") for f in setting_fields()}


# --- environment and flags -----------------------------------------------------------------------

def test_server_takes_host_port_data_dir_and_database_url_from_modelyard_env_vars(tmp_path, bare_server):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "env-data"
    db_file = tmp_path / "elsewhere" / "chosen.db"
    bare_server(env={
        "MODELYARD_HOST": "127.0.0.1",
        "MODELYARD_PORT": str(port),
        "MODELYARD_DATA_DIR": str(data_dir),
        "MODELYARD_DATABASE_URL": f"sqlite:///{db_file}",
        "MODELYARD_LOG_LEVEL": "error",
    }, url=url)

    name = unique("env")
    resp = requests.post(url + "/api/2.0/mlflow/experiments/create", json={"name": name}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert data_dir.is_dir()
    assert not (data_dir / "modelyard.db").exists(), "MODELYARD_DATABASE_URL was ignored"
    with sqlite3.connect(db_file) as conn:
        stored = conn.execute("SELECT experiment_id FROM experiments WHERE name = ?", (name,)).fetchall()
    assert [str(row[0]) for row in stored] == [resp.json()["experiment_id"]]


def test_server_flags_win_over_modelyard_env_vars(tmp_path, bare_server):
    env_port, flag_port = free_port(), free_port()
    url = f"http://127.0.0.1:{flag_port}"
    bare_server("--port", str(flag_port), "--data-dir", str(tmp_path / "flag-data"),
                env={"MODELYARD_PORT": str(env_port), "MODELYARD_DATA_DIR": str(tmp_path / "env-data")},
                url=url)
    assert requests.get(url + "/health", timeout=5).text == "OK"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{env_port}/health", timeout=2)
    assert (tmp_path / "flag-data" / "modelyard.db").exists()
    assert not (tmp_path / "env-data").exists()


def test_server_refuses_a_port_already_in_use_with_a_clear_message(tmp_path, fresh_server):
    running = fresh_server()
    result = run_cli("server", "--port", str(running.port), "--data-dir", str(tmp_path / "second"))
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{running.port}" in result.stderr


# --- db upgrade ----------------------------------------------------------------------------------

def test_db_upgrade_creates_every_table_in_a_fresh_sqlite_file_and_is_idempotent(tmp_path):
    data_dir = tmp_path / "fresh"
    first = run_cli("db", "upgrade", "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr
    assert "is up to date" in first.stdout
    assert_fully_migrated(f"sqlite:///{data_dir / 'modelyard.db'}")

    again = run_cli("db", "upgrade", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    assert_fully_migrated(f"sqlite:///{data_dir / 'modelyard.db'}")


@pytest.mark.postgres
def test_db_upgrade_creates_every_table_in_a_fresh_postgresql_database(pg_database):
    url = pg_database()
    result = run_cli("db", "upgrade", "--database-url", url)
    assert result.returncode == 0, result.stderr
    assert "is up to date" in result.stdout
    assert_fully_migrated(url.replace("postgresql://", "postgresql+psycopg://", 1))


@pytest.mark.postgres
def test_db_upgrade_reads_the_database_url_from_the_environment(pg_database):
    url = pg_database()
    result = run_cli("db", "upgrade", env={"MODELYARD_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert_fully_migrated(url.replace("postgresql://", "postgresql+psycopg://", 1))


# --- several workers -----------------------------------------------------------------------------

def worker_pids(parent: int) -> list[int]:
    """The server's worker processes: children started by multiprocessing's spawn."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def answers_alone(url: str) -> bool:
    """A fresh connection (so no keep-alive ties it to a stopped worker) gets a write through."""
    resp = requests.post(url + "/api/2.0/mlflow/experiments/create", json={"name": unique("alone")},
                         headers={"Connection": "close"}, timeout=20)
    return resp.status_code == 200


@pytest.fixture(params=["sqlite", "postgres"])
def two_worker_server(request, fresh_server):
    # No background scheduler: a worker frozen in the middle of its periodic write would hold
    # SQLite's write lock, and the other worker's requests would wait for it, not for its peer.
    args = ["--workers", "2", "--disable-monitor-scheduler"]
    if request.param == "postgres":
        args += ["--database-url", request.getfixturevalue("pg_database")()]
    return fresh_server(*args)


def test_two_workers_each_serve_requests_on_their_own(two_worker_server):
    pids = worker_pids(two_worker_server.proc.pid)
    assert len(pids) == 2, pids
    # Freeze one worker at a time: every request must then be accepted and answered by the other.
    for frozen in pids:
        os.kill(frozen, signal.SIGSTOP)
        try:
            assert answers_alone(two_worker_server.url), f"nothing answered while {frozen} was stopped"
        finally:
            os.kill(frozen, signal.SIGCONT)


def test_two_workers_take_many_concurrent_writes_and_lose_none(two_worker_server):
    prefix = unique("conc")
    names = [f"{prefix}-{i}" for i in range(160)]

    def create(name: str) -> str:
        resp = requests.post(two_worker_server.url + "/api/2.0/mlflow/experiments/create",
                             json={"name": name}, headers={"Connection": "close"}, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()["experiment_id"]

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(create, names))
    assert len(set(ids)) == len(names)

    resp = requests.post(two_worker_server.url + "/api/2.0/mlflow/experiments/search",
                         json={"filter": f"name LIKE '{prefix}-%'", "max_results": 1000}, timeout=30)
    assert resp.status_code == 200, resp.text
    stored = {e["name"]: e["experiment_id"] for e in resp.json()["experiments"]}
    assert stored == dict(zip(names, ids))
