"""``modelyard monitor``: list, create, evaluate, show, reference upload, and the HTML drift report."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from test_monitoring_support import Api, monitoring_server, name, predictions, rows


def run(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelyard", "monitor", *args], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.fixture(scope="module")
def cserver(tmp_path_factory):
    proc = monitoring_server(tmp_path_factory.mktemp("cli"))
    yield proc
    proc.stop()


def frames(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    ref = pd.DataFrame({"age": rng.normal(40, 10, n), "income": rng.lognormal(10, 1, n),
                        "plan": rng.choice(["basic", "pro", "team"], n)})
    cur = pd.DataFrame({"age": rng.normal(48, 10, n), "income": rng.lognormal(10, 1, n),
                        "plan": rng.choice(["basic", "pro", "team"], n)})
    return ref, cur


def test_report_writes_a_standalone_html_page_with_a_chart_per_feature(tmp_path):
    ref, cur = frames()
    ref.to_csv(tmp_path / "ref.csv", index=False)
    cur.to_parquet(tmp_path / "cur.parquet")
    out = tmp_path / "report.html"
    r = run("report", str(tmp_path / "ref.csv"), str(tmp_path / "cur.parquet"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "1 of 3 columns drifted: age" in r.stdout
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert page.count("<svg") == 3 and 'id="c-age"' in page and "drifted" in page
    assert re.search(r"age</a></td><td>wasserstein</td>", page)


def test_report_takes_a_method_and_columns_and_refuses_unknown_ones(tmp_path):
    ref, cur = frames(500)
    ref.to_csv(tmp_path / "a.csv", index=False)
    cur.to_csv(tmp_path / "b.csv", index=False)
    out = tmp_path / "r.html"
    r = run("report", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "-o", str(out), "--method", "psi",
            "--columns", "age,plan")
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    assert page.count("<svg") == 2 and "<td>psi</td>" in page
    bad = run("report", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--method", "vibes")
    assert bad.returncode != 0 and "--method" in bad.stderr
    (tmp_path / "c.xlsx").write_text("x")
    bad = run("report", str(tmp_path / "a.csv"), str(tmp_path / "c.xlsx"))
    assert bad.returncode != 0 and "cannot tell the format" in bad.stderr


def test_create_list_evaluate_and_show_a_monitor_from_the_command_line(cserver, tmp_path):
    api = Api(cserver.url)
    dep = name("dep")
    pd.DataFrame(rows(2000, seed=1)).to_parquet(tmp_path / "train.parquet")
    up = run("reference", str(tmp_path / "train.parquet"), "--tracking-uri", cserver.url, "--model", "m",
             "--version", "1")
    assert up.returncode == 0, up.stderr
    ref_id = re.search(r"uploaded reference (\w+) \(2000 rows, 3 columns\)", up.stdout).group(1)
    mon = name("mon")
    created = run("create", mon, "--deployment", dep, "--window", "60", "--reference-id", ref_id,
                  "--tracking-uri", cserver.url)
    assert created.returncode == 0, created.stderr
    api.post("/predictions/log", {"predictions": predictions(dep, rows(500, shift=2.0))})
    ev = run("evaluate", mon, "--tracking-uri", cserver.url)
    assert ev.returncode == 0, ev.stderr
    assert "data drift: 1 of 3 features (x)" in ev.stdout and re.search(r"x\s+wasserstein\s+\S+\s+DRIFT", ev.stdout)
    listed = run("list", "--tracking-uri", cserver.url, "--deployment", dep)
    assert listed.returncode == 0 and mon in listed.stdout and " ok" in listed.stdout
    shown = run("show", mon, "--tracking-uri", cserver.url)
    assert shown.returncode == 0 and "data drift: 1 of 3 features (x)" in shown.stdout
    missing = run("show", "no-such-monitor", "--tracking-uri", cserver.url)
    assert missing.returncode != 0 and "RESOURCE_DOES_NOT_EXIST" in missing.stderr
    unreachable = run("list", "--tracking-uri", "http://127.0.0.1:9")
    assert unreachable.returncode != 0 and "cannot reach" in unreachable.stderr
