"""modelyard.yml: the schema's errors name their line; DAG, rules, conditions, cache keys, GitLab CI export."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from modelyard.pipelines import SpecError, loads
from modelyard.pipelines import cache as caching
from modelyard.pipelines import conditions
from modelyard.pipelines.ci import ci_tags, gitlab_ci
from modelyard.pipelines.plan import make_plan
from modelyard.pipelines.rules import RuleContext, RuleError, parse_if
from modelyard.pipelines.spec import parse_duration, parse_memory

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pipeline" / "modelyard.yml"


def spec(text: str, tmp_path: Path | None = None, environ: dict | None = None):
    path = (tmp_path or Path("/nonexistent-dir")) / "modelyard.yml"
    return loads(textwrap.dedent(text), path=path, environ=environ or {})


def problems(text: str, tmp_path: Path | None = None, environ: dict | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        spec(text, tmp_path, environ)
    return info.value.lines()


# -- errors name the line ------------------------------------------------------------------------------
def test_an_unknown_job_key_is_reported_on_its_line_with_the_key_it_probably_meant():
    lines = problems("""\
        train:
          scirpt: python train.py
          stage: build
        """)
    assert "modelyard.yml:2: job 'train': unknown key 'scirpt' (did you mean 'script'?)" in lines


def test_an_unknown_top_level_key_is_reported_with_the_setting_it_resembles():
    lines = problems("""\
        stagse: [a, b]
        train:
          script: echo
        """)
    assert lines[0].startswith("modelyard.yml:1: unknown key 'stagse' (did you mean 'stages'?)")


def test_a_need_on_an_undefined_job_names_the_line_of_the_need():
    lines = problems("""\
        prepare:
          script: echo
        train:
          script: echo
          needs:
            - prepare
            - prepair
        """)
    assert lines == ["modelyard.yml:7: job 'train' needs 'prepair', which is not defined (did you mean 'prepare'?)"]


def test_a_cycle_is_reported_with_its_path_and_the_line_that_closes_it():
    lines = problems("""\
        a:
          script: echo
          needs: [c]
        b:
          script: echo
          needs: [a]
        c:
          script: echo
          needs: [b]
        """)
    assert len(lines) == 1
    assert "cycle in needs: a -> c -> b -> a" in lines[0]
    assert lines[0].startswith("modelyard.yml:6:")  # b needs a: the need that closes the cycle


def test_an_undefined_variable_is_reported_on_its_line_and_a_defined_one_expands():
    lines = problems("""\
        variables:
          OUT: data
        make:
          script: echo
          outputs:
            - $OUT/x.csv
            - ${MISSING_DIR}/y.csv
        """)
    assert lines == ["modelyard.yml:7: job 'make': undefined variable '$MISSING_DIR'"]
    ok = spec("""\
        variables:
          OUT: data
        make:
          script: echo
          outputs: [$OUT/x.csv]
        """)
    assert ok.jobs["make"].outputs == ["data/x.csv"]


def test_environment_variables_win_over_the_files_variables_as_gitlab_ci_variables_do():
    text = """\
        variables:
          MODEL: from-file
        gate:
          gate: {model: $MODEL, conditions: ["metrics.f1 > 0.5"]}
        """
    assert spec(text).jobs["gate"].step["model"] == "from-file"
    assert spec(text, environ={"MODEL": "from-env"}).jobs["gate"].step["model"] == "from-env"


def test_a_param_missing_from_the_params_file_is_reported_on_its_line(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  C: 1.0\n")
    lines = problems("""\
        train:
          script: python train.py
          params:
            - train.C
            - train.gamma
        """, tmp_path)
    assert lines == ["modelyard.yml:5: job 'train': param 'train.gamma' is not in the params file"]


def test_a_gate_condition_that_does_not_parse_or_names_an_unknown_thing_is_an_error():
    lines = problems("""\
        gate:
          gate:
            model: m
            conditions:
              - metrics.f1 >=
              - __import__('os').system('x') == 0
              - champion.params.x > 1
        """)
    assert [line.split(":")[1] for line in lines] == ["5", "6", "7"]
    assert "cannot parse condition" in lines[0]


def test_several_problems_are_reported_together_in_line_order():
    lines = problems("""\
        stages: [data, train]
        a:
          stage: nowhere
          script: echo
          retry: 99
        b:
          script: echo
          timeout: soon
          needs: [zzz]
        """)
    assert [int(line.split(":")[1]) for line in lines] == sorted(int(line.split(":")[1]) for line in lines)
    text = "\n".join(lines)
    assert "stage 'nowhere' is not in stages" in text and "retry must be" in text
    assert "timeout" in text and "needs 'zzz'" in text


def test_a_job_needing_a_job_of_a_later_stage_is_refused():
    lines = problems("""\
        stages: [one, two]
        a:
          stage: one
          script: echo
          needs: [b]
        b:
          stage: two
          script: echo
        """)
    assert "needs 'b' of the later stage two" in lines[0]


def test_a_job_must_need_the_job_whose_output_it_reads():
    lines = problems("""\
        stages: [s]
        make:
          script: echo
          outputs: [data.csv]
        use:
          script: echo
          inputs: [data.csv]
        """)
    assert lines == ["modelyard.yml:7: job 'use': input 'data.csv' is an output of 'make', which it does not need"]


def test_invalid_yaml_reports_its_line():
    lines = problems("a:\n  script: [unclosed\nb: 1\n")
    assert lines[0].startswith("modelyard.yml:3: invalid YAML") or lines[0].startswith("modelyard.yml:2: invalid YAML")


def test_the_example_pipeline_is_valid_and_forms_the_dag_it_describes():
    from modelyard.pipelines import load

    pipeline = load(EXAMPLE, environ={})
    assert pipeline.deps("train_logreg") == ["prepare"] and pipeline.deps("train_forest") == ["prepare"]
    assert pipeline.order().index("evaluate") > pipeline.order().index("train_forest")
    assert pipeline.jobs["gate"].kind == "gate" and pipeline.jobs["deploy"].step["weight"] == 10


# -- stages and needs ------------------------------------------------------------------------------------
def test_jobs_without_needs_wait_for_every_job_of_the_earlier_stages_and_needs_empty_waits_for_none():
    p = spec("""\
        stages: [build, test, deploy]
        a: {stage: build, script: echo}
        b: {stage: build, script: echo}
        c: {stage: test, script: echo}
        d: {stage: deploy, script: echo, needs: []}
        """)
    assert p.deps("c") == ["a", "b"] and p.deps("d") == [] and p.deps("a") == []


# -- rules -------------------------------------------------------------------------------------------------
def test_gitlab_if_expressions_evaluate_as_gitlab_does():
    env = {"CI_COMMIT_BRANCH": "main", "DEPLOY": "yes"}
    assert parse_if('$CI_COMMIT_BRANCH == "main" && $DEPLOY').evaluate(env)
    assert not parse_if('$CI_COMMIT_BRANCH != "main" || $NOT_SET').evaluate(env)
    assert parse_if("$CI_COMMIT_BRANCH =~ /^ma/").evaluate(env)
    assert parse_if("$NOT_SET == null").evaluate(env)
    with pytest.raises(RuleError):
        parse_if("$A == ")


def test_rules_leave_out_jobs_and_manual_jobs_run_only_when_asked(tmp_path):
    p = spec("""\
        stages: [s]
        always_here: {script: echo}
        main_only:
          script: echo
          rules:
            - branch: main
        release:
          script: echo
          when: manual
        after_release:
          script: echo
          needs: [release]
        """, tmp_path)
    ctx = RuleContext(root=tmp_path, variables={}, branch="feature/x")
    plan = make_plan(p, ctx)
    assert plan.included == ["always_here"]
    assert plan.entries["main_only"].reason == "no rule matched"
    assert plan.entries["after_release"].reason == "waits for manual job release"
    plan = make_plan(p, RuleContext(root=tmp_path, variables={}, branch="main"), manual=["release"])
    assert plan.included == ["always_here", "main_only", "release", "after_release"]


# -- gate conditions ---------------------------------------------------------------------------------------
def test_a_condition_against_the_champion_evaluates_with_the_values_it_used():
    cond = conditions.parse("metrics.f1 >= champion.metrics.f1 + 0.01")
    values = {"metrics.f1": 0.90, "champion.metrics.f1": 0.88}
    ok, detail = cond.evaluate(values.__getitem__)
    assert ok and "champion.metrics.f1 = 0.88" in detail
    values["champion.metrics.f1"] = 0.895
    assert cond.evaluate(values.__getitem__)[0] is False


def test_durations_and_sizes_read_gitlab_style():
    assert parse_duration("1h 30m") == 5400 and parse_duration("90s") == 90 and parse_duration(45) == 45
    assert parse_memory("2G") == 2 * 1024**3 and parse_memory("512Mi") == 512 * 1024**2
    with pytest.raises(ValueError):
        parse_duration("soon")


# -- cache keys --------------------------------------------------------------------------------------------
def _keyed(tmp_path: Path, text: str) -> dict[str, str]:
    pipeline = loads(textwrap.dedent(text), path=tmp_path / "modelyard.yml", environ={})
    hasher = caching.Hasher(tmp_path)
    keys: dict[str, str] = {}
    for name in pipeline.order():
        ups = {d: keys[d] for d in pipeline.deps(name)}
        keys[name] = caching.cache_key(caching.key_parts(pipeline, pipeline.jobs[name], hasher, ups))
    return keys


def test_a_cache_key_changes_with_the_command_code_params_env_and_input_bytes_and_downstream_follows(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("a: {x: 1}\nb: {y: 2}\n")
    (tmp_path / "prep.py").write_text("print(1)\n")
    (tmp_path / "raw.csv").write_text("a,b\n1,2\n")
    text = """\
        stages: [s]
        prep:
          script: python prep.py raw.csv
          inputs: [raw.csv]
          params: [a.x]
          env: [SEED]
          outputs: [clean.csv]
        train:
          script: python train.py
          needs: [prep]
          params: [b.y]
        """
    base = _keyed(tmp_path, text)
    assert _keyed(tmp_path, text) == base  # stable

    def changed(**edit):
        return {n for n, k in _keyed(tmp_path, edit.get("text", text)).items() if k != base[n]}

    (tmp_path / "params.yaml").write_text("a: {x: 1}\nb: {y: 3}\n")
    assert changed() == {"train"}
    (tmp_path / "params.yaml").write_text("a: {x: 1}\nb: {y: 2}\n")
    (tmp_path / "prep.py").write_text("print(2)\n")
    assert changed() == {"prep", "train"}  # the code file the script names
    (tmp_path / "prep.py").write_text("print(1)\n")
    assert changed(text=text.replace("python prep.py raw.csv", "python prep.py  raw.csv --fast")) == {"prep", "train"}
    (tmp_path / "raw.csv").write_text("a,b\n1,3\n")  # one byte
    assert changed() == {"prep", "train"}
    (tmp_path / "raw.csv").write_text("a,b\n1,2\n")
    monkeypatch.setenv("SEED", "5")
    assert changed() == {"prep", "train"}
    monkeypatch.delenv("SEED")
    assert changed() == set()


def test_explain_says_which_part_of_the_key_changed():
    old = {"v": 1, "command": "c1", "code": {"t.py": "h1"}, "params": {"train.C": 1.0}, "inputs": {"d.csv": "x"},
           "upstream": {"prep": "k1"}, "variables": "v", "env": {}, "kind": "script", "outputs": []}
    new = {**old, "code": {"t.py": "h2"}, "params": {"train.C": 2.0}}
    assert caching.explain(new, old) == ["code t.py changed", "param train.C changed (1.0 -> 2.0)"]
    assert caching.explain(new, None) == ["never ran with this pipeline"]


# -- GitLab CI ------------------------------------------------------------------------------------------------
def test_the_exported_gitlab_ci_parses_and_preserves_stages_needs_and_rules():
    from modelyard.pipelines import load

    pipeline = load(EXAMPLE, environ={})
    doc = yaml.safe_load(gitlab_ci(pipeline, spec_path="examples/pipeline/modelyard.yml"))
    assert doc["stages"] == pipeline.stages
    jobs = {k: v for k, v in doc.items() if k not in ("stages", "variables", "default")}
    assert set(jobs) == set(pipeline.jobs)
    for name, job in pipeline.jobs.items():
        assert jobs[name]["stage"] == job.stage
        assert jobs[name].get("needs") == job.needs
        assert f"--only {name}" in jobs[name]["script"][0] and '--run-key "gitlab-$CI_PIPELINE_ID"' in jobs[name]["script"][0]
    assert jobs["train_forest"]["retry"] == 1 and jobs["train_forest"]["timeout"] == "10m"
    assert "MLFLOW_TRACKING_URI" in " ".join(doc["default"]["before_script"])


def test_gitlab_ci_variables_become_run_tags_only_inside_gitlab_ci():
    env = {"GITLAB_CI": "true", "CI_JOB_ID": "42", "CI_PIPELINE_ID": "7", "CI_COMMIT_SHA": "abc",
           "CI_PROJECT_URL": "https://gitlab.example.com/g/p", "CI_JOB_URL": "https://gitlab.example.com/g/p/-/jobs/42"}
    tags = ci_tags(env)
    assert tags["gitlab.CI_JOB_ID"] == "42" and tags["gitlab.CI_JOB_URL"].endswith("/jobs/42")
    assert tags["mlflow.source.git.commit"] == "abc"
    assert ci_tags({k: v for k, v in env.items() if k != "GITLAB_CI"}) == {}
