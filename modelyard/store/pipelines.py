"""Pipelines, their runs and their jobs, and the cache index the runner asks before running a job.

A pipeline run is created by a runner (``start``) or queued by a trigger (an alert action, an API
call) and later claimed by a runner. Jobs are reported by the runner as they change state; when
every planned job has ended, the run ends with them. The cache index is the job table itself: a
job is skipped when a successful job of the same pipeline and name has the same cache key, and the
record says which MLflow run holds its outputs.
"""
from __future__ import annotations

import uuid
from typing import Any

import orjson
import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.store import search
from modelyard.store._common import now_ms
from modelyard.store.db import Database
from modelyard.store.schema import pipeline_jobs as J
from modelyard.store.schema import pipeline_runs as R
from modelyard.store.schema import pipelines as P
from modelyard.store.schema import runs

__all__ = ["PipelineStore", "RUN_STATUSES", "JOB_STATUSES", "TERMINAL_JOB", "TERMINAL_RUN"]

RUN_STATUSES = ("QUEUED", "RUNNING", "FINISHED", "FAILED", "CANCELED")
TERMINAL_RUN = ("FINISHED", "FAILED", "CANCELED")
JOB_STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CACHED", "SKIPPED", "CANCELED")
TERMINAL_JOB = ("SUCCEEDED", "FAILED", "CACHED", "SKIPPED", "CANCELED")
REUSABLE = ("SUCCEEDED", "CACHED")
_JSON_RUN = ("trigger", "ci", "planned_jobs")
_JSON_JOB = ("key_parts", "outputs", "result")
_JOB_FIELDS = ("stage", "kind", "status", "cache_key", "key_parts", "cached_from", "outputs_run_id", "mlflow_run_id",
               "outputs", "result", "attempt", "message", "start_time", "end_time")


def _dump(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _load(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


class PipelineStore:
    def __init__(self, db: Database):
        self.db = db

    # -- runs: writes ---------------------------------------------------------------------------
    async def start(self, project: str, pipeline: str, fields: dict, run_id: str | None = None,
                    run_key: str | None = None) -> tuple[dict, bool]:
        """Start a run: a new one, a queued/claimed one (``run_id``), or the one already holding
        ``run_key`` (each CI job of one CI pipeline starts "the" run). Returns (run, created)."""

        def start(conn):
            t = now_ms()
            _upsert_pipeline(conn, self.db, project, pipeline, fields.get("experiment_id"), fields.get("spec"), t)
            values = {k: fields.get(k) for k in ("mlflow_run_id", "experiment_id", "executor", "git_commit")}
            values.update(ci=_dump(fields.get("ci")), planned_jobs=_dump(fields.get("planned_jobs") or []))
            if run_id is not None:
                row = _run_row(conn, project, run_id)
                if row.pipeline != pipeline:
                    raise MlflowError.invalid(f"Pipeline run {run_id} belongs to pipeline '{row.pipeline}', "
                                              f"not '{pipeline}'.")
                if row.status not in ("QUEUED", "RUNNING") or (row.status == "RUNNING" and row.mlflow_run_id):
                    raise MlflowError(f"Pipeline run {run_id} is {row.status}; only a queued or claimed run "
                                      "can be started.", "INVALID_STATE")
                conn.execute(R.update().where(R.c.run_id == run_id).values(status="RUNNING", start_time=t, **values))
                return _run_dict(_run_row(conn, project, run_id)), True
            if run_key is not None:
                row = conn.execute(sa.select(R).where(R.c.project == project, R.c.pipeline == pipeline,
                                                      R.c.run_key == run_key)).first()
                if row is not None:
                    planned = list(dict.fromkeys((_load(row.planned_jobs) or []) + (fields.get("planned_jobs") or [])))
                    update = {"planned_jobs": _dump(planned)}
                    if row.status in TERMINAL_RUN:  # a CI job retried after the run ended: it runs again
                        update.update(status="RUNNING", end_time=None)
                    conn.execute(R.update().where(R.c.run_id == row.run_id).values(**update))
                    return _run_dict(_run_row(conn, project, row.run_id)), False
            new_id = uuid.uuid4().hex
            conn.execute(R.insert().values(
                run_id=new_id, project=project, pipeline=pipeline, number=_next_number(conn, project, pipeline),
                run_key=run_key, status="RUNNING", trigger=_dump(fields.get("trigger") or {"type": "manual"}),
                creation_time=t, start_time=t, **values))
            return _run_dict(_run_row(conn, project, new_id)), True

        return await self.db.write(start)

    async def set_mlflow_run(self, project: str, run_id: str, mlflow_run_id: str, experiment_id) -> dict:
        """Record the MLflow run that stands for the pipeline run (made by the API after ``start``)."""

        def set_run(conn):
            _run_row(conn, project, run_id)
            conn.execute(R.update().where(R.c.run_id == run_id, R.c.mlflow_run_id.is_(None))
                         .values(mlflow_run_id=mlflow_run_id, experiment_id=int(experiment_id)))
            return _run_dict(_run_row(conn, project, run_id))

        return await self.db.write(set_run)

    async def trigger(self, project: str, pipeline: str, trigger: dict) -> dict:
        """Queue a run of a known pipeline; a runner claims and executes it."""

        def queue(conn):
            if conn.execute(sa.select(P.c.name).where(P.c.project == project, P.c.name == pipeline)).first() is None:
                raise MlflowError.not_found(f"Pipeline '{pipeline}' not found. A pipeline is known once "
                                            "`modelyard pipeline run` has run it against this server.")
            new_id = uuid.uuid4().hex
            conn.execute(R.insert().values(
                run_id=new_id, project=project, pipeline=pipeline, number=_next_number(conn, project, pipeline),
                status="QUEUED", trigger=_dump(trigger), creation_time=now_ms()))
            return _run_dict(_run_row(conn, project, new_id))

        return await self.db.write(queue)

    async def claim(self, project: str, pipelines: list[str], runner: str) -> dict | None:
        """Take the oldest queued run of one of ``pipelines`` (QUEUED -> RUNNING, claimed_by)."""

        def claim(conn):
            q = sa.select(R.c.run_id).where(R.c.project == project, R.c.status == "QUEUED")
            if pipelines:
                q = q.where(R.c.pipeline.in_(pipelines))
            for _ in range(5):
                row = conn.execute(q.order_by(R.c.creation_time, R.c.number).limit(1)).first()
                if row is None:
                    return None
                # The status in the WHERE makes two runners racing for one run take it once.
                done = conn.execute(R.update().where(R.c.run_id == row.run_id, R.c.status == "QUEUED")
                                    .values(status="RUNNING", claimed_by=runner, start_time=now_ms()))
                if done.rowcount == 1:
                    return _run_dict(_run_row(conn, project, row.run_id))
            return None

        return await self.db.write(claim)

    async def update_jobs(self, project: str, run_id: str, jobs: list[dict]) -> tuple[dict, list[dict]]:
        """Create or update job records (only the fields given); returns (run, the jobs written)."""

        def update(conn):
            run = _run_row(conn, project, run_id)
            if run.status in ("QUEUED",):
                raise MlflowError("Pipeline run {run_id} has not started.".format(run_id=run_id), "INVALID_STATE")
            existing = {r.name: r for r in conn.execute(
                sa.select(J).where(J.c.run_id == run_id, J.c.name.in_([j["name"] for j in jobs])))}
            for job in jobs:
                values = {k: (_dump(job[k]) if k in _JSON_JOB else job[k]) for k in _JOB_FIELDS if job.get(k) is not None}
                if job["name"] in existing:
                    if values:
                        conn.execute(J.update().where(J.c.run_id == run_id, J.c.name == job["name"]).values(values))
                else:
                    values.setdefault("status", "PENDING")
                    conn.execute(J.insert().values(run_id=run_id, name=job["name"], project=project,
                                                   pipeline=run.pipeline, **values))
            rows = conn.execute(sa.select(J).where(J.c.run_id == run_id, J.c.name.in_([j["name"] for j in jobs])))
            return _run_dict(run), [_job_dict(r) for r in rows]

        return await self.db.write(update)

    async def finish(self, project: str, run_id: str, status: str | None, message: str | None) -> tuple[dict, bool]:
        """End the run: with ``status``, or derived from its jobs once every planned job has ended.

        Returns (run, ended now). Jobs still pending or running when a status is forced are canceled.
        """

        def finish(conn):
            run = _run_row(conn, project, run_id)
            if run.status in TERMINAL_RUN:
                return _run_dict(run), False
            rows = conn.execute(sa.select(J.c.name, J.c.status).where(J.c.run_id == run_id)).all()
            states = {r.name: r.status for r in rows}
            planned = _load(run.planned_jobs) or list(states)
            final, note = status, message
            if final is None:
                if not planned or any(states.get(n) not in TERMINAL_JOB for n in planned):
                    return _run_dict(run), False
                bad = [n for n in planned if states.get(n) in ("FAILED", "CANCELED")]
                final = "FAILED" if bad else "FINISHED"
                if bad and note is None:
                    note = f"job{'s' if len(bad) > 1 else ''} {', '.join(bad)} failed"
            t = now_ms()
            conn.execute(J.update().where(J.c.run_id == run_id, J.c.status.not_in(TERMINAL_JOB))
                         .values(status="CANCELED", end_time=t))
            conn.execute(R.update().where(R.c.run_id == run_id).values(status=final, end_time=t, message=note))
            return _run_dict(_run_row(conn, project, run_id)), True

        return await self.db.write(finish)

    # -- cache ----------------------------------------------------------------------------------
    async def lookup(self, project: str, pipeline: str, items: list[dict], explain: bool) -> list[dict]:
        """For each ``{job, cache_key}``: the newest reusable record with that key (``hit``), and,
        when there is none or ``explain`` is set, the key parts of the job's last reusable run."""

        def lookup(conn):
            out = []
            for item in items:
                name, key = item["job"], item["cache_key"]
                entry: dict = {"job": name, "cache_key": key}
                row = conn.execute(
                    sa.select(J).where(J.c.project == project, J.c.pipeline == pipeline, J.c.name == name,
                                       J.c.cache_key == key, J.c.status.in_(REUSABLE),
                                       J.c.outputs_run_id.is_not(None) | (J.c.outputs.is_(None)))
                    .order_by(J.c.end_time.desc()).limit(1)).first()
                if row is not None:
                    hit = _job_dict(row)
                    hit.pop("key_parts", None)
                    if row.outputs_run_id:
                        uri = conn.execute(sa.select(runs.c.artifact_uri)
                                           .where(runs.c.run_uuid == row.outputs_run_id)).scalar()
                        if uri is None:  # the MLflow run holding the outputs was deleted: not reusable
                            row = None
                        else:
                            hit["outputs_artifact_uri"] = uri
                    if row is not None:
                        entry["hit"] = hit
                if row is None or explain:
                    last = conn.execute(
                        sa.select(J.c.key_parts, J.c.run_id, J.c.end_time)
                        .where(J.c.project == project, J.c.pipeline == pipeline, J.c.name == name,
                               J.c.status.in_(REUSABLE), J.c.key_parts.is_not(None))
                        .order_by(J.c.end_time.desc()).limit(1)).first()
                    if last is not None and last.key_parts:
                        entry["last"] = {"run_id": last.run_id, "key_parts": _load(last.key_parts)}
                out.append(entry)
            return out

        return await self.db.read(lookup)

    # -- reads ----------------------------------------------------------------------------------
    async def get_run(self, project: str, run_id: str) -> dict:
        def get(conn):
            run = _run_dict(_run_row(conn, project, run_id))
            run["jobs"] = [_job_dict(r) for r in conn.execute(
                sa.select(J).where(J.c.run_id == run_id).order_by(J.c.start_time.is_(None), J.c.start_time, J.c.name))]
            return run

        return await self.db.read(get)

    async def list_runs(self, project: str, pipeline: str | None, status: str | None, max_results: int,
                        page_token: str | None) -> tuple[list[dict], str | None]:
        offset = search.decode_page_token(page_token)

        def run(conn):
            q = sa.select(R).where(R.c.project == project)
            if pipeline:
                q = q.where(R.c.pipeline == pipeline)
            if status:
                q = q.where(R.c.status == status)
            rows = conn.execute(q.order_by(R.c.creation_time.desc(), R.c.number.desc())
                                .limit(max_results + 1).offset(offset)).all()
            token = search.encode_page_token(offset + max_results) if len(rows) > max_results else None
            return [_run_dict(r) for r in rows[:max_results]], token

        return await self.db.read(run)

    async def list_pipelines(self, project: str, max_results: int, page_token: str | None) -> tuple[list[dict], str | None]:
        offset = search.decode_page_token(page_token)

        def run(conn):
            rows = conn.execute(sa.select(P).where(P.c.project == project)
                                .order_by(P.c.last_update_time.desc(), P.c.name).limit(max_results + 1).offset(offset)).all()
            token = search.encode_page_token(offset + max_results) if len(rows) > max_results else None
            return [_pipeline_dict(conn, r) for r in rows[:max_results]], token

        return await self.db.read(run)

    async def get_pipeline(self, project: str, name: str) -> dict:
        def get(conn):
            row = conn.execute(sa.select(P).where(P.c.project == project, P.c.name == name)).first()
            if row is None:
                raise MlflowError.not_found(f"Pipeline '{name}' not found.")
            return _pipeline_dict(conn, row)

        return await self.db.read(get)

    async def job_history(self, project: str, pipeline: str, name: str, max_results: int,
                          page_token: str | None) -> tuple[list[dict], str | None]:
        offset = search.decode_page_token(page_token)

        def run(conn):
            q = (sa.select(J, R.c.number).join(R, R.c.run_id == J.c.run_id)
                 .where(J.c.project == project, J.c.pipeline == pipeline, J.c.name == name)
                 .order_by(R.c.creation_time.desc()).limit(max_results + 1).offset(offset))
            rows = conn.execute(q).all()
            token = search.encode_page_token(offset + max_results) if len(rows) > max_results else None
            return [{**_job_dict(r), "run_number": r.number} for r in rows[:max_results]], token

        return await self.db.read(run)

    async def job_states(self, project: str, run_id: str) -> dict[str, dict]:
        """``{name: {status, mlflow_run_id}}`` of a run's jobs (the API decides which MLflow runs to make)."""

        def read(conn):
            run = _run_row(conn, project, run_id)
            rows = conn.execute(sa.select(J.c.name, J.c.status, J.c.mlflow_run_id, J.c.start_time)
                                .where(J.c.run_id == run_id))
            return {"run": _run_dict(run), "jobs": {r.name: {str(k): v for k, v in r._asdict().items()} for r in rows}}

        return await self.db.read(read)


# -- helpers ----------------------------------------------------------------------------------------
def _upsert_pipeline(conn, db: Database, project: str, name: str, experiment_id, spec, t: int) -> None:
    row = conn.execute(sa.select(P.c.name).where(P.c.project == project, P.c.name == name)).first()
    values = {"last_update_time": t}
    if experiment_id is not None:
        values["experiment_id"] = int(experiment_id)
    if spec is not None:
        values["spec"] = _dump(spec)
    if row is None:
        conn.execute(P.insert().values(project=project, name=name, creation_time=t, **values))
    else:
        conn.execute(P.update().where(P.c.project == project, P.c.name == name).values(values))


def _next_number(conn, project: str, pipeline: str) -> int:
    top = conn.execute(sa.select(sa.func.max(R.c.number)).where(R.c.project == project, R.c.pipeline == pipeline)).scalar()
    return (top or 0) + 1


def _run_row(conn, project: str, run_id: str):
    row = conn.execute(sa.select(R).where(R.c.run_id == run_id, R.c.project == project)).first()
    if row is None:
        raise MlflowError.not_found(f"Pipeline run '{run_id}' not found.")
    return row


def _compact(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _run_dict(row) -> dict:
    d = {c: getattr(row, c) for c in ("run_id", "pipeline", "number", "run_key", "status", "mlflow_run_id",
                                       "executor", "git_commit", "claimed_by", "message", "creation_time",
                                       "start_time", "end_time")}
    d["experiment_id"] = str(row.experiment_id) if row.experiment_id is not None else None
    for k in _JSON_RUN:
        d[k] = _load(getattr(row, k))
    ci = d.get("ci") or {}
    if ci.get("CI_JOB_URL"):
        d["ci_job_url"] = ci["CI_JOB_URL"]
    if row.start_time is not None and row.end_time is not None:
        d["duration_ms"] = row.end_time - row.start_time
    return _compact(d)


def _job_dict(row) -> dict:
    d = {c: getattr(row, c) for c in ("run_id", "name", "stage", "kind", "status", "cache_key", "cached_from",
                                       "outputs_run_id", "mlflow_run_id", "attempt", "message", "start_time",
                                       "end_time")}
    for k in _JSON_JOB:
        d[k] = _load(getattr(row, k))
    if row.start_time is not None and row.end_time is not None:
        d["duration_ms"] = row.end_time - row.start_time
    return _compact(d)


def _pipeline_dict(conn, row) -> dict:
    last = conn.execute(sa.select(R).where(R.c.project == row.project, R.c.pipeline == row.name)
                        .order_by(R.c.creation_time.desc(), R.c.number.desc()).limit(1)).first()
    d = {"name": row.name, "experiment_id": str(row.experiment_id) if row.experiment_id is not None else None,
         "spec": _load(row.spec), "creation_time": row.creation_time, "last_update_time": row.last_update_time}
    if last is not None:
        d["last_run"] = _run_dict(last)
    return _compact(d)


# -- alert actions (called by modelyard.monitoring.actions) ----------------------------------------------
def validate_trigger_action(action: dict) -> dict:
    """An alert rule's ``{"type": "pipeline", "pipeline": NAME, "reason"?: text}`` as stored, or ValueError."""
    name = action.get("pipeline")
    if not isinstance(name, str) or not name or len(name) > 256:
        raise ValueError("a pipeline action names the pipeline to run: {\"type\": \"pipeline\", \"pipeline\": NAME}")
    out = {"type": "pipeline", "pipeline": name}
    if action.get("reason") is not None:
        out["reason"] = str(action["reason"])[:1000]
    return out


async def trigger_from_alert(store: PipelineStore, project: str, action: dict, alert: dict,
                             rule_id: str | None = None) -> tuple[str, dict]:
    """Queue a run of the action's pipeline with the alert as its trigger; (status, result) as actions report."""
    trigger = {"type": "alert", "time": now_ms(),
               "alert": {k: alert[k] for k in ("groupKey", "status", "commonLabels", "commonAnnotations")
                         if alert.get(k) is not None}}
    if rule_id:
        trigger["rule_id"] = rule_id
    if action.get("reason"):
        trigger["reason"] = action["reason"]
    try:
        run = await store.trigger(project, action["pipeline"], trigger)
    except MlflowError as exc:
        return "failed", {"error": exc.message, "pipeline": action["pipeline"]}
    return "done", {"pipeline": action["pipeline"], "run_id": run["run_id"], "number": run["number"]}
