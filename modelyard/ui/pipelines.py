"""Pipelines: their runs, a run's DAG drawn as SVG on the server, each job's status, duration,
cache hit and log (the ``logs/<job>.log`` artifact the runner uploads to the job's MLflow run)."""
from __future__ import annotations

from starlette.responses import Response

from modelyard.artifacts import join
from modelyard.errors import MlflowError
from modelyard.server.api.artifacts import run_artifact_root
from modelyard.store.search import encode_page_token
from modelyard.ui.render import Page
from modelyard.ui.runs import read_head

__all__ = ["pipelines_page", "pipeline_run_page", "job_log_page", "layout_dag"]

PAGE = 50
LOG_BYTES = 1024 * 1024
NODE_W, NODE_H, GAP_X, GAP_Y, PAD, ARC = 170, 46, 70, 18, 10, 34


def layout_dag(jobs: list[dict]) -> dict:
    """Positions for ``[{name, needs, status, ...}]``: a column per depth (the longest chain of
    needs before the job), jobs of a column in their given order; edges as cubic curves."""
    by_name = {j["name"]: j for j in jobs}
    depth: dict[str, int] = {}

    def depth_of(name: str, seen: frozenset = frozenset()) -> int:
        if name in depth:
            return depth[name]
        needs = [n for n in by_name[name].get("needs") or [] if n in by_name and n not in seen]
        depth[name] = 1 + max((depth_of(n, seen | {name}) for n in needs), default=-1)
        return depth[name]

    columns: dict[int, list[str]] = {}
    for j in jobs:
        columns.setdefault(depth_of(j["name"]), []).append(j["name"])
    top = PAD + ARC  # room above the first row for edges that jump over a column
    pos = {}
    for col, names in columns.items():
        for row, name in enumerate(names):
            pos[name] = (PAD + col * (NODE_W + GAP_X), top + row * (NODE_H + GAP_Y))
    nodes = [{**j, "x": pos[j["name"]][0], "y": pos[j["name"]][1]} for j in jobs]
    edges = []
    for j in jobs:
        for need in j.get("needs") or []:
            if need in pos:
                (x1, y1), (x2, y2) = pos[need], pos[j["name"]]
                sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
                if depth[j["name"]] - depth[need] > 1:
                    # Over the columns between, arching above the row so no node hides it.
                    lift = min(y1, y2) - ARC
                    edges.append(f"M{sx},{sy} C{sx + GAP_X},{lift} {ex - GAP_X},{lift} {ex},{ey}")
                else:
                    mid = (sx + ex) / 2
                    edges.append(f"M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}")
    width = PAD * 2 + (max(columns, default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = top + PAD + max((len(v) for v in columns.values()), default=1) * (NODE_H + GAP_Y) - GAP_Y
    return {"nodes": nodes, "edges": edges, "width": width, "height": height, "node_w": NODE_W, "node_h": NODE_H}


async def pipelines_page(page: Page) -> Response:
    pipeline = page.param("pipeline") or None
    offset = page.int_param("offset", 0, 0, 10**12)
    pipelines, _ = await page.stores.pipelines.list_pipelines(page.project, 100, None)
    runs, token = await page.stores.pipelines.list_runs(page.project, pipeline, page.param("status") or None, PAGE,
                                                        encode_page_token(offset) if offset else None)
    return await page.render("pipelines.html", pipelines=pipelines, runs=runs, pipeline=pipeline,
                             status=page.param("status"), offset=offset, size=PAGE, has_next=token is not None)


def _dag_jobs(run: dict, spec: dict | None) -> list[dict]:
    """The run's jobs in the pipeline's order, with their needs from the spec and state from the run."""
    state = {j["name"]: j for j in run.get("jobs", [])}
    spec_jobs = (spec or {}).get("jobs") or []
    out, seen = [], set()
    for sj in spec_jobs:
        name = sj.get("name")
        if not name or (state and run.get("planned_jobs") and name not in run["planned_jobs"] and name not in state):
            continue
        seen.add(name)
        out.append({"name": name, "needs": sj.get("needs") or [], "stage": sj.get("stage"), "kind": sj.get("kind"),
                    **{k: v for k, v in state.get(name, {}).items() if k not in ("name", "stage", "kind")}})
    for name in run.get("planned_jobs") or []:
        if name not in seen:
            seen.add(name)
            out.append({"name": name, "needs": [], **state.get(name, {})})
    for name, job in state.items():
        if name not in seen:
            out.append({"needs": [], **job})
    for j in out:
        j.setdefault("status", "PENDING")
    return out


async def pipeline_run_page(page: Page) -> Response:
    run = await page.stores.pipelines.get_run(page.project, page.request.path_params["run_id"])
    try:
        spec = (await page.stores.pipelines.get_pipeline(page.project, run["pipeline"])).get("spec")
    except MlflowError:
        spec = None
    jobs = _dag_jobs(run, spec)
    return await page.render("pipeline_run.html", run=run, jobs=jobs, dag=layout_dag(jobs))


async def job_log_page(page: Page) -> Response:
    run_id, name = page.request.path_params["run_id"], page.request.path_params["job"]
    run = await page.stores.pipelines.get_run(page.project, run_id)
    job = next((j for j in run.get("jobs", []) if j["name"] == name), None)
    if job is None:
        raise MlflowError.not_found(f"Pipeline run {run.get('number')} has no job '{name}'.")
    text, size, truncated, error, holder = "", 0, False, None, job.get("mlflow_run_id") or job.get("outputs_run_id")
    if holder is None:
        error = "This job has no MLflow run, so no log was kept."
    else:
        try:
            root = await run_artifact_root(page.services, page.project, holder)
            head, size = await read_head(page.services.artifacts, join(root, f"logs/{name}.log"), LOG_BYTES)
            text, truncated = head.decode("utf-8", errors="replace"), size > len(head)
        except MlflowError as exc:
            error = "No log was uploaded for this job." if exc.error_code == "RESOURCE_DOES_NOT_EXIST" else exc.message
    return await page.render("job_log.html", run=run, job=job, text=text, size=size, truncated=truncated, error=error,
                             holder=holder)
