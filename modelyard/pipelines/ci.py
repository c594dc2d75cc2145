"""GitLab CI: the variables a run records, and ``.gitlab-ci.yml`` from a pipeline.

When GitLab's CI variables are set (``GITLAB_CI``, ``CI_JOB_ID``, ``CI_PIPELINE_ID``,
``CI_COMMIT_SHA``, ``CI_PROJECT_URL``, ``CI_JOB_URL``), every run the pipeline runner makes carries
them as ``gitlab.<VARIABLE>`` tags (the key GitLab's own MLflow integration uses for the job), and
so does every run the ``mlflow`` client starts in a CI job where modelyard is installed: the
:class:`GitLabRunContext` below is registered as an MLflow run-context provider (entry point
``mlflow.run_context_provider``). The UI links a run to ``gitlab.CI_JOB_URL``.

:func:`gitlab_ci` writes a ``.gitlab-ci.yml`` that runs the same DAG in GitLab CI: one CI job per
job, in the same stages, with the same ``needs``, rules, retry and timeout. Every CI job runs
``modelyard pipeline run --only <job> --run-key gitlab-$CI_PIPELINE_ID``, so the CI jobs of one
CI pipeline report into one pipeline run, take their inputs from the outputs their upstream jobs
stored, and skip whatever the cache already holds. The tracking URI and token come from the
project's CI/CD variables ``MLFLOW_TRACKING_URI`` and ``MLFLOW_TRACKING_TOKEN``.
"""
from __future__ import annotations

import os
import re

import yaml

from modelyard.pipelines.spec import STEP_KINDS, Job, Pipeline

__all__ = ["CI_VARIABLES", "ci_variables", "ci_tags", "git_commit", "gitlab_ci", "GitLabRunContext"]

CI_VARIABLES = ("GITLAB_CI", "CI_JOB_ID", "CI_PIPELINE_ID", "CI_COMMIT_SHA", "CI_PROJECT_URL", "CI_JOB_URL",
                "CI_PIPELINE_URL", "CI_COMMIT_BRANCH", "CI_COMMIT_REF_NAME", "CI_PROJECT_PATH", "CI_JOB_NAME",
                "CI_MERGE_REQUEST_IID", "GITLAB_USER_LOGIN")


def ci_variables(environ: dict | None = None) -> dict[str, str]:
    """The GitLab CI variables present, or {} outside GitLab CI."""
    environ = os.environ if environ is None else environ
    if not environ.get("GITLAB_CI"):
        return {}
    return {k: environ[k] for k in CI_VARIABLES if environ.get(k)}


def ci_tags(environ: dict | None = None) -> dict[str, str]:
    """Run tags for the CI variables: ``gitlab.CI_JOB_ID`` and so on, plus the commit as MLflow spells it."""
    found = ci_variables(environ)
    tags = {f"gitlab.{k}": v for k, v in found.items()}
    if found.get("CI_COMMIT_SHA"):
        tags["mlflow.source.git.commit"] = found["CI_COMMIT_SHA"]
    return tags


def git_commit(root, environ: dict | None = None) -> str | None:
    """The commit checked out at ``root`` (CI's ``CI_COMMIT_SHA`` first), read from ``.git`` without
    running git: a fully cached run has no time for a subprocess."""
    environ = os.environ if environ is None else environ
    if environ.get("CI_COMMIT_SHA"):
        return environ["CI_COMMIT_SHA"]
    from pathlib import Path

    here = Path(root).resolve()
    for folder in (here, *here.parents):
        git = folder / ".git"
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = git.read_text().strip()
            if not text.startswith("gitdir:"):
                return None
            git = (folder / text.split(":", 1)[1].strip()).resolve()
        if git.is_dir():
            return _resolve_head(git)
    return None


def _resolve_head(git) -> str | None:
    try:
        head = (git / "HEAD").read_text().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head or None
    ref = head[4:].strip()
    common = git
    if (git / "commondir").is_file():  # refs of a worktree live in the main repository
        common = (git / (git / "commondir").read_text().strip()).resolve()
    for base in (git, common):
        try:
            return (base / ref).read_text().strip()
        except OSError:
            pass
        try:
            for line in (base / "packed-refs").read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
        except OSError:
            pass
    return None


class GitLabRunContext:
    """An MLflow run-context provider: the ``mlflow`` client adds these tags to every run it starts."""

    def in_context(self) -> bool:
        return bool(os.environ.get("GITLAB_CI"))

    def tags(self) -> dict[str, str]:
        return ci_tags()


# -- export ------------------------------------------------------------------------------------------
def _branch_regex(glob: str) -> str:
    body = re.escape(glob).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", ".")
    body = body.replace("/", r"\/")
    return f"/^{body}$/"


def _rules(job: Job) -> list[dict] | None:
    if not job.rules:
        return [{"when": "manual"}] if job.when == "manual" else None
    out = []
    for rule in job.rules:
        clauses = []
        if rule.if_:
            clauses.append(f"({rule.if_})")
        if rule.branch:
            clauses.append("(" + " || ".join(f"$CI_COMMIT_BRANCH =~ {_branch_regex(b)}" for b in rule.branch) + ")")
        entry: dict = {}
        if clauses:
            entry["if"] = " && ".join(clauses)
        if rule.changes:
            entry["changes"] = list(rule.changes)
        entry["when"] = rule.when
        out.append(entry)
    return out


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return " ".join(p for p in parts if p) or "1s"


def gitlab_ci(pipeline: Pipeline, *, spec_path: str = "modelyard.yml", image: str | None = None,
              install: str | None = None) -> str:
    """The ``.gitlab-ci.yml`` text that runs ``pipeline``'s DAG in GitLab CI."""
    ci = pipeline.ci or {}
    doc: dict = {"stages": list(pipeline.stages)}
    variables = {"MODELYARD_PIPELINE_FILE": spec_path, "PIP_CACHE_DIR": "$CI_PROJECT_DIR/.cache/pip"}
    variables.update({k: str(v) for k, v in (ci.get("variables") or {}).items()})
    doc["variables"] = variables
    default: dict = {"image": image or ci.get("image") or "python:3.11-slim"}
    before = list(ci.get("before_script") or [])
    before.append(install or ci.get("install") or "pip install --quiet modelyard")
    before.append('test -n "$MLFLOW_TRACKING_URI" || { echo "set MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_TOKEN) '
                  'as CI/CD variables of the project"; exit 1; }')
    default["before_script"] = before
    if ci.get("tags") or ci.get("runner_tags"):
        default["tags"] = list(ci.get("tags") or ci.get("runner_tags"))
    default["cache"] = {"key": "modelyard-pip", "paths": [".cache/pip"]}
    doc["default"] = default
    for name in pipeline.order():
        job = pipeline.jobs[name]
        entry: dict = {"stage": job.stage}
        if job.needs is not None:
            entry["needs"] = list(job.needs)
        command = (f'modelyard pipeline run -f "$MODELYARD_PIPELINE_FILE" --only {name} '
                   f'--run-key "gitlab-$CI_PIPELINE_ID" --executor local')
        if job.when == "manual" or any(r.when == "manual" for r in job.rules):
            command += f" --manual {name}"
        entry["script"] = [command]
        rules = _rules(job)
        if rules is not None:
            entry["rules"] = rules
        if job.retry:
            entry["retry"] = min(job.retry, 2)  # GitLab's maximum
        if job.timeout:
            entry["timeout"] = _duration(job.timeout)
        job_ci = job.ci or {}
        if job_ci.get("image"):
            entry["image"] = job_ci["image"]
        tags = list(job_ci.get("tags") or job_ci.get("runner_tags") or [])
        if not tags and job.resources.gpus and ci.get("gpu_tags"):
            tags = list(ci["gpu_tags"])
        if tags:
            entry["tags"] = tags
        if job_ci.get("variables"):
            entry["variables"] = {k: str(v) for k, v in job_ci["variables"].items()}
        if job.kind in STEP_KINDS:
            entry["resource_group"] = f"modelyard-{pipeline.name}-{job.kind}"  # one registry change at a time
        doc[name] = entry
    header = (f"# Generated by `modelyard pipeline export --gitlab-ci` from {spec_path}; edit that file and\n"
              "# export again. Each CI job runs one job of the pipeline; all report to one pipeline run.\n"
              "# Set MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN as masked CI/CD variables.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=1000)
