"""Projects, tokens and roles: the route-by-role matrix, the real client with a token, sessions.

The matrix is built from the endpoint table: every routed endpoint must declare an access level,
and every principal below gets exactly what GitLab's role rules (written out here, independently
of the server's code) allow. A refused request changes nothing.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import ServerProcess, seed
from modelyard.server import api
from modelyard.settings import Settings

# Who may do what, by access level: GitLab's roles (guest and reporter read; developer writes;
# maintainer deletes and manages members and tokens; owner everything) plus scopes.
LEVELS = {
    "public": {"anonymous", "bad", "expired", "revoked", "other", "guest", "reporter", "read_only", "developer",
               "maintainer", "owner", "admin"},
    "authenticated": {"other", "guest", "reporter", "read_only", "developer", "maintainer", "owner", "admin"},
    "account": {"other", "guest", "reporter", "developer", "maintainer", "owner", "admin"},
    "read": {"guest", "reporter", "read_only", "developer", "maintainer", "owner", "admin"},
    "write": {"developer", "maintainer", "owner", "admin"},
    "delete": {"maintainer", "owner", "admin"},
    "manage": {"maintainer", "owner", "admin"},
    "owner": {"owner", "admin"},
    "admin": {"admin"},
}
UNAUTHENTICATED = {"anonymous", "bad", "expired", "revoked"}
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _setup_people(database_url: str) -> dict[str, str]:
    """Users, projects and one token per principal, made through the stores' Python API."""

    async def make(stores):
        tokens = {}
        await stores.tokens.create_user("root", True)
        tokens["admin"] = (await stores.tokens.create_personal_token("root", "t", ["api"], None))["token"]
        await stores.projects.create("alpha", None, None, None)
        await stores.projects.create("beta", None, None, None)
        for role in ("guest", "reporter", "developer", "maintainer", "owner"):
            await stores.tokens.create_user(role, False)
            await stores.projects.set_member("alpha", role, role)
            tokens[role] = (await stores.tokens.create_personal_token(role, "t", ["api"], None))["token"]
        await stores.tokens.create_user("reader", False)
        await stores.projects.set_member("alpha", "reader", "maintainer")
        tokens["read_only"] = (await stores.tokens.create_personal_token("reader", "t", ["read_api"], None))["token"]
        await stores.tokens.create_user("stranger", False)
        await stores.projects.set_member("beta", "stranger", "owner")
        tokens["other"] = (await stores.tokens.create_personal_token("stranger", "t", ["api"], None))["token"]
        revoked = await stores.tokens.create_personal_token("developer", "gone", ["api"], None)
        await stores.tokens.revoke(revoked["token_id"])
        tokens["revoked"] = revoked["token"]
        expiring = await stores.tokens.create_personal_token("developer", "old", ["api"], int(time.time() * 1000) + 1500)
        tokens["expired"] = expiring["token"]
        tokens["bad"] = "myd_not-a-real-token"
        return tokens

    tokens = seed(database_url, make)
    time.sleep(1.6)  # let the expiring token expire
    return tokens


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def secured(request, tmp_path_factory):
    data = tmp_path_factory.mktemp(f"auth-{request.param}") / "data"
    data.mkdir(parents=True)
    # The matrix sends hundreds of bad-token requests: no guessing delay here (its own test below
    # starts a server with the default delay).
    args = ["--auth", "--auth-failure-delay-ms", "0"]
    if request.param == "postgres":
        url = request.getfixturevalue("pg_database")()
        args += ["--database-url", url]
        db_url = Settings(database_url=url).resolved_database_url
    else:
        db_url = Settings(data_dir=data).resolved_database_url
    tokens = _setup_people(db_url)
    proc = ServerProcess(data, *args).start()
    proc.tokens, proc.db_url = tokens, db_url
    yield proc
    proc.stop()


def _headers(secured, who: str) -> dict:
    return {} if who == "anonymous" else {"Authorization": f"Bearer {secured.tokens[who]}"}


# Written by the server itself (the audit log records refusals too; the monitor scheduler takes leases).
_BACKGROUND = {"audit_events", "monitor_leases"}


def _fingerprint(db_url: str) -> dict:
    import sqlalchemy as sa

    from modelyard.store.schema import metadata

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        present = set(sa.inspect(conn).get_table_names())
        counts = {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                  for t in metadata.sorted_tables if t.name in present and t.name not in _BACKGROUND}
    engine.dispose()
    return counts


def _all_endpoints():
    out = [("/api/2.0/mlflow", e) for e in api.mlflow_endpoints()]
    out += [("/api/modelyard/v1", e) for e in api.modelyard_endpoints()]
    return out


def test_every_endpoint_declares_a_known_access_level():
    undeclared = [f"{e.method} {prefix}{e.path}" for prefix, e in _all_endpoints() if e.access not in LEVELS]
    assert undeclared == []


def test_no_read_endpoint_changes_state_and_no_delete_is_open_to_developers():
    for _, e in _all_endpoints():
        if e.method == "GET":
            assert e.access in ("public", "authenticated", "read", "manage", "admin"), e
        if e.path.endswith(("/delete", "/restore")) and "tag" not in e.path:
            assert e.access in ("delete", "manage", "owner", "admin"), e


# Valid bodies for the main writes, so that a missing check would really change something.
SAMPLE = {
    "/experiments/create": {"name": "matrix-exp"},
    "/runs/create": {"experiment_id": "0"},
    "/registered-models/create": {"name": "matrix-model"},
    "/projects": {"name": "matrix-project"},
    "/users": {"username": "matrix-user"},
    "/project/tokens": {"name": "matrix", "role": "developer", "scopes": ["api"]},
    "/project/members": {"username": "stranger", "role": "developer"},
    "/user/tokens": {"name": "matrix", "scopes": ["api"]},
}


def _call(secured, who: str, prefix: str, e, project: str = "alpha"):
    path = e.path.replace("{model_id}", "m-0").replace("{tag_key}", "k")
    url = f"{secured.url}/p/{project}{prefix}{path}"
    kw = {"headers": _headers(secured, who), "timeout": 30}
    if e.method != "GET":
        kw["json"] = SAMPLE.get(e.path, {})
    return requests.request(e.method, url, **kw)


PRINCIPALS = sorted(LEVELS["public"])


def _starlette_routes():
    """(method, path, access) of every route outside the endpoint table: artifacts, sign-in, ..."""
    out = []
    for route in api.other_routes(None):  # building the routes reads no service
        access = getattr(route, "access", None) or getattr(route.endpoint, "access", None)
        for method in sorted(set(route.methods or {"GET"}) - {"HEAD"}):
            out.append((method, route.path, access))
    return out


def test_every_other_route_declares_a_known_access_level():
    assert [r for r in _starlette_routes() if r[2] not in LEVELS] == []


def _call_route(secured, who: str, method: str, path: str):
    path = path.replace("{path:anypath}", "0/matrix.txt").replace("{action}", "create")
    kw = {"headers": _headers(secured, who), "timeout": 30, "allow_redirects": False,
          "params": {"path": "0/matrix", "run_uuid": "0" * 32, "name": "matrix", "version": "1"}}
    if method in ("PUT", "POST"):
        kw["data"] = b"matrix"
    return requests.request(method, f"{secured.url}/p/alpha{path}", **kw)


def _is_refusal(r) -> bool:
    if r.status_code == 403:
        return True
    if r.status_code == 401:  # the sign-in page answers a wrong token with its own 401 page
        return r.headers.get("content-type", "").startswith("application/json")
    return False


@pytest.mark.parametrize("who", PRINCIPALS)
def test_route_by_role_matrix_outside_the_endpoint_table(secured, who):
    before = _fingerprint(secured.db_url)
    wrong = []
    for method, path, access in _starlette_routes():
        r = _call_route(secured, who, method, path)
        if who in LEVELS[access]:
            if _is_refusal(r) or (r.status_code >= 500 and r.status_code != 501):  # 501: multipart is off
                wrong.append(("allowed but", method, path, r.status_code, r.text[:150]))
        elif not (_is_refusal(r) and r.status_code == (401 if who in UNAUTHENTICATED else 403)
                  and "error_code" in r.json()):
            wrong.append(("refused but", method, path, r.status_code, r.text[:150]))
    assert wrong == []
    if who not in LEVELS["write"]:
        assert _fingerprint(secured.db_url) == before


@pytest.mark.parametrize("who", PRINCIPALS)
def test_route_by_role_matrix(secured, who):
    """Every endpoint for one principal: allowed ones never answer 401/403, refused ones always do,
    and the refused ones change nothing in the database."""
    endpoints = _all_endpoints()
    refused = [(p, e) for p, e in endpoints if who not in LEVELS[e.access]]
    allowed = [(p, e) for p, e in endpoints if who in LEVELS[e.access]]
    before = _fingerprint(secured.db_url)
    wrong = []
    for prefix, e in refused:
        r = _call(secured, who, prefix, e)
        expected = 401 if who in UNAUTHENTICATED else 403
        if r.status_code != expected or "error_code" not in r.json():
            wrong.append((e.method, prefix + e.path, r.status_code, r.text[:200]))
    assert wrong == [], f"{who}: refusals answered wrongly"
    assert _fingerprint(secured.db_url) == before, f"{who}: a refused request changed the database"
    for prefix, e in allowed:
        r = _call(secured, who, prefix, e)
        if r.status_code in (401, 403) or r.status_code >= 500:
            wrong.append((e.method, prefix + e.path, r.status_code, r.text[:200]))
    assert wrong == [], f"{who}: allowed requests were refused or failed"


def test_a_token_of_another_project_sees_nothing_of_this_one(secured):
    dev = {"Authorization": f"Bearer {secured.tokens['developer']}"}
    exp = requests.post(f"{secured.url}/p/alpha/api/2.0/mlflow/experiments/create", json={"name": "private"},
                        headers=dev).json()["experiment_id"]
    other = {"Authorization": f"Bearer {secured.tokens['other']}"}
    r = requests.get(f"{secured.url}/p/alpha/api/2.0/mlflow/experiments/get", params={"experiment_id": exp},
                     headers=other)
    assert r.status_code == 403
    # Through its own project the id does not exist at all.
    r = requests.get(f"{secured.url}/p/beta/api/2.0/mlflow/experiments/get", params={"experiment_id": exp},
                     headers=other)
    assert r.status_code == 404


def test_two_projects_may_hold_experiments_of_the_same_name(secured):
    admin = {"Authorization": f"Bearer {secured.tokens['admin']}"}
    ids = [requests.post(f"{secured.url}/p/{p}/api/2.0/mlflow/experiments/create", json={"name": "same-name"},
                         headers=admin).json()["experiment_id"] for p in ("alpha", "beta")]
    assert ids[0] != ids[1]


def test_basic_auth_with_the_token_as_password_works_and_a_wrong_username_does_not(secured):
    url = f"{secured.url}/p/alpha/api/2.0/mlflow/experiments/search"
    assert requests.post(url, json={}, auth=("reporter", secured.tokens["reporter"])).status_code == 200
    assert requests.post(url, json={}, auth=("guest", secured.tokens["reporter"])).status_code == 401


def test_failed_authentication_is_slowed_and_logged_without_the_token(fresh_server):
    server = fresh_server("--auth")
    t = time.perf_counter()
    r = requests.post(f"{server.url}/api/2.0/mlflow/experiments/search", json={},
                      headers={"Authorization": "Bearer myd_guessing-a-token-here"})
    assert r.status_code == 401 and time.perf_counter() - t >= 0.45
    log = server.log()
    assert "failed authentication" in log and "guessing-a-token-here" not in log


def test_revocation_takes_effect_within_five_seconds(secured):
    admin = {"Authorization": f"Bearer {secured.tokens['admin']}"}
    made = requests.post(f"{secured.url}/api/modelyard/v1/user/tokens", json={"name": "short", "scopes": ["api"]},
                         headers=admin).json()["token"]
    bearer = {"Authorization": f"Bearer {made['token']}"}
    url = f"{secured.url}/p/alpha/api/2.0/mlflow/experiments/search"
    assert requests.post(url, json={}, headers=bearer).status_code == 200
    r = requests.delete(f"{secured.url}/api/modelyard/v1/user/tokens", json={"token_id": made["token_id"]},
                        headers=admin)
    assert r.status_code == 200
    deadline = time.time() + 5
    while time.time() < deadline and requests.post(url, json={}, headers=bearer).status_code == 200:
        time.sleep(0.2)
    assert requests.post(url, json={}, headers=bearer).status_code == 401


def test_tokens_are_stored_only_as_hashes(secured):
    import sqlalchemy as sa

    engine = sa.create_engine(secured.db_url)
    with engine.connect() as conn:
        stored = [r[0] for r in conn.execute(sa.text("SELECT token_hash FROM access_tokens"))]
    engine.dispose()
    assert secured.tokens["developer"] not in stored
    assert all(len(h) == 64 for h in stored)


def test_writes_are_audited_and_maintainers_can_read_them(secured):
    dev = {"Authorization": f"Bearer {secured.tokens['developer']}"}
    requests.post(f"{secured.url}/p/alpha/api/2.0/mlflow/experiments/create", json={"name": "audited"}, headers=dev)
    maint = {"Authorization": f"Bearer {secured.tokens['maintainer']}"}
    events = requests.get(f"{secured.url}/p/alpha/api/modelyard/v1/project/audit-events",
                          params={"actor": "developer"}, headers=maint).json()["events"]
    assert any(e["action"] == "POST /experiments/create" and e["status"] == 200 for e in events)
    r = requests.get(f"{secured.url}/p/alpha/api/modelyard/v1/project/audit-events", headers=dev)
    assert r.status_code == 403


def test_a_maintainer_cannot_grant_owner_but_an_owner_can(secured):
    url = f"{secured.url}/p/alpha/api/modelyard/v1/project/members"
    maint = {"Authorization": f"Bearer {secured.tokens['maintainer']}"}
    r = requests.post(url, json={"username": "guest", "role": "owner"}, headers=maint)
    assert r.status_code == 403
    owner = {"Authorization": f"Bearer {secured.tokens['owner']}"}
    assert requests.post(url, json={"username": "guest", "role": "guest"}, headers=owner).status_code == 200


def test_ui_sign_in_sets_a_session_cookie_and_changes_need_the_csrf_header(secured):
    s = requests.Session()
    r = s.post(f"{secured.url}/login", data={"username": "developer", "token": secured.tokens["developer"]},
               allow_redirects=False)
    assert r.status_code == 303 and "modelyard_session" in s.cookies
    url = f"{secured.url}/p/alpha/api/2.0/mlflow/experiments/create"
    assert s.post(url, json={"name": "from-ui"}).status_code == 403
    r = s.post(url, json={"name": "from-ui"}, headers={"X-CSRF-Token": s.cookies["modelyard_csrf"]})
    assert r.status_code == 200
    bad = requests.post(f"{secured.url}/login", data={"username": "developer", "token": "nope"})
    assert bad.status_code == 401


def test_binding_a_public_address_without_auth_is_refused(tmp_path):
    r = subprocess.run([sys.executable, "-m", "modelyard", "server", "--host", "0.0.0.0", "--port", "0",
                        "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--insecure-no-auth" in r.stderr


def _basic_flow(secured, token: str) -> subprocess.CompletedProcess:
    script = SHARED / "acceptance" / "mlflow_basic_flow.py"
    if not script.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{script} is missing")
        pytest.skip(f"{script} is missing")
    env = {**os.environ, "MLFLOW_TRACKING_TOKEN": token, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    return subprocess.run([sys.executable, str(script), "--url", f"{secured.url}/p/alpha"], env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_real_client_runs_the_basic_flow_in_a_project_with_a_maintainer_token(secured):
    result = _basic_flow(secured, secured.tokens["maintainer"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "basic flow: ok" in result.stdout


def test_a_developer_runs_the_flow_up_to_the_protected_champion_alias(secured):
    # The flow logs, registers and then moves "champion", which is protected by default.
    result = _basic_flow(secured, secured.tokens["developer"])
    assert result.returncode != 0
    assert "Permission denied to move the protected alias 'champion'" in result.stderr


def test_the_same_flow_with_a_reporter_token_fails_at_the_first_write(secured):
    before = _fingerprint(secured.db_url)
    result = _basic_flow(secured, secured.tokens["reporter"])
    assert result.returncode != 0
    assert "PERMISSION_DENIED" in result.stderr
    assert "your role in project 'alpha' is reporter; this needs developer or above" in result.stderr
    assert "POST /experiments/create" in result.stderr  # the first write the flow makes
    assert _fingerprint(secured.db_url) == before


def test_a_developer_cannot_move_a_protected_alias_but_a_maintainer_can(secured):
    dev = {"Authorization": f"Bearer {secured.tokens['developer']}"}
    base = f"{secured.url}/p/alpha/api/2.0/mlflow"
    requests.post(f"{base}/registered-models/create", json={"name": "guarded"}, headers=dev)
    r = requests.post(f"{base}/model-versions/create", json={"name": "guarded", "source": "s3://bucket/model"},
                      headers=dev)
    assert r.status_code == 200, r.text
    assert requests.post(f"{base}/registered-models/alias", json={"name": "guarded", "alias": "staging",
                                                                  "version": "1"}, headers=dev).status_code == 200
    r = requests.post(f"{base}/registered-models/alias", json={"name": "guarded", "alias": "champion",
                                                              "version": "1"}, headers=dev)
    assert r.status_code == 403 and "protected alias 'champion'" in r.json()["message"]
    maint = {"Authorization": f"Bearer {secured.tokens['maintainer']}"}
    r = requests.post(f"{base}/registered-models/alias", json={"name": "guarded", "alias": "champion",
                                                              "version": "1"}, headers=maint)
    assert r.status_code == 200
    r = requests.get(f"{base}/registered-models/alias", params={"name": "guarded", "alias": "champion"}, headers=dev)
    assert r.json()["model_version"]["version"] == "1"


def test_registered_models_of_the_same_name_live_apart_in_two_projects(secured):
    admin = {"Authorization": f"Bearer {secured.tokens['admin']}"}
    for project in ("alpha", "beta"):
        r = requests.post(f"{secured.url}/p/{project}/api/2.0/mlflow/registered-models/create",
                          json={"name": "twin", "description": project}, headers=admin)
        assert r.status_code == 200, r.text
    for project in ("alpha", "beta"):
        r = requests.get(f"{secured.url}/p/{project}/api/2.0/mlflow/registered-models/get", params={"name": "twin"},
                         headers=admin)
        assert r.json()["registered_model"]["description"] == project


def test_a_token_of_another_project_cannot_reach_artifacts_by_any_spelling(secured):
    """beta's owner writes a file; alpha's developer tries every spelling of its path, through
    alpha's prefix and the bare one, for reading, writing and deleting."""
    import http.client
    from urllib.parse import urlsplit

    owner = {"Authorization": f"Bearer {secured.tokens['other']}"}
    beta = f"{secured.url}/p/beta/api/2.0/mlflow"
    exp = requests.post(f"{beta}/experiments/create", json={"name": "vault"}, headers=owner).json()["experiment_id"]
    run = requests.post(f"{beta}/runs/create", json={"experiment_id": exp}, headers=owner).json()["run"]["info"]["run_id"]
    real = f"{exp}/{run}/artifacts/secret.txt"
    put = requests.put(f"{secured.url}/p/beta/api/2.0/mlflow-artifacts/artifacts/{real}", data=b"beta's secret",
                       headers=owner)
    assert put.status_code == 200
    encoded_exp = "".join(f"%{ord(c):02X}" for c in exp)
    spellings = [real, f"./{real}", f"{exp}//{run}/artifacts/secret.txt", f"{encoded_exp}/{run}/artifacts/secret.txt",
                 f"{exp}%2F{run}%2Fartifacts%2Fsecret.txt", f"{exp}/{run}/artifacts/./secret.txt",
                 f"0{exp}/{run}/artifacts/secret.txt", f"{exp}/{run}/artifacts/x/../secret.txt",
                 f"{exp}/{run}/artifacts/x/%2e%2e/secret.txt", f"%252e%252e/{real}"]
    dev = f"Bearer {secured.tokens['developer']}"
    host = urlsplit(secured.url)
    leaks = []
    for prefix in ("/p/alpha", ""):
        for spelling in spellings:
            for method, body in (("GET", None), ("PUT", b"overwritten"), ("DELETE", None)):
                conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
                conn.request(method, f"{prefix}/api/2.0/mlflow-artifacts/artifacts/{spelling}", body=body,
                             headers={"Authorization": dev})
                resp = conn.getresponse()
                content = resp.read()
                conn.close()
                if resp.status < 400 or b"beta's secret" in content:
                    leaks.append((method, prefix, spelling, resp.status))
    assert leaks == []
    got = requests.get(f"{secured.url}/p/beta/api/2.0/mlflow-artifacts/artifacts/{real}", headers=owner)
    assert got.content == b"beta's secret"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_audit_retention_forgets_events_older_than_the_cutoff_in_every_project_and_keeps_the_rest(
        backend, tmp_path, request):
    import sqlalchemy as sa

    from modelyard.store.audit import AuditLog
    from modelyard.store.schema import audit_events

    url = request.getfixturevalue("pg_database")() if backend == "postgres" else f"sqlite:///{tmp_path}/audit.db"
    old, cutoff, new = 1_000, 2_000, 3_000

    async def run(stores):
        await stores.projects.create("beta", None, None, None)

        def fill(conn):
            conn.execute(audit_events.insert(), [
                {"event_id": f"{project}-{t}-{i}", "time_ms": t, "project": project, "actor": "a", "action": "x",
                 "status": 200} for project in ("default", "beta") for t in (old, new) for i in range(7)])

        await stores.db.write(fill)
        dropped = await AuditLog(stores.db).drop_before(cutoff, batch=3)  # several batches per project
        left = await stores.db.read(lambda conn: sorted(
            (r.project, r.time_ms) for r in conn.execute(sa.select(audit_events.c.project, audit_events.c.time_ms))))
        return dropped, left

    dropped, left = seed(url, run)
    assert dropped == 14
    assert left == sorted([("default", new)] * 7 + [("beta", new)] * 7)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_reading_the_audit_log_waits_for_a_batch_another_flush_is_still_writing(backend, tmp_path, request):
    import asyncio
    import time

    from modelyard.store.audit import AuditLog

    url = request.getfixturevalue("pg_database")() if backend == "postgres" else f"sqlite:///{tmp_path}/audit.db"

    def hold(conn):
        # A slow write ahead of the batch keeps its insert from committing while the read comes in:
        # SQLite's one writer is busy; PostgreSQL's other writer threads wait for the table lock.
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("LOCK TABLE audit_events IN EXCLUSIVE MODE")
        time.sleep(0.5)

    async def run(stores):
        log = AuditLog(stores.db)
        log.record("default", "monitor", "alert resolved", 200, "alert_rule", "r1")
        busy = asyncio.create_task(stores.db.write(hold))
        await asyncio.sleep(0.05)
        in_flight = asyncio.create_task(log.flush())
        await asyncio.sleep(0.05)
        events = await log.list("default", 10, None, None, None)
        await asyncio.gather(busy, in_flight)
        return [(e["action"], e["object_id"]) for e in events]

    assert seed(url, run) == [("alert resolved", "r1")]


def test_experiment_zero_names_each_projects_own_default_and_another_projects_experiment_is_not_found(secured):
    owner = {"Authorization": f"Bearer {secured.tokens['other']}"}
    beta = f"{secured.url}/p/beta/api/2.0/mlflow"
    run = requests.post(f"{beta}/runs/create", json={"experiment_id": "0"}, headers=owner).json()["run"]["info"]
    default = requests.get(f"{beta}/experiments/get-by-name", params={"experiment_name": "Default"},
                           headers=owner).json()["experiment"]
    assert run["experiment_id"] == default["experiment_id"] != "0"
    assert run["artifact_uri"] == f"{default['artifact_location'].rstrip('/')}/{run['run_id']}/artifacts"
    dev = {"Authorization": f"Bearer {secured.tokens['developer']}"}
    alpha = f"{secured.url}/p/alpha/api/2.0/mlflow"
    theirs = requests.post(f"{alpha}/runs/create", json={"experiment_id": default["experiment_id"]}, headers=dev)
    assert theirs.status_code == 404 and theirs.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    found = requests.post(f"{beta}/runs/search", json={"experiment_ids": [default["experiment_id"]]},
                          headers=owner).json()["runs"]
    assert [r["info"]["run_id"] for r in found] == [run["run_id"]]
