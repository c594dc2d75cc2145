"""The ML steps: ``gate``, ``register``, ``promote``, ``deploy`` and ``monitor`` jobs.

Each is a function of a :class:`StepContext` that talks to the server over HTTP (MLflow's registry
API and modelyard's deployments and monitoring APIs) and returns ``(status, message, result,
metrics)``. They run in the runner's process whatever the executor, since they move no data and
take milliseconds.

- ``gate``: conditions on this run's metrics and the champion's (``metrics.f1 >= champion.metrics.f1
  + 0.01``); a failing condition fails the job, so nothing downstream (register, promote, deploy)
  runs. No champion yet: the conditions naming it pass (``if_no_champion: fail`` to refuse).
- ``register``: uploads an MLflow model folder written by an upstream job to this job's run, logs
  the upstream metrics and datasets there (so ``champion.metrics`` and lineage follow the version),
  and registers it with tags naming the pipeline, the run, the job that wrote it and the commit.
- ``promote``: moves an alias to the registered version. An alias the project protects
  (``GET /api/modelyard/v1/project``; the pipeline's ``protected_aliases`` without projects) moves
  only from a job that says ``protected: true``, and the server still checks the caller's role.
- ``deploy``: gives the new version ``weight`` percent of a deployment's traffic (a canary; the
  versions already there share the rest in their proportions), or all of it.
- ``monitor``: attaches monitors and alert rules to the deployment.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from modelyard.pipelines.client import Client, ServerError
from modelyard.pipelines.runner import JobState
from modelyard.pipelines.spec import Job, Pipeline

__all__ = ["StepContext", "run_step", "StepFailed"]


@dataclass
class StepContext:
    client: Client
    pipeline: Pipeline
    job: Job
    run: dict
    job_run_id: str
    artifact_uri: str
    states: dict[str, JobState]
    upstream: Callable[[str], set[str]]
    tags: dict[str, str]
    log: Callable[[str], None]
    lineage: Callable[[set[str]], list[dict]]


def run_step(ctx: StepContext) -> tuple[str, str | None, dict, dict]:
    return {"gate": gate, "register": register, "promote": promote, "deploy": deploy,
            "monitor": monitor}[ctx.job.kind](ctx)


# -- helpers --------------------------------------------------------------------------------------------
def _run_metrics(client: Client, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    try:
        run = client.mlflow("GET", "/runs/get", run_id=run_id)["run"]
    except ServerError:
        return {}
    return {m["key"]: float(m["value"]) for m in run.get("data", {}).get("metrics", [])}


def _source_jobs(ctx: StepContext) -> list[str]:
    named = ctx.job.step.get("metrics_from")
    if named:
        return list(named)
    return [d for d in ctx.pipeline.deps(ctx.job.name) if d in ctx.states]


def _metrics_of(ctx: StepContext, jobs: list[str]) -> dict[str, float]:
    """Metrics of these jobs in this run: their metrics files or return values, then what they logged."""
    merged: dict[str, float] = {}
    for name in jobs:
        state = ctx.states.get(name)
        if state is None:
            continue
        logged = _run_metrics(ctx.client, state.outputs_run_id or state.mlflow_run_id)
        merged.update(logged)
        merged.update(state.metrics)
    return merged


def _registered(ctx: StepContext) -> tuple[str, str] | None:
    """(model name, version) registered by the nearest upstream register job in this run."""
    for name in reversed(ctx.pipeline.order()):
        if name in ctx.upstream(ctx.job.name) and name != ctx.job.name:
            state = ctx.states.get(name)
            if ctx.pipeline.jobs[name].kind == "register" and state and state.result.get("version"):
                return state.result["name"], str(state.result["version"])
    return None


def _model_and_version(ctx: StepContext) -> tuple[str, str]:
    step = ctx.job.step
    found = _registered(ctx)
    name = step.get("name") or (found[0] if found else None)
    version = step.get("version") or (found[1] if found and (not step.get("name") or step["name"] == found[0]) else None)
    if not name or not version:
        raise StepFailed(f"{ctx.job.kind}: no model version: name one with 'name' and 'version', or put a register "
                         "job upstream")
    return name, str(version)


class StepFailed(Exception):
    pass


def _alias_version(client: Client, name: str, alias: str) -> dict | None:
    try:
        return client.mlflow("GET", "/registered-models/alias", name=name, alias=alias)["model_version"]
    except ServerError as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


# -- gate -------------------------------------------------------------------------------------------------
def gate(ctx: StepContext):
    from modelyard.pipelines import conditions

    step = ctx.job.step
    metrics = _metrics_of(ctx, _source_jobs(ctx))
    parsed = [conditions.parse(c) for c in step["conditions"]]
    champion = None
    champion_metrics: dict[str, float] = {}
    if any(c.uses_champion for c in parsed):
        alias = step.get("champion_alias", "champion")
        champion = _alias_version(ctx.client, step["model"], alias)
        if champion is not None:
            champion_metrics = _run_metrics(ctx.client, champion.get("run_id"))
            ctx.log(f"champion: {step['model']} version {champion['version']} ({alias})")
        else:
            ctx.log(f"no champion: {step['model']}@{alias} is not set")
    params = ctx.pipeline.param_values(ctx.job) if ctx.job.params else _flat(ctx.pipeline.params)

    def lookup(name: str) -> float:
        root, _, key = name.partition(".")
        source = {"metrics": metrics, "params": params}.get(root)
        if root == "champion":
            source, key = champion_metrics, key.partition(".")[2]
        if source is None or key not in source:
            raise conditions.Unknown(name)
        value = source[key]
        try:
            return float(value)
        except (TypeError, ValueError):
            raise conditions.Unknown(name) from None

    results, failed = [], []
    for cond in parsed:
        if cond.uses_champion and champion is None:
            ok = step.get("if_no_champion", "pass") == "pass"
            detail = f"{cond.text}  (no champion: {'passes' if ok else 'fails'})"
        else:
            try:
                ok, detail = cond.evaluate(lookup)
            except conditions.Unknown as exc:
                ok, detail = False, f"{cond.text}  ({exc.name} has no value)"
        results.append({"condition": cond.text, "passed": ok, "detail": detail})
        ctx.log(("pass  " if ok else "FAIL  ") + detail)
        if not ok:
            failed.append(detail)
    result = {"passed": not failed, "conditions": results,
              "champion": {"name": step.get("model"), "version": champion["version"]} if champion else None}
    gate_metrics = {"gate.passed": 0.0 if failed else 1.0}
    if failed:
        return "FAILED", "gate failed: " + "; ".join(failed), result, gate_metrics
    return "SUCCEEDED", None, result, gate_metrics


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# -- register ---------------------------------------------------------------------------------------------
def register(ctx: StepContext):
    step = ctx.job.step
    root = ctx.pipeline.root
    model_dir = root / step["model"]
    if not (model_dir / "MLmodel").is_file():
        return "FAILED", f"register: {step['model']} is not an MLflow model folder (no MLmodel file)", {}, {}
    producer = next((n for n, j in ctx.pipeline.jobs.items()
                     if any(step["model"] == o or step["model"].startswith(o + "/") for o in j.outputs)), None)
    ctx.client.upload_tree(ctx.artifact_uri, "model", model_dir)
    metrics = _metrics_of(ctx, _source_jobs(ctx))
    now = int(time.time() * 1000)
    if metrics:
        ctx.client.mlflow("POST", "/runs/log-batch", {
            "run_id": ctx.job_run_id, "metrics": [{"key": k, "value": v, "timestamp": now, "step": 0}
                                                  for k, v in metrics.items()]})
    datasets = ctx.lineage(ctx.upstream(ctx.job.name) - {ctx.job.name})
    if datasets:
        ctx.client.mlflow("POST", "/runs/log-inputs", {"run_id": ctx.job_run_id, "datasets": datasets})
    name = step["name"]
    try:
        ctx.client.mlflow("POST", "/registered-models/create", {"name": name})
    except ServerError as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    tags = {"modelyard.pipeline": ctx.pipeline.name, "modelyard.pipeline.run_id": ctx.run["run_id"],
            "modelyard.pipeline.number": str(ctx.run.get("number", "")), "modelyard.job": producer or ctx.job.name,
            "modelyard.register_job": ctx.job.name, **ctx.tags, **{k: str(v) for k, v in (step.get("tags") or {}).items()}}
    version = ctx.client.mlflow("POST", "/model-versions/create", {
        "name": name, "source": f"runs:/{ctx.job_run_id}/model", "run_id": ctx.job_run_id,
        "description": step.get("description") or f"Registered by pipeline {ctx.pipeline.name} "
                                                  f"#{ctx.run.get('number', '')}, job {ctx.job.name}",
        "tags": [{"key": k, "value": v} for k, v in tags.items()]})["model_version"]
    ctx.log(f"registered {name} version {version['version']} from {step['model']}")
    return "SUCCEEDED", None, {"name": name, "version": str(version["version"]), "run_id": ctx.job_run_id}, metrics


# -- promote ----------------------------------------------------------------------------------------------
def _protected_aliases(ctx: StepContext) -> list[str]:
    try:
        project = ctx.client.api("GET", "/project")
    except ServerError as exc:
        if exc.error_code in ("ENDPOINT_NOT_FOUND", "NOT_FOUND"):
            return list(ctx.pipeline.protected_aliases)
        raise
    project = project.get("project", project)
    return list(project.get("protected_aliases", ctx.pipeline.protected_aliases))


def promote(ctx: StepContext):
    step = ctx.job.step
    name, version = _model_and_version(ctx)
    alias = step["alias"]
    protected = _protected_aliases(ctx)
    if alias in protected and not step.get("protected"):
        return ("FAILED", f"promote: alias '{alias}' is protected ({', '.join(protected)}); a pipeline moves it only "
                          "from a promote job with 'protected: true', run with a maintainer's token", {}, {})
    previous = _alias_version(ctx.client, name, alias)
    try:
        ctx.client.mlflow("POST", "/registered-models/alias", {"name": name, "alias": alias, "version": version})
    except ServerError as exc:
        if exc.status in (401, 403):
            return "FAILED", f"promote: the server refused to move '{alias}': {exc.message}", {}, {}
        raise
    ctx.log(f"{name}@{alias}: version {previous['version'] if previous else '(none)'} -> {version}")
    return "SUCCEEDED", None, {"name": name, "alias": alias, "version": version,
                               "previous_version": previous["version"] if previous else None}, {}


# -- deploy -----------------------------------------------------------------------------------------------
def canary_arms(existing: list[dict], version: str, weight: float) -> list[dict]:
    """The new version at ``weight`` percent; the arms already there share the rest in their proportions."""
    others = [a for a in existing if str(a.get("version")) != version or "alias" in a]
    total = sum(float(a.get("weight", 0)) for a in others)
    if weight >= 100 or total <= 0:
        return [{"version": version, "weight": 100}]
    rest = 100.0 - weight
    arms = []
    for a in others:
        share = round(float(a.get("weight", 0)) / total * rest, 4)
        arm = {k: a[k] for k in ("version", "alias") if a.get(k) is not None}
        arm["weight"] = int(share) if float(share).is_integer() else share
        arms.append(arm)
    arms.append({"version": version, "weight": int(weight) if float(weight).is_integer() else weight})
    return arms


def deploy(ctx: StepContext):
    step = ctx.job.step
    deployment = step["deployment"]
    try:
        existing = ctx.client.api("GET", "/deployments/get", name=deployment)["deployment"]
    except ServerError as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise
        existing = None
    body: dict[str, Any] = {"name": deployment}
    if step.get("alias") and not step.get("version") and _registered(ctx) is None:
        name = step.get("name") or (existing or {}).get("model_name")
        if not name:
            return "FAILED", "deploy: name the model ('name') to deploy an alias", {}, {}
        body.update(model_name=name, versions=[{"alias": step["alias"], "weight": 100}])
        version = None
    else:
        name, version = _model_and_version(ctx)
        current = (existing or {}).get("versions", []) if (existing or {}).get("model_name") == name else []
        if step.get("shadow"):
            body.update(model_name=name, versions=current or [{"version": version, "weight": 100}],
                        shadow_version=version)
        else:
            body.update(model_name=name, versions=canary_arms(current, version, float(step.get("weight", 100))))
    if step.get("endpoint_url"):
        body["endpoint_url"] = step["endpoint_url"]
    saved = ctx.client.api("POST", "/deployments", body).get("deployment", body)
    ctx.log(f"deployment {deployment}: " + ", ".join(
        f"{a.get('version') or '@' + str(a.get('alias'))} {a['weight']}%" for a in saved.get("versions", body["versions"])))
    return "SUCCEEDED", None, {"deployment": deployment, "model_name": name, "version": version,
                               "versions": saved.get("versions", body["versions"])}, {}


# -- monitor ----------------------------------------------------------------------------------------------
def _create_or_update(client: Client, base: str, body: dict) -> dict:
    """POST ``<base>/create``; when it exists already, ``<base>/update`` with the same body."""
    try:
        return client.api("POST", f"{base}/create", body)
    except ServerError as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
        return client.api("POST", f"{base}/update", body)


def monitor(ctx: StepContext):
    """Attach monitors (``/monitors/create``: name, config, enabled) and alert rules
    (``/alert-rules/create``: name, expr, for_seconds, severity, channels, actions, ...) to the
    deployment; a rule's action ``{"type": "pipeline", "pipeline": NAME}`` closes the retraining loop."""
    step = ctx.job.step
    deployment = step["deployment"]
    monitors, rules = [], []
    for spec in step.get("monitors") or []:
        body = {**spec, "deployment": deployment}
        made = _create_or_update(ctx.client, "/monitors", body)
        monitors.append((made.get("monitor") or {}).get("name", spec.get("name")))
    for spec in step.get("alert_rules") or []:
        rule = {**spec}
        labels = dict(rule.get("labels") or {})
        labels.setdefault("deployment", deployment)  # alerts name the deployment they are about
        rule["labels"] = labels
        made = _create_or_update(ctx.client, "/alert-rules", rule)
        rules.append((made.get("rule") or {}).get("name", spec.get("name")))
    ctx.log(f"deployment {deployment}: monitors {', '.join(monitors) or '-'}; alert rules {', '.join(rules) or '-'}")
    return "SUCCEEDED", None, {"deployment": deployment, "monitors": monitors, "alert_rules": rules}, {}
