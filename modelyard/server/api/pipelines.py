"""Pipelines and their runs and jobs (``/api/modelyard/v1/pipelines...``).

The runner (``modelyard pipeline run``) is a client of these endpoints: it starts a run and asks
the cache index in one call, reports jobs as they change state (the server keeps each job's MLflow
run, nested under the pipeline run's, in step), and ends the run. A trigger (an alert rule's
action, a webhook, an operator) queues a run of a known pipeline; a runner started with
``modelyard pipeline run --queued`` or ``modelyard pipeline worker`` claims it and executes it where
the pipeline's code lives, recording the trigger on the run. The UI lists pipelines, runs and jobs
through the GET endpoints.
"""
from __future__ import annotations

import asyncio
import re

import orjson
import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.server.routing import Context, Endpoint
from modelyard.server.schema import ANY, BOOL, DOUBLE, INT64, STRING, Field, Message, Repeated, Schema, invalid_value
from modelyard.store._common import now_ms
from modelyard.store.pipelines import JOB_STATUSES, RUN_STATUSES, TERMINAL_JOB, TERMINAL_RUN

__all__ = ["ENDPOINTS"]

MAX_NAME = 256
MAX_JOBS = 2000
MAX_RESULTS = 1000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_JOB = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_MLFLOW_STATUS = {"RUNNING": "RUNNING", "SUCCEEDED": "FINISHED", "CACHED": "FINISHED", "FAILED": "FAILED",
                  "CANCELED": "KILLED", "SKIPPED": "KILLED"}
_MAX_TAG = 8000  # MLflow's limit on a run tag's value

TAG = Message(Field("key", STRING), Field("value", STRING))
PARAM = Message(Field("key", STRING), Field("value", STRING))
METRIC = Message(Field("key", STRING), Field("value", DOUBLE), Field("timestamp", INT64), Field("step", INT64))
JOB = Message(
    Field("name", STRING, required=True), Field("status", STRING), Field("stage", STRING), Field("kind", STRING),
    Field("cache_key", STRING), Field("key_parts", ANY), Field("cached_from", STRING),
    Field("outputs_run_id", STRING), Field("mlflow_run_id", STRING), Field("outputs", ANY), Field("result", ANY),
    Field("attempt", INT64), Field("message", STRING), Field("start_time", INT64), Field("end_time", INT64),
    Field("params", Repeated(PARAM)), Field("metrics", Repeated(METRIC)), Field("tags", Repeated(TAG)),
)
LOOKUP = Message(Field("job", STRING, required=True), Field("cache_key", STRING, required=True))


def _pipeline_name(name: str | None, field: str = "pipeline") -> str:
    if not name or not _NAME.match(name) or len(name) > MAX_NAME:
        raise MlflowError.invalid(invalid_value(
            field, name, f"a pipeline name is 1 to {MAX_NAME} letters, digits, '_', '.' or '-', starting with a "
            "letter or digit."))
    return name


def _job_name(name: str, path: str) -> str:
    if not _JOB.match(name or ""):
        raise MlflowError.invalid(invalid_value(path, name, "a job name is 1 to 100 letters, digits, '_', '.' or "
                                                            "'-', starting with a letter or digit."))
    return name


def _object(value, field: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MlflowError.invalid(invalid_value(field, value, "it must be a JSON object."))
    return value


def _tags(items: list[dict], path: str = "tags") -> list[dict]:
    out = []
    for t in items:
        if not t.get("key"):
            raise MlflowError.invalid(invalid_value(path, t, "each tag needs a key."))
        out.append({"key": t["key"][:250], "value": (t.get("value") or "")[:_MAX_TAG]})
    return out


def _user(ctx: Context) -> str:
    principal = ctx.principal
    return getattr(principal, "username", None) or ""


async def _experiment_id(ctx: Context, name: str) -> str:
    exps = ctx.services.stores.experiments
    try:
        return (await exps.get_by_name(ctx.project, name))["experiment_id"]
    except MlflowError as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        return await exps.create(ctx.project, name, None, [])
    except MlflowError as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return (await exps.get_by_name(ctx.project, name))["experiment_id"]


# -- handlers ---------------------------------------------------------------------------------------
async def start(ctx: Context, a: dict) -> dict:
    """Start a pipeline run (new, queued, or the one holding ``run_key``) and look up the cache."""
    pipeline = _pipeline_name(a["pipeline"])
    if a["run_key"] is not None and not 0 < len(a["run_key"]) <= 256:
        raise MlflowError.invalid(invalid_value("run_key", a["run_key"], "1 to 256 characters."))
    planned = [_job_name(n, "planned_jobs") for n in a["planned_jobs"]]
    if len(planned) > MAX_JOBS:
        raise MlflowError.invalid(f"A pipeline has at most {MAX_JOBS} jobs; got {len(planned)}.")
    spec = _object(a["spec"], "spec")
    trigger = _object(a["trigger"], "trigger") or None
    ci = {k: str(v) for k, v in _object(a["ci"], "ci").items()}
    tags = _tags(a["tags"])
    params = [{"key": p["key"], "value": p.get("value") or ""} for p in a["params"] if p.get("key")]
    experiment_id = await _experiment_id(ctx, a["experiment_name"] or pipeline)
    store = ctx.services.stores.pipelines
    fields = {"experiment_id": experiment_id, "executor": a["executor"], "git_commit": a["git_commit"], "ci": ci,
              "planned_jobs": planned, "spec": spec, "trigger": trigger}
    for attempt in range(3):
        try:
            run, created = await store.start(ctx.project, pipeline, fields, a["run_id"], a["run_key"])
            break
        except sa.exc.IntegrityError:
            if attempt == 2:  # two runners raced for the same run key or number: the loser re-reads
                raise
    async def parent() -> dict:
        if run.get("mlflow_run_id") is not None:
            return run
        mlflow_run = await _create_parent_run(ctx, run, experiment_id, tags, params)
        return await store.set_mlflow_run(ctx.project, run["run_id"], mlflow_run["info"]["run_id"], experiment_id)

    async def cache() -> list | None:
        return await store.lookup(ctx.project, pipeline, a["lookup"], bool(a["explain"])) if a["lookup"] else None

    run, hits = await asyncio.gather(parent(), cache())
    out: dict = {"run": run, "created": created}
    if hits is not None:
        out["cache"] = hits
        if a["settle"] and _all_cached(planned, hits, _object(a["local_outputs"], "local_outputs")):
            out["run"] = await _settle(ctx, run, hits)
            out["settled"] = True
    return out


def _all_cached(planned: list[str], hits: list[dict], local: dict) -> bool:
    """Is every planned job a cache hit whose outputs the runner already has on disk, byte for byte?"""
    by_job = {h["job"]: h for h in hits}
    if not planned or set(by_job) != set(planned):
        return False
    for name, entry in by_job.items():
        hit = entry.get("hit")
        if hit is None:
            return False
        recorded = {path: meta.get("hash") for path, meta in (hit.get("outputs") or {}).items()}
        if recorded != (local.get(name) or {}):
            return False
    return True


async def _settle(ctx: Context, run: dict, hits: list[dict]) -> dict:
    """Record every job as cached and end the run, in the call that started it: a fully cached run
    costs the runner one round trip. The runner asked for it, having checked its outputs on disk."""
    t = now_ms()
    jobs = [{"name": e["job"], "status": "CACHED", "cache_key": e["cache_key"],
             "cached_from": e["hit"].get("cached_from") or e["hit"]["run_id"],
             "outputs_run_id": e["hit"].get("outputs_run_id"), "mlflow_run_id": e["hit"].get("mlflow_run_id"),
             "outputs": e["hit"].get("outputs"), "result": e["hit"].get("result"), "start_time": t, "end_time": t}
            for e in hits]
    store = ctx.services.stores.pipelines
    await store.update_jobs(ctx.project, run["run_id"], jobs)
    run, ended = await store.finish(ctx.project, run["run_id"], None, None)
    if ended and run.get("mlflow_run_id"):
        await ctx.services.stores.runs.update(ctx.project, run["mlflow_run_id"], "FINISHED",
                                              run.get("end_time") or now_ms(), None)
    return run


async def _create_parent_run(ctx: Context, run: dict, experiment_id: str, tags: list[dict], params: list[dict]) -> dict:
    trigger = run.get("trigger") or {}
    own = [
        {"key": "modelyard.pipeline", "value": run["pipeline"]},
        {"key": "modelyard.pipeline.run_id", "value": run["run_id"]},
        {"key": "modelyard.pipeline.number", "value": str(run["number"])},
        {"key": "modelyard.trigger.type", "value": str(trigger.get("type", "manual"))},
        {"key": "modelyard.trigger", "value": orjson.dumps(trigger).decode()[:_MAX_TAG]},
    ]
    runs = ctx.services.stores.runs
    created = await runs.create(ctx.project, experiment_id, _user(ctx), run.get("start_time"),
                                f"{run['pipeline']} #{run['number']}", _merge_tags(own, tags))
    if params:
        await runs.log_batch(ctx.project, created["info"]["run_id"], [], params[:100], [])
    return created


def _merge_tags(*groups: list[dict]) -> list[dict]:
    merged: dict[str, str] = {}
    for group in groups:
        for t in group:
            merged[t["key"]] = t["value"]
    return [{"key": k, "value": v} for k, v in merged.items()]


async def update(ctx: Context, a: dict) -> dict:
    """Report jobs (created on first report) and, with ``status``, end the run."""
    if a["status"] is not None and a["status"] not in TERMINAL_RUN:
        raise MlflowError.invalid(invalid_value("status", a["status"], f"one of {', '.join(TERMINAL_RUN)}."))
    if len(a["jobs"]) > MAX_JOBS:
        raise MlflowError.invalid(f"At most {MAX_JOBS} jobs per request; got {len(a['jobs'])}.")
    for i, job in enumerate(a["jobs"]):
        _job_name(job["name"], f"jobs[{i}].name")
        if job["status"] is not None and job["status"] not in JOB_STATUSES:
            raise MlflowError.invalid(invalid_value(f"jobs[{i}].status", job["status"],
                                                    f"one of {', '.join(JOB_STATUSES)}."))
        for k in ("key_parts", "outputs", "result"):
            if job[k] is not None and not isinstance(job[k], dict):
                raise MlflowError.invalid(invalid_value(f"jobs[{i}].{k}", job[k], "it must be a JSON object."))
    store = ctx.services.stores.pipelines
    state = await store.job_states(ctx.project, a["run_id"])
    run, known = state["run"], state["jobs"]
    if run["status"] in TERMINAL_RUN and a["jobs"]:
        raise MlflowError(f"Pipeline run {a['run_id']} has ended ({run['status']}).", "INVALID_STATE")
    artifact_uris = await asyncio.gather(*[_sync_mlflow_run(ctx, run, job, known.get(job["name"]))
                                           for job in a["jobs"]])
    jobs_out: list[dict] = []
    if a["jobs"]:
        run, jobs_out = await store.update_jobs(ctx.project, a["run_id"], a["jobs"])
        by_name = {j["name"]: uri for j, uri in zip(a["jobs"], artifact_uris) if uri}
        for j in jobs_out:
            if j["name"] in by_name:
                j["artifact_uri"] = by_name[j["name"]]
    run, ended = await store.finish(ctx.project, a["run_id"], a["status"], a["message"])
    if ended and run.get("mlflow_run_id"):
        await ctx.services.stores.runs.update(
            ctx.project, run["mlflow_run_id"], "FINISHED" if run["status"] == "FINISHED" else
            ("FAILED" if run["status"] == "FAILED" else "KILLED"), run.get("end_time") or now_ms(), None)
    return {"run": run, "jobs": jobs_out}


async def _sync_mlflow_run(ctx: Context, run: dict, job: dict, known: dict | None) -> str | None:
    """Create the job's nested MLflow run on its first report that has run, log what came with the
    report, and end the MLflow run when the job ends. Returns the run's artifact URI when made."""
    status = job["status"] or (known or {}).get("status")
    if status == "CACHED":
        return None  # a cached job's MLflow run is the one that ran it (mlflow_run_id points there)
    runs = ctx.services.stores.runs
    mlflow_run_id = job["mlflow_run_id"] or (known or {}).get("mlflow_run_id")
    artifact_uri = None
    if mlflow_run_id is None and status in ("RUNNING", "SUCCEEDED", "FAILED") and run.get("experiment_id"):
        tags = [
            {"key": "mlflow.parentRunId", "value": run.get("mlflow_run_id") or ""},
            {"key": "modelyard.pipeline", "value": run["pipeline"]},
            {"key": "modelyard.pipeline.run_id", "value": run["run_id"]},
            {"key": "modelyard.job", "value": job["name"]},
        ]
        if job["stage"]:
            tags.append({"key": "modelyard.job.stage", "value": job["stage"]})
        if job["cache_key"]:
            tags.append({"key": "modelyard.job.cache_key", "value": job["cache_key"]})
        created = await runs.create(ctx.project, run["experiment_id"], _user(ctx), job["start_time"], job["name"],
                                    _merge_tags(tags, _tags(job["tags"], "jobs.tags")))
        mlflow_run_id = created["info"]["run_id"]
        artifact_uri = created["info"]["artifact_uri"]
        job["mlflow_run_id"] = mlflow_run_id
    elif job["tags"] and mlflow_run_id:
        await runs.log_batch(ctx.project, mlflow_run_id, [], [], _tags(job["tags"], "jobs.tags"))
    if mlflow_run_id is None:
        return None
    params = [{"key": p["key"][:250], "value": (p.get("value") or "")[:6000]} for p in job["params"] if p.get("key")]
    metrics = [{"key": m["key"], "value": m["value"] if m["value"] is not None else 0.0,
                "timestamp": m["timestamp"] or now_ms(), "step": m["step"] or 0} for m in job["metrics"] if m.get("key")]
    for i in range(0, max(len(params), len(metrics)), 100):
        await runs.log_batch(ctx.project, mlflow_run_id, metrics[i:i + 100] if i < len(metrics) else [],
                             params[i:i + 100] if i < len(params) else [], [])
    if job["status"] in TERMINAL_JOB:
        await runs.update(ctx.project, mlflow_run_id, _MLFLOW_STATUS[job["status"]], job["end_time"] or now_ms(), None)
    return artifact_uri


async def lookup(ctx: Context, a: dict) -> dict:
    pipeline = _pipeline_name(a["pipeline"])
    return {"cache": await ctx.services.stores.pipelines.lookup(ctx.project, pipeline, a["lookup"],
                                                                 bool(a["explain"]))}


async def trigger(ctx: Context, a: dict) -> dict:
    """Queue a run; the trigger (``{"type": "alert", ...}``) is recorded on the run and its MLflow run."""
    pipeline = _pipeline_name(a["pipeline"])
    trig = dict(_object(a["trigger"], "trigger"))
    trig.setdefault("type", "api")
    if not isinstance(trig["type"], str) or not trig["type"]:
        raise MlflowError.invalid(invalid_value("trigger.type", trig["type"], "a non-empty string."))
    if len(orjson.dumps(trig)) > 64 * 1024:
        raise MlflowError.invalid("A trigger is at most 64 KiB of JSON.")
    trig.setdefault("time", now_ms())
    if ctx.principal is not None and getattr(ctx.principal, "username", None):
        trig.setdefault("by", ctx.principal.username)
    return {"run": await ctx.services.stores.pipelines.trigger(ctx.project, pipeline, trig)}


async def claim(ctx: Context, a: dict) -> dict:
    names = [_pipeline_name(n, "pipelines") for n in a["pipelines"]]
    if not a["runner"] or len(a["runner"]) > 256:
        raise MlflowError.invalid(invalid_value("runner", a["runner"], "1 to 256 characters naming the runner."))
    run = await ctx.services.stores.pipelines.claim(ctx.project, names, a["runner"])
    return {"run": run} if run else {}


def _max_results(value: int | None) -> int:
    if value is None:
        return 100
    if not 1 <= value <= MAX_RESULTS:
        raise MlflowError.invalid(invalid_value("max_results", value, f"It must be at most {MAX_RESULTS} and greater "
                                                                        "than 0."))
    return value


async def list_pipelines(ctx: Context, a: dict) -> dict:
    found, token = await ctx.services.stores.pipelines.list_pipelines(ctx.project, _max_results(a["max_results"]),
                                                                      a["page_token"])
    return {"pipelines": found, **({"next_page_token": token} if token else {})}


async def get_pipeline(ctx: Context, a: dict) -> dict:
    return {"pipeline": await ctx.services.stores.pipelines.get_pipeline(ctx.project, _pipeline_name(a["name"], "name"))}


async def list_runs(ctx: Context, a: dict) -> dict:
    if a["pipeline"] is not None:
        _pipeline_name(a["pipeline"])
    if a["status"] is not None and a["status"] not in RUN_STATUSES:
        raise MlflowError.invalid(invalid_value("status", a["status"], f"one of {', '.join(RUN_STATUSES)}."))
    found, token = await ctx.services.stores.pipelines.list_runs(
        ctx.project, a["pipeline"], a["status"], _max_results(a["max_results"]), a["page_token"])
    return {"runs": found, **({"next_page_token": token} if token else {})}


async def get_run(ctx: Context, a: dict) -> dict:
    return {"run": await ctx.services.stores.pipelines.get_run(ctx.project, a["run_id"])}


async def list_jobs(ctx: Context, a: dict) -> dict:
    pipeline = _pipeline_name(a["pipeline"])
    name = _job_name(a["name"], "name")
    found, token = await ctx.services.stores.pipelines.job_history(
        ctx.project, pipeline, name, _max_results(a["max_results"]), a["page_token"])
    return {"jobs": found, **({"next_page_token": token} if token else {})}


_PAGE = (Field("max_results", INT64), Field("page_token", STRING))

ENDPOINTS = [
    Endpoint("GET", "/pipelines", list_pipelines, Schema(*_PAGE), access="read"),
    Endpoint("GET", "/pipelines/get", get_pipeline, Schema(Field("name", STRING, required=True)), access="read"),
    Endpoint("GET", "/pipelines/runs", list_runs, Schema(Field("pipeline", STRING), Field("status", STRING), *_PAGE),
             access="read"),
    Endpoint("GET", "/pipelines/runs/get", get_run, Schema(Field("run_id", STRING, required=True)), access="read"),
    Endpoint("GET", "/pipelines/jobs", list_jobs, Schema(
        Field("pipeline", STRING, required=True), Field("name", STRING, required=True), *_PAGE), access="read"),
    Endpoint("POST", "/pipelines/runs/start", start, Schema(
        Field("pipeline", STRING, required=True), Field("run_id", STRING), Field("run_key", STRING),
        Field("experiment_name", STRING), Field("spec", ANY), Field("trigger", ANY), Field("ci", ANY),
        Field("executor", STRING), Field("git_commit", STRING), Field("planned_jobs", Repeated(STRING)),
        Field("tags", Repeated(TAG)), Field("params", Repeated(PARAM)), Field("lookup", Repeated(LOOKUP)),
        Field("explain", BOOL, default=False), Field("settle", BOOL, default=False), Field("local_outputs", ANY)),
        access="write"),
    Endpoint("POST", "/pipelines/runs/update", update, Schema(
        Field("run_id", STRING, required=True), Field("jobs", Repeated(JOB)), Field("status", STRING),
        Field("message", STRING)), access="write"),
    Endpoint("POST", "/pipelines/cache/lookup", lookup, Schema(
        Field("pipeline", STRING, required=True), Field("lookup", Repeated(LOOKUP)),
        Field("explain", BOOL, default=False)), access="read"),
    Endpoint("POST", "/pipelines/runs/trigger", trigger, Schema(
        Field("pipeline", STRING, required=True), Field("trigger", ANY)), access="write"),
    Endpoint("POST", "/pipelines/runs/claim", claim, Schema(
        Field("pipelines", Repeated(STRING)), Field("runner", STRING, required=True)), access="write"),
]
