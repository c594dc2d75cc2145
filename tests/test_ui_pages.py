"""The UI's pages over HTTP, without a browser: who may see them, what they render from data
logged by the real mlflow client (SQLite and PostgreSQL), CSV export, paging, errors, the
static files and the charting library served from the installed plotly package."""
from __future__ import annotations

import csv
import gzip
import io
import re
import uuid

import pytest
import requests

from test_ui_support import HOSTILE_MARKDOWN, secured_server

HTML = {"Accept": "text/html,application/xhtml+xml"}


def get(url: str, **kw) -> requests.Response:
    return requests.get(url, headers={**HTML, **kw.pop("headers", {})}, timeout=30, **kw)


def run_ids_on(page: str) -> list[str]:
    return re.findall(r'<tr data-run="([0-9a-f]{32})">', page)


@pytest.fixture()
def experiment(tracking):
    """An experiment of 7 runs with params, metrics and tags; returns (id, runs oldest first)."""
    name = f"ui-{uuid.uuid4().hex[:8]}"
    exp_id = tracking.create_experiment(name)
    runs = []
    for i in range(7):
        with tracking.start_run(experiment_id=exp_id, run_name=f"r{i}") as run:
            tracking.log_params({"lr": str(0.1 * (i + 1)), "kind": "odd" if i % 2 else "even"})
            tracking.log_metric("score", i / 10, step=0)
            tracking.log_metric("score", i / 5, step=1)
            tracking.set_tag("team", "a, \"quoted\"" if i == 0 else "b")
            runs.append(run.info.run_id)
    return exp_id, name, runs


def test_the_experiments_list_and_an_experiment_render_with_every_run_and_its_chosen_columns(server, experiment):
    exp_id, name, runs = experiment
    page = get(f"{server.url}/experiments", params={"q": name})
    assert page.status_code == 200 and f'href="/experiments/{exp_id}"' in page.text
    page = get(f"{server.url}/experiments/{exp_id}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert run_ids_on(page.text) == runs[::-1]  # newest first
    for header in ('title="metrics.score"', 'title="params.lr"', 'title="params.kind"'):
        assert header in page.text
    page = get(f"{server.url}/experiments/{exp_id}", params=[("c", "tags.team"), ("c", "metrics.score")])
    headers = re.findall(r'<a href="[^"]*" title="([^"]+)">', page.text)
    assert headers == ["tags.team", "metrics.score"]
    assert "a, &#34;quoted&#34;" in page.text  # a tag value, escaped


def test_the_filter_grammar_and_sorting_pick_and_order_the_runs(server, experiment):
    exp_id, _, runs = experiment
    page = get(f"{server.url}/experiments/{exp_id}",
               params={"filter": "params.kind = 'odd' and metrics.score >= 0.4", "order": "metrics.score ASC"})
    assert run_ids_on(page.text) == [runs[3], runs[5]]
    page = get(f"{server.url}/experiments/{exp_id}", params={"filter": "metrics.score >"})
    assert page.status_code == 400 and 'role="alert"' in page.text and run_ids_on(page.text) == []


def test_paging_walks_every_run_once_with_next_and_previous_links(server, experiment):
    exp_id, _, runs = experiment
    seen, url = [], f"{server.url}/experiments/{exp_id}?n=3"
    while url:
        page = get(url)
        seen += run_ids_on(page.text)
        found = re.search(r'<a href="\?([^"]+)" rel="next">', page.text)
        url = f"{server.url}/experiments/{exp_id}?" + found.group(1).replace("&amp;", "&") if found else None
    assert seen == runs[::-1]
    last = get(f"{server.url}/experiments/{exp_id}", params={"n": 3, "offset": 6})
    assert 'rel="prev"' in last.text and 'rel="next"' not in last.text and "Runs 7–7" in last.text


def test_csv_export_has_a_row_per_matching_run_and_the_chosen_columns(server, experiment):
    exp_id, name, runs = experiment
    r = requests.get(f"{server.url}/experiments/{exp_id}/runs.csv",
                     params=[("filter", "params.kind = 'even'"), ("c", "params.lr"), ("c", "tags.team")], timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f'filename="{name}-runs.csv"' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["run_id"] for row in rows] == [runs[6], runs[4], runs[2], runs[0]]
    assert rows[-1]["tags.team"] == 'a, "quoted"' and rows[0]["params.lr"] == "0.7000000000000001"
    everything = list(csv.DictReader(io.StringIO(requests.get(
        f"{server.url}/experiments/{exp_id}/runs.csv", timeout=30).text)))
    assert len(everything) == 7 and {"metrics.score", "params.kind", "params.lr", "tags.team"} <= set(everything[0])
    assert {row["metrics.score"] for row in everything} == {str(i / 5) for i in range(7)}


def test_a_run_page_shows_params_metrics_tags_and_its_charts_use_the_bulk_interval_endpoint(server, experiment):
    _, _, runs = experiment
    page = get(f"{server.url}/runs/{runs[2]}")
    assert page.status_code == 200
    assert re.search(r'<td class="key">lr</td><td class="value">0\.30000000000000004</td>', page.text)
    assert re.search(r">score</a></td><td class=\"num\">0\.4</td><td class=\"num\">1</td>", page.text)
    charts = get(f"{server.url}/runs/{runs[2]}", params={"tab": "charts"})
    assert 'data-metric-chart data-key="score"' in charts.text
    data = requests.get(f"{server.url}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                        params={"run_ids": runs[2], "metric_key": "score", "max_results": 1000}, timeout=30).json()
    assert [(m["step"], m["value"]) for m in data["metrics"]] == [(0, 0.2), (1, 0.4)]


def test_compare_takes_two_to_twenty_runs_and_marks_the_params_that_differ(server, experiment):
    _, _, runs = experiment
    page = get(f"{server.url}/compare", params=[("runs", runs[0]), ("runs", runs[2])])
    assert page.status_code == 200
    assert re.search(r'<tr class="diff"><td class="key">lr', page.text)
    assert re.search(r'<tr class=""><td class="key">kind', page.text)
    only = get(f"{server.url}/compare", params=[("runs", f"{runs[0]},{runs[2]}"), ("diff", "1")])
    assert 'class="key">kind' not in only.text and 'class="key">lr' in only.text
    assert get(f"{server.url}/compare", params={"runs": runs[0]}).status_code == 400
    many = get(f"{server.url}/compare", params={"runs": ",".join(uuid.uuid4().hex for _ in range(21))})
    assert many.status_code == 400 and "2 to 20" in many.text


def test_a_missing_run_is_a_404_page_for_a_browser_and_json_for_a_script(server):
    page = get(f"{server.url}/runs/{'0' * 32}")
    assert page.status_code == 404 and "<h1>Not found</h1>" in page.text
    r = requests.get(f"{server.url}/runs/{'0' * 32}", timeout=30)
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_a_model_description_is_markdown_with_its_html_escaped(server, client):
    name = f"ui-model-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name, description=HOSTILE_MARKDOWN)
    page = get(f"{server.url}/models/{name}")
    assert page.status_code == 200
    assert "<h2>Churn model</h2>" in page.text and "<strong>churn</strong>" in page.text
    assert "<script>" not in page.text.split('<div class="markdown">')[1].split("</div>")[0]
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page.text
    assert 'href="javascript:' not in page.text and "<img src=x" not in page.text
    assert "<td>auc</td>" in page.text


def test_alias_moves_show_who_moved_them(server, client, tracking):
    name = f"ui-alias-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    with tracking.start_run() as run:
        pass
    for _ in range(2):
        client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(name, "staging", "1")
    client.set_registered_model_alias(name, "staging", "2")
    client.delete_registered_model_alias(name, "staging")
    client.set_registered_model_alias(name, "prod", "1")
    import time

    time.sleep(0.5)  # the audit log is written every 200 ms
    page = get(f"{server.url}/models/{name}")
    history = page.text.split("<h2>Alias history</h2>")[1]
    moves = re.findall(r'<span class="alias">@(\w+)</span></td>\s*<td>(\w+)(?: → v(\d+))?', history)
    assert moves == [("prod", "set", "1"), ("staging", "removed", ""), ("staging", "set", "2"), ("staging", "set", "1")]
    version = get(f"{server.url}/models/{name}/versions/1")
    assert f'href="/runs/{run.info.run_id}"' in version.text


def test_the_charting_library_comes_from_the_installed_plotly_package_compressed_and_cached(server):
    import plotly

    from pathlib import Path

    shipped = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    r = requests.get(f"{server.url}/static/plotly.min.js", headers={"Accept-Encoding": "gzip"}, timeout=60, stream=True)
    raw = r.raw.read()
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == shipped and len(raw) < len(shipped) / 2
    assert "immutable" in r.headers["cache-control"]
    css = requests.get(f"{server.url}/static/app.css", timeout=30)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert requests.get(f"{server.url}/static/..%2Fpages.py", timeout=30).status_code == 404
    assert requests.get(f"{server.url}/static/nothing.js", timeout=30).status_code == 404


def test_pages_say_how_long_the_server_took_and_forbid_inline_scripts(server):
    r = get(f"{server.url}/experiments")
    assert re.fullmatch(r"app;dur=\d+\.\d", r.headers["server-timing"])
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"


# -- with --auth ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    proc = secured_server(tmp_path_factory.mktemp("ui-auth") / "data")
    yield proc
    proc.stop()


def test_a_page_sends_a_browser_without_a_session_to_sign_in_and_refuses_a_script_in_json(secured):
    r = get(f"{secured.url}/experiments/0", params={"view": "all"}, allow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fexperiments%2F0%3Fview%3Dall"
    r = requests.get(f"{secured.url}/experiments/0", timeout=30, allow_redirects=False)
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
    r = get(f"{secured.url}/experiments/0", headers={"Authorization": "Bearer myd_nope"}, allow_redirects=False)
    assert r.status_code == 303
    # the sign-in page itself and its stylesheet are open
    assert get(f"{secured.url}/login").status_code == 200
    assert requests.get(f"{secured.url}/static/app.css", timeout=30).status_code == 200


def test_a_session_cookie_opens_the_pages_of_its_projects_only(secured):
    s = requests.Session()
    r = s.post(f"{secured.url}/login", data={"username": "otto", "token": secured.tokens["outsider"],
                                              "next": "/p/other/experiments"}, allow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/p/other/experiments"
    page = s.get(f"{secured.url}/p/other/experiments", headers=HTML, timeout=30)
    assert page.status_code == 200 and "otto" in page.text
    assert 'name="csrf" value="' + s.cookies["modelyard_csrf"] + '"' in page.text  # the sign-out form
    refused = s.get(f"{secured.url}/experiments", headers=HTML, timeout=30)
    assert refused.status_code == 403 and "not a member of project &#39;default&#39;" in refused.text
    assert s.get(f"{secured.url}/experiments", timeout=30).json()["error_code"] == "PERMISSION_DENIED"


def test_each_project_shows_its_own_experiments(secured):
    admin = {"Authorization": f"Bearer {secured.tokens['admin']}"}
    name = f"only-in-other-{uuid.uuid4().hex[:6]}"
    requests.post(f"{secured.url}/p/other/api/2.0/mlflow/experiments/create", json={"name": name}, headers=admin,
                  timeout=30).raise_for_status()
    assert name in get(f"{secured.url}/p/other/experiments", headers=admin).text
    assert name not in get(f"{secured.url}/experiments", headers=admin).text
    page = get(f"{secured.url}/p/other/experiments", headers=admin)
    assert 'href="/p/other/experiments/' in page.text and 'href="/static/app.css' in page.text
    switch = requests.get(f"{secured.url}/projects/switch", params={"to": "other", "section": "models"},
                          allow_redirects=False, timeout=30)
    assert switch.headers["location"] == "/p/other/models"
