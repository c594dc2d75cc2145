"""Fuzzing: schemathesis against the OpenAPI description of modelyard's own API (auth on, an
administrator's token), and random filter strings against every MLflow search endpoint."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ServerProcess, seed
from modelyard.settings import Settings


def _admin_token(database_url: str) -> str:
    async def make(stores):
        await stores.tokens.create_user("fuzzer", True)
        return (await stores.tokens.create_personal_token("fuzzer", "fuzz", ["api"], None))["token"]

    return seed(database_url, make)


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz") / "data"
    data.mkdir()
    token = _admin_token(Settings(data_dir=data).resolved_database_url)
    proc = ServerProcess(data, "--auth").start()
    proc.token = token
    yield proc
    proc.stop()


def test_schemathesis_finds_no_server_error_and_no_schema_violation(fuzzed_server, tmp_path):
    # Every check but positive_data_acceptance: the server enforces rules the schema cannot say
    # (name formats, ranges a handler knows), and rejects such input with a 400 by design.
    cmd = [str(Path(sys.executable).parent / "schemathesis"), "run",
           f"{fuzzed_server.url}/api/modelyard/v1/openapi.json",
           "--header", f"Authorization: Bearer {fuzzed_server.token}",
           "--checks", "all", "--exclude-checks", "positive_data_acceptance",
           "--max-examples", "25", "--seed", "20261127", "--report-dir", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    summary = result.stdout[-3000:]
    cases = re.search(r"(\d+) generated", result.stdout)
    print(f"schemathesis: {cases.group(0) if cases else '?'} cases")
    assert result.returncode == 0, summary
    assert cases and int(cases.group(1)) > 500, summary
    assert "Server error" not in result.stdout


SEARCHES = [
    ("POST", "/experiments/search", lambda f: {"json": {"filter": f}}),
    ("POST", "/runs/search", lambda f: {"json": {"experiment_ids": ["0"], "filter": f}}),
    ("GET", "/registered-models/search", lambda f: {"params": {"filter": f}}),
    ("GET", "/model-versions/search", lambda f: {"params": {"filter": f}}),
    ("POST", "/logged-models/search", lambda f: {"json": {"experiment_ids": ["0"], "filter": f}}),
]
FILTERS = (
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
    | st.builds(lambda kind, key, op, value: f"{kind}.{key} {op} {value}",
                st.sampled_from(["metrics", "params", "tags", "attributes", "datasets", "name", "run", "tag", ""]),
                st.text(max_size=10), st.sampled_from(["=", "!=", "<", ">=", "LIKE", "ILIKE", "IN", "IS NULL", "~"]),
                st.sampled_from(["'x'", "1", "1e309", "('a', 'b')", "\"q\"", "'%'", "NULL", "--", "'a''b'"]))
    | st.lists(st.sampled_from(["name = 'a'", "AND", "OR", "(", ")", "`k`", "tags.`a b` = 'c'", ";"]),
               max_size=6).map(" ".join)
)


@pytest.mark.parametrize("method, path, body", SEARCHES, ids=[s[1] for s in SEARCHES])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(filter_string=FILTERS)
def test_random_filters_on_every_search_endpoint_get_only_200_or_400(server, method, path, body, filter_string):
    r = requests.request(method, server.url + "/api/2.0/mlflow" + path, timeout=30, **body(filter_string))
    assert r.status_code in (200, 400), (filter_string, r.status_code, r.text[:300])
    if r.status_code == 400:
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
