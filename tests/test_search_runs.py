"""search_runs: MLflow's grammar, orderings, tie-breakers and pages; injections get a 400."""
import functools
import math
import random
import string

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.entities import Metric, Param, RunTag, ViewType

from conftest import unique


@pytest.fixture(scope="module")
def populated(server):
    """An experiment of 12 runs with known params, metrics and tags (made once per store)."""
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    exp = client.create_experiment(unique("search"))
    ids = []
    for i in range(12):
        run = client.create_run(exp, start_time=1000, run_name=f"run-{i:02d}")
        client.log_batch(run.info.run_id,
                         metrics=[Metric("acc", i / 10, 0, 0)] + ([Metric("loss", 1 - i / 10, 0, 0)] if i % 2 else []),
                         params=[Param("lr", ["0.1", "0.01", "0.001"][i % 3]), Param("model", f"Model-{i % 4}")],
                         tags=[RunTag("team", "A" if i < 6 else "b")])
        ids.append(run.info.run_id)
    return exp, ids


def _ids(runs):
    return [r.info.run_id for r in runs]


def test_filter_on_metric_and_param_orders_by_metric(client, populated):
    exp, ids = populated
    found = client.search_runs([exp], "metrics.acc > 0.5 and params.lr = '0.01'", order_by=["metrics.acc DESC"])
    assert _ids(found) == [ids[10], ids[7]]


def test_runs_with_the_same_start_time_page_in_run_id_order(client, populated):
    exp, ids = populated
    pages, token = [], None
    while True:
        page = client.search_runs([exp], max_results=5, page_token=token)
        pages.extend(_ids(page))
        token = page.token
        if not token:
            break
    assert pages == sorted(ids)


def test_order_by_a_metric_puts_runs_without_it_last(client, populated):
    exp, ids = populated
    found = client.search_runs([exp], order_by=["metrics.loss ASC"])
    with_loss = [ids[i] for i in (11, 9, 7, 5, 3, 1)]
    assert _ids(found)[:6] == with_loss
    assert set(_ids(found)[6:]) == {ids[i] for i in (0, 2, 4, 6, 8, 10)}


@pytest.mark.parametrize("filter_string, expected", [
    ("params.model LIKE 'Model-1'", [1, 5, 9]),
    ("params.model ILIKE 'model-1'", [1, 5, 9]),
    ("params.model LIKE 'model-1'", []),
    ("tags.team = 'A'", [0, 1, 2, 3, 4, 5]),
    ("tags.team != 'A'", [6, 7, 8, 9, 10, 11]),
    ("metrics.loss IS NULL", None),
    ("metrics.acc >= 1.1", [11]),
    ("metrics.acc <= 0.1 and metrics.acc != 0", [1]),
    ("params.lr IS NULL", []),
    ("tags.`team` = 'b' and params.`lr` = '0.1'", [6, 9]),
    ("attributes.run_name = 'run-03'", [3]),
    ("run_name LIKE 'run-1%'", [10, 11]),
    ("attributes.`Run name` = 'run-04'", [4]),
])
def test_filter_grammar_matches_mlflow(client, populated, filter_string, expected):
    exp, ids = populated
    if expected is None:
        with pytest.raises(Exception):
            client.search_runs([exp], filter_string)
        return
    found = client.search_runs([exp], filter_string)
    assert sorted(_ids(found)) == sorted(ids[i] for i in expected)


def test_run_id_in_list(client, populated):
    exp, ids = populated
    found = client.search_runs([exp], f"attributes.run_id IN ('{ids[2]}', '{ids[5]}')")
    assert sorted(_ids(found)) == sorted([ids[2], ids[5]])


@pytest.mark.parametrize("bad", [
    "metrics.acc > 0.5 OR params.lr = '0.1'",
    "params.lr = '0.1'; DROP TABLE runs; --",
    "params.lr = 0.1",
    "metrics.acc > 'high'",
    "nonsense.key = 'x'",
    "attributes.no_such_thing = 'x'",
    "params.lr = '0.1' AND",
    "(params.lr = '0.1')",
    "1 = 1",
])
def test_a_filter_the_grammar_rejects_is_invalid_parameter_value(api, populated, bad):
    exp, _ = populated
    r = api.post("/runs/search", {"experiment_ids": [exp], "filter": bad})
    assert r.status_code == 400, (bad, r.text)
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_an_injection_inside_a_quoted_value_is_just_a_value(client, api, populated):
    exp, ids = populated
    r = api.post("/runs/search", {"experiment_ids": [exp], "filter": "params.lr = '0.1'' OR ''1''=''1'"})
    assert r.status_code == 200 and r.json() == {}
    assert len(client.search_runs([exp])) == 12  # the table is intact


def test_max_results_over_50000_is_refused(api, populated):
    exp, _ = populated
    r = api.post("/runs/search", {"experiment_ids": [exp], "max_results": 123456789})
    assert r.status_code == 400
    assert "Invalid value 123456789 for parameter 'max_results' supplied" in r.json()["message"]


def test_an_invalid_page_token_is_refused(api, populated):
    exp, _ = populated
    r = api.post("/runs/search", {"experiment_ids": [exp], "page_token": "not-a-token"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
       | st.builds(lambda a, b, c: f"{a}.{b} {c} '1'",
                   st.sampled_from(["metrics", "params", "tags", "attributes", "datasets", "x"]),
                   st.text(max_size=8), st.sampled_from(["=", "!=", "<", "LIKE", "ILIKE", "IN", "IS", "~"])))
def test_random_filters_get_only_200_or_400(api, populated, filter_string):
    exp, _ = populated
    r = api.post("/runs/search", {"experiment_ids": [exp], "filter": filter_string})
    assert r.status_code in (200, 400), (filter_string, r.status_code, r.text)


# --- sorted by a metric, a param or a tag -----------------------------------------------------------
# Thirty runs whose values tie, with runs where the metric is NaN and runs without the key, five
# start times between them (so ties fall through to the run id), one deleted run, and runs of
# another experiment and of another project with the same keys that must never show up. Every
# test pages through with small pages and compares with the order MLflow defines, computed here.

def _sort_spec(i: int) -> dict:
    return {
        "start": 1_000 + (i % 5) * 100,
        "m": None if i % 7 == 3 else "nan" if i % 7 == 5 else (i * 3 % 4) / 4 - 0.5,
        "m2": None if i % 3 == 0 else "nan" if i % 11 == 4 else float(i % 2),
        "p": None if i % 5 == 2 else ("b", "a", "c", "aa")[i % 4],
        "t": None if i % 4 == 1 else ("x", "-", "y", "x")[i % 4],
    }


def _logged(spec: dict) -> tuple[list, list, list]:
    metrics = [(k, math.nan if spec[k] == "nan" else spec[k]) for k in ("m", "m2") if spec[k] is not None]
    return metrics, [("p", spec["p"])] if spec["p"] else [], [("t", spec["t"])] if spec["t"] else []


@pytest.fixture(scope="module")
def sortable(server):
    """{run_id: spec} of the experiment's 30 active runs, its id, and the deleted run's id and spec."""
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    exp = client.create_experiment(unique("sorted"))
    runs = {}
    for i in range(31):
        spec = _sort_spec(i) if i < 30 else {"start": 1_000, "m": -9.0, "m2": 9.0, "p": "0", "t": "0"}
        run = client.create_run(exp, start_time=spec["start"])
        metrics, params, tags = _logged(spec)
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics],
                         params=[Param(k, v) for k, v in params], tags=[RunTag(k, v) for k, v in tags])
        runs[run.info.run_id] = spec
    deleted = run.info.run_id
    client.delete_run(deleted)
    # Same keys, values that would sort first: in another experiment, and in another project.
    other = client.create_experiment(unique("sorted-other"))
    project = unique("sorted-project")
    assert requests.post(server.url + "/api/modelyard/v1/projects", json={"name": project}, timeout=30).ok
    elsewhere = MlflowClient(f"{server.url}/p/{project}")
    foreign = elsewhere.create_experiment(unique("sorted-foreign"))
    for c, e in ((client, other), (elsewhere, foreign)):
        for _ in range(3):
            run = c.create_run(e, start_time=5_000)
            c.log_batch(run.info.run_id, metrics=[Metric("m", -9.0, 0, 0), Metric("m2", 9.0, 0, 0)],
                        params=[Param("p", "0")], tags=[RunTag("t", "0")])
    deleted_spec = runs.pop(deleted)
    return {"exp": exp, "runs": runs, "deleted": (deleted, deleted_spec), "foreign": foreign}


def _term(spec: dict, kind: str, key: str):
    """(rank, value): values first, then (for a metric) NaN, then no value at all."""
    v = spec[key]
    if v is None:
        return 2, None
    if v == "nan":
        return 1, None
    return 0, v


def _expected(runs: dict, order_by: list[str], keep=lambda spec: True) -> list[str]:
    """The run ids in MLflow's order: the order terms, then start_time DESC, then run_id."""
    terms = []
    for clause in order_by:
        ident, direction = clause.split()
        kind, key = ident.split(".")
        terms.append((kind, key, direction == "ASC"))

    def compare(a, b):
        (ida, sa_), (idb, sb) = a, b
        for kind, key, ascending in terms:
            if kind == "attributes":
                if sa_[key] != sb[key]:
                    return (-1 if sa_[key] < sb[key] else 1) * (1 if ascending else -1)
                continue
            (ra, va), (rb, vb) = _term(sa_, kind, key), _term(sb, kind, key)
            if ra != rb:
                return -1 if ra < rb else 1
            if va != vb:
                return (-1 if va < vb else 1) * (1 if ascending else -1)
        if not any(t[:2] == ("attributes", "start") for t in terms) and sa_["start"] != sb["start"]:
            return -1 if sa_["start"] > sb["start"] else 1
        return -1 if ida < idb else 1

    return [rid for rid, _ in sorted(((r, s) for r, s in runs.items() if keep(s)), key=functools.cmp_to_key(compare))]


def _all_pages(client, exp_ids, order_by, size, filter_string="", view=ViewType.ACTIVE_ONLY) -> list[str]:
    found, token = [], None
    for _ in range(100):
        page = client.search_runs(exp_ids, filter_string, view, max_results=size, order_by=order_by, page_token=token)
        assert len(page) <= size
        found.extend(_ids(page))
        token = page.token
        if not token:
            return found
    raise AssertionError("more pages than runs")


_ORDERS = [
    ["metrics.m ASC"], ["metrics.m DESC"], ["params.p ASC"], ["params.p DESC"], ["tags.t ASC"], ["tags.t DESC"],
    ["metrics.m DESC", "params.p ASC"], ["params.p ASC", "metrics.m2 DESC"], ["tags.t DESC", "attributes.start ASC"],
    ["tags.t ASC", "metrics.m ASC"], ["attributes.start DESC", "metrics.m DESC"],
]


def _wire(order_by: list[str]) -> list[str]:
    return [o.replace("attributes.start", "attributes.start_time") for o in order_by]


@pytest.mark.parametrize("order_by", _ORDERS, ids=" then ".join)
def test_runs_sorted_by_a_metric_param_or_tag_page_in_mlflows_order_missing_and_nan_last(client, sortable, order_by):
    expected = _expected(sortable["runs"], order_by)
    assert len(expected) == 30
    for size in (1, 4, 7, 1000):  # size 1 starts a page at every run, segment boundaries included
        assert _all_pages(client, [sortable["exp"]], _wire(order_by), size) == expected, size


_FILTERED = [
    ("metrics.m > -0.3", ["metrics.m DESC"], lambda s: _term(s, "metrics", "m")[0] == 0 and s["m"] > -0.3),
    ("metrics.m <= 0", ["metrics.m ASC", "tags.t DESC"], lambda s: _term(s, "metrics", "m")[0] == 0 and s["m"] <= 0),
    ("params.p = 'a'", ["params.p DESC"], lambda s: s["p"] == "a"),
    ("params.p LIKE 'a%'", ["params.p ASC"], lambda s: (s["p"] or "").startswith("a")),
    ("params.p != 'a'", ["params.p ASC"], lambda s: s["p"] not in (None, "a")),
    ("params.p IS NULL", ["params.p DESC"], lambda s: s["p"] is None),
    ("tags.t = 'x'", ["metrics.m ASC"], lambda s: s["t"] == "x"),
    ("metrics.m2 < 0.5", ["params.p DESC"], lambda s: _term(s, "metrics", "m2")[0] == 0 and s["m2"] < 0.5),
    ("tags.t != 'y' and metrics.m >= -0.25", ["tags.t ASC", "metrics.m2 ASC"],
     lambda s: s["t"] not in (None, "y") and _term(s, "metrics", "m")[0] == 0 and s["m"] >= -0.25),
]


@pytest.mark.parametrize("filter_string, order_by, keep", _FILTERED)
def test_a_filter_on_the_sort_key_or_another_key_keeps_the_order_on_every_page(client, sortable, filter_string,
                                                                              order_by, keep):
    expected = _expected(sortable["runs"], order_by, keep)
    assert expected, "a filter that keeps nothing tests nothing"
    for size in (1, 3, 1000):
        assert _all_pages(client, [sortable["exp"]], order_by, size, filter_string) == expected, size


def test_a_deleted_run_is_sorted_in_only_when_deleted_runs_are_asked_for(client, sortable):
    deleted, spec = sortable["deleted"]
    everything = {**sortable["runs"], deleted: spec}
    for order_by in (["metrics.m ASC"], ["params.p DESC"]):
        assert _all_pages(client, [sortable["exp"]], order_by, 4, view=ViewType.ALL) == _expected(everything, order_by)
        assert _all_pages(client, [sortable["exp"]], order_by, 4, view=ViewType.DELETED_ONLY) == [deleted]


def test_runs_of_another_project_with_the_same_keys_stay_out_even_when_its_experiment_is_named(client, sortable):
    order_by = ["metrics.m ASC"]
    found = _all_pages(client, [sortable["exp"], sortable["foreign"]], order_by, 4)
    assert found == _expected(sortable["runs"], order_by)


@pytest.mark.parametrize("many, dense, split_until", [(0, 1, 10**9), (0, 10**9, 10**9), (10**9, 1, 10**9), (0, 1, 9)],
                         ids=["walking values, big groups by walking runs", "walking values, groups sorted",
                              "reading runs", "one query past the first pages"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_way_a_sorted_page_can_be_read_gives_the_same_order(tmp_path, monkeypatch, request, backend, many,
                                                                   dense, split_until):
    """The server tests above have too few runs for the value index to be walked, or to filter on
    other keys before it; here the thresholds are moved so that the same runs are read every way."""
    import asyncio

    from modelyard.settings import Settings
    from modelyard.store import Stores, _runs_search
    from modelyard.store.db import Database
    from modelyard.store.migrate import upgrade

    monkeypatch.setattr(_runs_search, "_MANY", many)
    monkeypatch.setattr(_runs_search, "_DENSE", dense)
    monkeypatch.setattr(_runs_search, "_SPLIT_UNTIL", split_until)
    url = f"sqlite:///{tmp_path / 'walk.db'}"
    if backend == "postgres":
        url = Settings(database_url=request.getfixturevalue("pg_database")()).resolved_database_url
    db = Database(url)
    upgrade(db.write_engine)
    stores = Stores(db, artifact_root="mlflow-artifacts:")
    stores.projects.ensure_default()
    stores.experiments.ensure_default()

    async def all_pages(exp, filter_string, order_by, size):
        found, token = [], None
        while True:
            page, token = await stores.runs.search("default", [exp], filter_string, "ACTIVE_ONLY", size, order_by,
                                                   token)
            found += [r["info"]["run_id"] for r in page]
            if not token:
                return found

    async def check():
        db.start()
        exp = await stores.experiments.create("default", "walk", None, [])
        runs = {}
        for i in range(30):
            spec = _sort_spec(i)
            run = await stores.runs.create("default", exp, None, spec["start"], None, [])
            metrics, params, tags = _logged(spec)
            await stores.runs.log_batch("default", run["info"]["run_id"],
                                        [{"key": k, "value": v, "timestamp": 0, "step": 0} for k, v in metrics],
                                        [{"key": k, "value": v} for k, v in params],
                                        [{"key": k, "value": v} for k, v in tags])
            runs[run["info"]["run_id"]] = spec
        cases = [(None, order_by, lambda s: True) for order_by in _ORDERS] + _FILTERED
        for filter_string, order_by, keep in cases:
            expected = _expected(runs, order_by, keep)
            for size in (1, 4):
                assert await all_pages(exp, filter_string, _wire(order_by), size) == expected, (filter_string, order_by)

    try:
        asyncio.run(check())
    finally:
        db.close()


def test_values_too_long_for_an_index_are_logged_and_sorted_like_the_rest(client):
    """PostgreSQL indexes values of up to 256 characters; longer ones (up to 6,000 for a param,
    8,000 for a tag, and not compressible) must still be logged, and sorted in their place."""
    rng = random.Random(7)
    exp = client.create_experiment(unique("long-values"))
    values = {}
    for i, length in enumerate((5, 300, 6000, 256, 257, 8000, 40)):
        run = client.create_run(exp, start_time=1_000)
        value = "".join(rng.choices(string.ascii_lowercase, k=length))
        client.log_batch(run.info.run_id, params=[Param("p", value[:6000])], tags=[RunTag("t", value)])
        values[run.info.run_id] = value
    bare = client.create_run(exp, start_time=1_000).info.run_id  # without either
    for key, cut in (("params.p", 6000), ("tags.t", 8000)):
        for direction in ("ASC", "DESC"):
            expected = sorted(values, key=lambda r: values[r][:cut], reverse=direction == "DESC") + [bare]
            assert _all_pages(client, [exp], [f"{key} {direction}"], 3) == expected, (key, direction)
