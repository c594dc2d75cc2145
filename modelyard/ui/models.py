"""Registered models: the list, a model with its versions and aliases (and who moved them), and a
version's lineage: back to its run, pipeline job, git commit and training data, forward to the
deployments serving it.

Alias moves are read from the audit log, which records every ``registered-models/alias`` call
(who, when, which version, which alias) and every rollback an alert made.
"""
from __future__ import annotations

from starlette.responses import Response

from modelyard.errors import MlflowError
from modelyard.store.search import encode_page_token
from modelyard.ui.render import Page
from modelyard.ui.runs import _by_key, _datasets, quoted

__all__ = ["models_page", "model_page", "version_page", "alias_history", "serving"]

PAGE = 50
HISTORY_EVENTS = 500


async def models_page(page: Page) -> Response:
    q = page.param("q")
    offset = page.int_param("offset", 0, 0, 10**12)
    error = None
    filter_string = None
    if q:
        filter_string = q if any(op in q for op in ("=", " LIKE ", " like ", " ILIKE ", " ilike ")) \
            else f"name ILIKE {quoted('%' + q.replace('%', '') + '%')}"
    try:
        models, token = await page.stores.registry.search_models(
            page.project, filter_string, PAGE, ["last_updated_timestamp DESC"],
            encode_page_token(offset) if offset else None)
    except MlflowError as exc:
        models, token, error = [], None, exc.message
    for m in models:
        latest = m.get("latest_versions") or []
        m["latest"] = max((int(v["version"]) for v in latest), default=None)
        m["summary"] = (m.get("description") or "").strip().splitlines()[:1]
    return await page.render("models.html", http_status=400 if error else 200, models=models, q=q, offset=offset,
                             size=PAGE, has_next=token is not None, error=error)


ALIAS_ACTIONS = ["POST /registered-models/alias", "DELETE /registered-models/alias", "alert action rollback"]


async def alias_history(page: Page, name: str) -> list[dict]:
    """Alias moves of one model, newest first: set and removed by people, rolled back by alerts."""
    out = []
    for e in await page.services.audit.for_object(page.project, "registered_model", name, ALIAS_ACTIONS,
                                                  HISTORY_EVENTS):
        if e.get("status") != 200:
            continue
        obj, details = e.get("object_id") or "", e.get("details") or ""
        if e["action"] == "alert action rollback":
            moves = details.split(" (")[0]
            out.append({"time_ms": e["time_ms"], "actor": e["actor"], "alias": obj.partition("@")[2],
                        "what": "rolled back", "version": moves.split("->")[-1].strip() if "->" in moves else "",
                        "detail": details})
            continue
        deleting = e["action"].startswith("DELETE")
        out.append({"time_ms": e["time_ms"], "actor": e["actor"],
                    "alias": details[len("alias="):] if details.startswith("alias=") else "",
                    "what": "removed" if deleting else "set",
                    "version": "" if deleting else obj.rpartition("/")[2], "detail": ""})
    return out


async def serving(page: Page, name: str) -> list[dict]:
    """The deployments of a model (at most 200), with the arms each one routes traffic to."""
    deployments, _ = await page.stores.deployments.list(page.project, name, 200, None)
    return deployments


def _serves(deployment: dict, version: str, aliases: list[str]) -> list[str]:
    """How a deployment routes traffic to ``version``: ``["90%", "shadow"]``, empty if it does not."""
    how = []
    for arm in deployment.get("versions", []):
        if str(arm.get("version", "")) == version or (arm.get("alias") and arm["alias"] in aliases):
            weight = arm.get("weight")
            label = f"{weight * 100:.0f}%" if isinstance(weight, (int, float)) and weight <= 1 else f"weight {weight}"
            how.append(label + (f" via @{arm['alias']}" if arm.get("alias") else ""))
    if str(deployment.get("shadow_version", "")) == version or (
            deployment.get("shadow_alias") and deployment["shadow_alias"] in aliases):
        how.append("shadow")
    return how


async def model_page(page: Page) -> Response:
    name = page.request.path_params["name"]
    model = await page.stores.registry.get_model(page.project, name)
    offset = page.int_param("offset", 0, 0, 10**12)
    versions, token = await page.stores.registry.search_versions(
        page.project, f"name = {quoted(name)}", PAGE, ["version_number DESC"],
        encode_page_token(offset) if offset else None)
    history = await alias_history(page, name)
    last_move = {}
    for event in reversed(history):  # oldest first, so the newest move of each alias wins
        if event["alias"]:
            last_move[event["alias"]] = event
    aliases = [{**a, "moved": last_move.get(a["alias"])} for a in model.get("aliases", [])]
    deployments = await serving(page, name)
    return await page.render("model.html", model=model, versions=versions, aliases=aliases, history=history[:50],
                             tags=sorted(_by_key(model.get("tags")).items()), deployments=deployments, offset=offset,
                             size=PAGE, has_next=token is not None)


async def version_page(page: Page) -> Response:
    name = page.request.path_params["name"]
    number = page.request.path_params["version"]
    if not number.isdigit():
        raise MlflowError.invalid(f"A version is a number, not {number!r}.")
    version = await page.stores.registry.get_version(page.project, name, int(number))
    tags = _by_key(version.get("tags"))
    run = experiment = pipeline_run = job = None
    run_tags: dict = {}
    datasets: list = []
    if version.get("run_id"):
        try:
            run = await page.stores.runs.get(page.project, version["run_id"])
            run_tags = _by_key(run.get("data", {}).get("tags"))
            experiment = await page.stores.experiments.get(page.project, run["info"]["experiment_id"])
            datasets = _datasets(run)
        except MlflowError:
            run = None  # deleted since, or in another project: the version still names it
    pipeline_run_id = tags.get("modelyard.pipeline.run_id") or run_tags.get("modelyard.pipeline.run_id")
    job_name = tags.get("modelyard.job") or run_tags.get("modelyard.job")
    if pipeline_run_id:
        try:
            pipeline_run = await page.stores.pipelines.get_run(page.project, pipeline_run_id)
            job = next((j for j in pipeline_run.get("jobs", []) if j["name"] == job_name), None)
        except MlflowError:
            pipeline_run = None
    commit = (run_tags.get("mlflow.source.git.commit") or tags.get("modelyard.git.commit")
              or run_tags.get("modelyard.git.commit") or (pipeline_run or {}).get("git_commit"))
    aliases = version.get("aliases", [])
    served = []
    for d in await serving(page, name):
        how = _serves(d, str(version["version"]), aliases)
        if how:
            served.append({"deployment": d, "how": how})
    history = [e for e in await alias_history(page, name) if e["version"] == str(version["version"])]
    metrics = sorted((run or {}).get("data", {}).get("metrics", []), key=lambda m: m["key"])
    return await page.render(
        "version.html", name=name, version=version, tags=sorted(tags.items()), run=run, experiment=experiment,
        datasets=datasets, pipeline_run=pipeline_run, pipeline_run_id=pipeline_run_id, job=job, job_name=job_name,
        commit=commit, source=run_tags.get("mlflow.source.name"), served=served, history=history[:20],
        metrics=metrics[:20], aliases=aliases)
