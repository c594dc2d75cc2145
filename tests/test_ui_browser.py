"""The web UI in a real browser (Debian's chromium through Playwright) against a real server with
``--auth``: sign in, an experiment logged by the real mlflow client, filtering with MLflow's
grammar, charts, artifacts, compare, a model version's lineage, a deployment with a firing alert,
a pipeline's DAG, the keyboard, a phone's screen and dark mode.

Screenshots of each main page go to ``$MODELYARD_SCREENSHOTS`` when it is set (``make screenshots``
writes the ones in docs/screenshots/), else to a temporary folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from test_ui_support import (Api, chromium, deployment_with_firing_alert, log_runs, pipeline_run, register_model,
                             secured_server, sign_in, tracking_env)

# Under CI the browser must be there (make test installs it): a missing one fails, never skips.
pytestmark = pytest.mark.skipif(not Path("/usr/bin/chromium").exists() and not os.environ.get("CI"),
                                reason="needs Debian's chromium (make test installs it)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    server = secured_server(tmp / "data")
    token = server.tokens["admin"]
    with tracking_env(server.url, token) as mlflow:
        runs = log_runs(mlflow, "churn-experiments", 12, tmp)
        model = register_model(mlflow, "churn-model", tmp, server.url)
    api = Api(server.url, token)
    pipeline = pipeline_run(api, "churn-model", "2", model["versions"][1]["run_id"])
    deployment = deployment_with_firing_alert(api, "churn-model")
    yield {"server": server, "url": server.url, "token": token, "runs": runs, "model": model, "pipeline": pipeline,
           "deployment": deployment, "experiment_id": runs[0]["experiment_id"]}
    server.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    target = os.environ.get("MODELYARD_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def context(site, browser):
    """A browser context signed in through the sign-in form, shared by the tests below."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    page.goto(site["url"] + "/experiments")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=token]", site["token"])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/experiments$"))
    page.close()
    yield ctx
    ctx.close()


@pytest.fixture()
def page(context):
    """A page that fails the test on any script error or refused resource."""
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    p.expected_errors = []  # a test that loads a refused page on purpose lists its status here
    yield p
    p.close()
    assert [e for e in errors if not any(f"status of {code}" in e for code in p.expected_errors)] == []


def shot(page, shots: Path, name: str, height: int | None = None) -> None:
    """The top of the page; ``height`` px of it when taller than the window."""
    page.evaluate("window.scrollTo(0, 0)")
    if height:
        width = page.viewport_size["width"]
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True, clip={"x": 0, "y": 0, "width": width,
                                                                                "height": height})
    else:
        page.screenshot(path=str(shots / f"{name}.png"))


def test_a_browser_that_is_not_signed_in_signs_in_and_comes_back_to_the_page_it_asked_for(site, browser, shots):
    with browser.new_context(viewport={"width": 1280, "height": 800}) as ctx:
        page = ctx.new_page()
        target = f"{site['url']}/experiments/{site['experiment_id']}"
        page.goto(target)
        assert "/login?next=" in page.url
        page.fill("input[name=username]", "ada")
        page.fill("input[name=token]", "myd_wrong")
        page.click("button[type=submit]")
        assert page.text_content("[role=alert]").strip() == "Unknown username or token."
        shot(page, shots, "sign-in")
        page.fill("input[name=username]", "ada")
        page.fill("input[name=token]", site["token"])
        page.click("button[type=submit]")
        page.wait_for_url(target)
        assert page.text_content("h1").startswith("churn-experiments")
        assert ctx.cookies()[0]["httpOnly"] or any(c["name"] == "modelyard_session" and c["httpOnly"]
                                                   for c in ctx.cookies())


def _follow(page, target) -> None:
    """Click a link or button (a selector or a locator) that loads a new page, and wait until that page has loaded."""
    with page.expect_navigation():
        page.locator(target).click() if isinstance(target, str) else target.click()


def _names(page) -> list[str]:
    return [t.strip() for t in page.locator("table.runs tbody tr[data-run] td:nth-child(2) a").all_text_contents()]


def test_the_experiment_list_finds_an_experiment_by_name(site, page, shots):
    page.goto(site["url"] + "/experiments")
    page.fill("input[name=q]", "churn-exp")
    page.press("input[name=q]", "Enter")
    assert page.locator("tbody a").all_text_contents() == ["churn-experiments"]
    page.fill("input[name=q]", "")
    page.press("input[name=q]", "Enter")
    shot(page, shots, "experiments")
    page.click("text=churn-experiments")
    page.wait_for_url(re.compile(r"/experiments/\d+$"))


def test_runs_filtered_with_mlflow_grammar_and_sorted_by_a_metric_column(site, page, shots):
    page.goto(f"{site['url']}/experiments/{site['experiment_id']}")
    assert len(_names(page)) == 12
    page.fill("input[name=filter]", "params.model = 'tree' and metrics.accuracy > 0.9")
    page.press("input[name=filter]", "Enter")
    page.wait_for_load_state()
    expected = {r["name"] for r in site["runs"] if r["model"] == "tree" and r["accuracy"] > 0.9}
    assert expected and set(_names(page)) == expected
    # sort by the accuracy column: descending first, then ascending
    _follow(page, "thead th a[title='metrics.accuracy']")
    wanted = [r["name"] for r in sorted((r for r in site["runs"] if r["name"] in expected), key=lambda r: -r["accuracy"])]
    assert _names(page) == wanted
    assert "order=metrics.accuracy+DESC" in page.url
    _follow(page, "thead th a[title='metrics.accuracy']")
    assert _names(page) == wanted[::-1]
    page.goto(f"{site['url']}/experiments/{site['experiment_id']}")
    shot(page, shots, "runs")


def test_a_filter_the_grammar_refuses_is_explained_on_the_page(site, page):
    page.expected_errors = [400]
    response = page.goto(f"{site['url']}/experiments/{site['experiment_id']}?filter=metrics.accuracy+%3E%3E+1")
    assert response.status == 400
    assert "metrics.accuracy" in page.text_content("[role=alert]")
    assert _names(page) == []


def test_the_columns_chooser_shows_only_the_chosen_keys_and_they_stay_while_paging(site, page):
    page.goto(f"{site['url']}/experiments/{site['experiment_id']}?n=5")
    headers = page.locator("thead th a[title]").evaluate_all("els => els.map(e => e.title)")
    assert set(headers) == {"metrics.accuracy", "metrics.loss", "params.depth", "params.lr", "params.model"}
    page.click("details.columns summary")
    page.uncheck("details.columns input[value='metrics.loss']")
    page.uncheck("details.columns input[value='params.depth']")
    page.check("details.columns input[value='tags.team']")
    _follow(page, "details.columns button[type=submit]")
    headers = page.locator("thead th a[title]").evaluate_all("els => els.map(e => e.title)")
    assert headers == ["metrics.accuracy", "params.lr", "params.model", "tags.team"]
    _follow(page, "a[rel=next]")
    assert page.locator("thead th a[title]").evaluate_all("els => els.map(e => e.title)") == headers
    assert page.text_content(".pager .hint").strip() == "Runs 6–10"
    assert len(_names(page)) == 5


def _chart_traces(page, selector: str) -> list[dict]:
    return page.eval_on_selector(selector, "el => el.data.map(t => ({name: t.name, n: t.y.length, opacity: t.opacity}))")


def test_a_run_chart_draws_every_step_with_log_scale_and_smoothing(site, page, shots):
    run = site["runs"][0]
    page.goto(f"{site['url']}/runs/{run['run_id']}?tab=charts")
    chart = "[data-metric-chart][data-key='loss']"
    page.wait_for_selector(chart + "[data-drawn]")
    traces = _chart_traces(page, chart)
    assert traces == [{"name": run["name"], "n": 30, "opacity": None}]
    page.check("[data-log-scale]")
    assert page.eval_on_selector(chart, "el => el._fullLayout.yaxis.type") == "log"
    page.fill("[data-smoothing]", "0.8")
    traces = _chart_traces(page, chart)
    assert [t["name"] for t in traces] == [f"{run['name']} (raw)", run["name"]]
    smoothed = page.eval_on_selector(chart, "el => el.data[1].y")
    raw = page.eval_on_selector(chart, "el => el.data[0].y")
    assert smoothed[0] == pytest.approx(raw[0]) and smoothed[-1] != pytest.approx(raw[-1])
    page.uncheck("[data-log-scale]")
    page.fill("[data-smoothing]", "0")
    shot(page, shots, "run-charts")


def test_artifacts_preview_json_tables_images_and_text_without_running_anything(site, page, shots):
    run = site["runs"][0]["run_id"]
    base = f"{site['url']}/runs/{run}?tab=artifacts"
    page.goto(base + "&file=config.json")
    text = page.text_content("pre.json")
    assert '"layers": [\n    64,' in text and "<b>not bold</b>" in text
    assert page.locator(".preview b").count() == 0
    page.goto(base + "&path=eval")
    _follow(page, "text=predictions.csv")
    assert page.locator(".preview thead th").all_text_contents() == ["id", "score", "label"]
    assert page.locator(".preview tbody tr").count() == 10
    page.click("text=roc.png")
    page.wait_for_function("() => document.querySelector('.preview img').naturalWidth === 24")
    shot(page, shots, "run-artifacts")
    page.goto(base + "&path=logs&file=logs/train.log")
    assert "<script>window.pwned = 4</script>" in page.text_content(".preview pre")
    assert page.evaluate("window.pwned") is None


def test_comparing_runs_draws_parallel_coordinates_a_scatter_and_the_param_diff(site, page, shots):
    page.goto(f"{site['url']}/experiments/{site['experiment_id']}")
    rows = page.locator("table.runs tbody tr[data-run]")
    for i in (0, 1, 2):
        rows.nth(i).locator("input[type=checkbox]").check()
    assert page.text_content("[data-selection-count]") == "3 selected"
    picked = [rows.nth(i).get_attribute("data-run") for i in (0, 1, 2)]
    page.click("text=Compare selected")
    page.wait_for_url(re.compile(r"/compare\?"))
    page.wait_for_selector("[data-parcoords][data-drawn]")
    axes = page.eval_on_selector("[data-parcoords]", "el => el.layout.annotations.filter(a => a.y > 1).map(a => a.text)")
    assert axes == ["<b>depth</b>", "<b>lr</b>", "<b>accuracy</b>", "<b>loss</b>"]
    assert len(page.eval_on_selector("[data-parcoords]", "el => el.data")) == 3
    page.select_option("[data-scatter-x]", "lr")
    xs = page.eval_on_selector("[data-scatter]", "el => el.data[0].x")
    by_id = {r["run_id"]: r for r in site["runs"]}
    assert xs == [by_id[r]["lr"] for r in picked]
    differing = page.locator("table.compare tbody tr.diff td.key").all_text_contents()
    assert [d.split()[0] for d in differing] == ["depth", "lr", "model"]
    page.locator("[data-metric-chart][data-key='accuracy']").scroll_into_view_if_needed()
    page.wait_for_selector("[data-metric-chart][data-key='accuracy'][data-drawn]")
    assert len(_chart_traces(page, "[data-metric-chart][data-key='accuracy']")) == 3
    shot(page, shots, "compare", 1300)


def test_a_model_version_leads_back_to_its_run_data_pipeline_and_commit_and_on_to_its_deployment(site, page, shots):
    page.goto(site["url"] + "/models")
    _follow(page, "text=churn-model")
    # the Markdown description is rendered, its HTML and javascript: link are not
    assert page.text_content(".markdown h2") == "Churn model"
    assert page.locator(".markdown table td").all_text_contents() == ["auc", "0.91"]
    assert page.locator(".markdown script, .markdown img, .markdown a[href^='javascript']").count() == 0
    assert page.evaluate("window.pwned") is None
    champion = page.locator("section:has(h2:text('Aliases')) p:has-text('@champion')").text_content()
    assert "version 2" in champion and "set by ada" in champion
    page.click("text=Version 2 >> nth=0")
    page.wait_for_url(re.compile(r"/versions/2$"))
    lineage = page.locator(".lineage")
    assert "churn-train" in lineage.text_content()
    assert "3f2a9c1d0b7e" in lineage.text_content()
    pipe = site["pipeline"]
    assert f"{pipe['pipeline']} #{pipe['number']}" in lineage.text_content()
    assert site["deployment"]["deployment"] in lineage.locator("#lin-deploy + p, section[aria-labelledby=lin-deploy]").first.text_content()
    assert "90%" in lineage.text_content()
    shot(page, shots, "model-version")
    page.click("[data-lineage-run]")
    page.wait_for_url(re.compile(r"/runs/" + site["model"]["versions"][1]["run_id"]))
    assert page.text_content("h1").startswith("train-v2")
    assert "Registered as churn-model version 2" in " ".join(page.text_content("main").split())


def test_a_deployment_shows_its_firing_alert_charts_and_drift_and_the_alert_can_be_silenced(site, page, shots):
    dep = site["deployment"]
    page.goto(site["url"] + "/deployments")
    row = page.locator(f"tr:has(a:text('{dep['deployment']}'))")
    assert "1 firing" in row.text_content() or "firing" in row.text_content()
    _follow(page, row.locator(f"a:text('{dep['deployment']}')"))
    firing = page.locator("section[aria-labelledby=firing-h] tbody tr")
    assert firing.count() >= 1 and dep["rule"] in firing.first.text_content()
    assert "firing" in firing.first.text_content()
    page.wait_for_selector("[data-monitor-charts] [data-series='traffic_per_second'][data-drawn]")
    rate = page.eval_on_selector("[data-series='traffic_per_second']", "el => el.data[0].y.length")
    assert rate == 6
    page.wait_for_selector("[data-histogram][data-drawn]")
    bars = page.eval_on_selector("[data-histogram]", "el => el.data.map(t => t.name)")
    assert bars == ["reference", "current"]
    assert "accuracy" in page.text_content("main")
    shot(page, shots, "deployment", 1500)
    page.locator("section[aria-labelledby=firing-h] [data-silence]").first.click()
    page.wait_for_load_state("load")
    page.wait_for_selector("section[aria-labelledby=firing-h] .badge.silenced")
    assert dep["deployment"] in page.locator("table:has(th:text('Matchers')) tbody").text_content()


def test_a_pipeline_run_draws_its_dag_with_job_states_and_opens_a_job_log(site, page, shots):
    pipe = site["pipeline"]
    page.goto(site["url"] + "/pipelines")
    _follow(page, f"text={pipe['pipeline']} #{pipe['number']}")
    nodes = page.locator("svg.dag a")
    assert nodes.count() == 4
    states = nodes.evaluate_all("els => els.map(e => [e.querySelector('text').textContent, e.getAttribute('class')])")
    assert states == [["prepare", "CACHED"], ["train", "SUCCEEDED"], ["evaluate", "SUCCEEDED"], ["register", "SUCCEEDED"]]
    assert page.locator("svg.dag path.edge").count() == 4
    assert "hit" in page.locator("#job-prepare").text_content()
    assert "5.0 s" in page.locator("#job-train").text_content()
    shot(page, shots, "pipeline")
    _follow(page, "#job-train a:text('log')")
    assert "fitting LogisticRegression(C=0.5)" in page.text_content("pre.log")


def test_the_runs_table_works_from_the_keyboard(site, page):
    page.goto(f"{site['url']}/experiments/{site['experiment_id']}")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.name") == "filter"
    first = page.locator("table.runs tbody tr[data-run] td:nth-child(2) a").first
    first.focus()
    page.keyboard.press("ArrowDown")
    second = page.locator("table.runs tbody tr[data-run]").nth(1)
    run_id = second.get_attribute("data-run")
    assert page.evaluate("document.activeElement.closest('tr').dataset.run") == run_id
    page.keyboard.press("x")
    assert second.locator("input[type=checkbox]").is_checked()
    assert page.text_content("[data-selection-count]") == "1 selected (select 2 or more)"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/runs/" + run_id))


# Elements that stick out of the screen, not counting those inside a box that scrolls sideways.
WIDER_THAN_SCREEN = """() => [...document.querySelectorAll('body *')].filter(el => {
  if (el.getBoundingClientRect().right <= 391) return false;
  for (let p = el.parentElement; p; p = p.parentElement) if (getComputedStyle(p).overflowX !== 'visible') return false;
  return true;
}).slice(0, 5).map(el => el.tagName + '.' + el.className)"""


def test_pages_fit_a_phone_screen(site, browser, shots):
    with browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True) as ctx:
        page = sign_in(ctx, site["url"], "ada", site["token"])
        for path in (f"/experiments/{site['experiment_id']}", f"/runs/{site['runs'][0]['run_id']}",
                     f"/deployments/{site['deployment']['deployment']}", "/models/churn-model"):
            page.goto(site["url"] + path)
            width = page.evaluate("document.documentElement.scrollWidth")
            wide = page.evaluate(WIDER_THAN_SCREEN)
            assert width <= 390, f"{path} is {width}px wide on a 390px screen: {wide}"
        page.goto(f"{site['url']}/experiments/{site['experiment_id']}")
        shot(page, shots, "phone-runs")


def test_dark_mode_follows_the_system_setting(site, browser, shots):
    with browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="dark") as ctx:
        page = sign_in(ctx, site["url"], "ada", site["token"])
        page.goto(f"{site['url']}/compare?runs={site['runs'][3]['run_id']}&runs={site['runs'][4]['run_id']}"
                  f"&runs={site['runs'][5]['run_id']}")
        page.wait_for_selector("[data-parcoords][data-drawn]")
        bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        r, g, b = (int(v) for v in re.findall(r"\d+", bg)[:3])
        assert r + g + b < 100, bg
        font = page.eval_on_selector("[data-scatter]", "el => el._fullLayout.font.color")
        assert font.lower() in ("#e3e7ec", "rgb(227, 231, 236)")
        shot(page, shots, "dark-compare")
