"""Runs: their lifecycle, params, tags, metrics (latest values), inputs and outputs, and search
(whose SQL is in :mod:`modelyard.store._runs_search`).

Metric history has its own store (:mod:`modelyard.store.metrics`); this one keeps
``latest_metrics`` in step with every logged value, in the same transaction.
"""
from __future__ import annotations

import math
import random
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from modelyard.errors import MlflowError
from modelyard.store import search
from modelyard.store._common import new_run_id, now_ms
from modelyard.store._runs_search import page as search_page
from modelyard.store.db import Database
from modelyard.store.experiments import (ACTIVE, DELETED, experiment_row, in_project, names_project_default,
                                         parse_experiment_id, project_experiment_ids)
from modelyard.store.schema import (
    datasets, experiments, input_tags, latest_metrics, logged_model_metrics, logged_models, metrics,
    params, run_inputs, run_model_inputs, run_model_outputs, runs, tags,
)

__all__ = ["RunStore", "SEARCH", "RUN_NAME_TAG", "run_row", "active_run", "load_runs", "wire_metric_value"]

RUN_NAME_TAG = "mlflow.runName"
STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
_CHUNK = 500  # ids per IN (...) when loading a page of runs

# Metric logging is the hottest write; its two statements are plain SQL valid on SQLite and
# PostgreSQL alike. A retried value is a no-op; latest_metrics keeps the highest (step, timestamp, value).
_INSERT_METRICS = (
    "INSERT INTO metrics (run_uuid, key, step, timestamp, value, is_nan, model_id, dataset_name, dataset_digest) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_UPSERT_LATEST = (
    "INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value, is_nan = excluded.is_nan, "
    "timestamp = excluded.timestamp, step = excluded.step "
    "WHERE (excluded.step, excluded.timestamp, excluded.value) "
    "> (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)"
)

SEARCH = search.Entity(
    "runs",
    attributes={
        "run_id": ("string", "run_id"),
        "run_name": ("string", "run_name"),
        "run name": ("string", "run_name"),
        "status": ("string", "status"),
        "user_id": ("string", "user_id"),
        "artifact_uri": ("string", "artifact_uri"),
        "start_time": ("numeric", "start_time"),
        "created": ("numeric", "start_time"),
        "end_time": ("numeric", "end_time"),
    },
    kinds={
        "metric": search.NUMERIC_OPS,
        "param": ("=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL"),
        "tag": ("=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL"),
        "dataset": ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"),
    },
    in_attributes=("run_id",),
)
_ORDER_ONLY = {"experiment_id": "experiment_id", "lifecycle_stage": "lifecycle_stage"}
_VIEW_STAGES = {"ACTIVE_ONLY": (ACTIVE,), "DELETED_ONLY": (DELETED,), "ALL": (ACTIVE, DELETED)}

_ADJECTIVES = ("amber", "brisk", "calm", "dapper", "eager", "fleet", "gentle", "hardy", "ivory", "jolly",
               "keen", "lucid", "mellow", "nimble", "orchid", "plucky", "quiet", "rustic", "sunny", "tidy")
_NOUNS = ("badger", "crane", "dingo", "egret", "ferret", "gecko", "heron", "ibis", "jackal", "koala",
          "lemur", "marten", "newt", "otter", "puffin", "quail", "raven", "stoat", "tapir", "wren")


def random_run_name() -> str:
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randint(0, 999)}"


def _metric_value(value: float) -> tuple[float, bool]:
    # SQLite turns NaN into NULL; keep NaN as a flag beside a 0 value, as MLflow does.
    return (0.0, True) if math.isnan(value) else (value, False)


def wire_metric_value(value: float, is_nan: bool) -> Any:
    if is_nan:
        return "NaN"
    if value in _INFINITIES:
        return _INFINITIES[value]
    return value


_INFINITIES = {math.inf: "Infinity", -math.inf: "-Infinity"}


class RunStore:
    def __init__(self, db: Database):
        self.db = db
        self._created = 0
        self._analyze_at = 1000  # then 2000, 4000, ...: statistics follow a burst of new runs

    # -- lifecycle ------------------------------------------------------------------------------
    async def create(self, project: str, experiment_id: str, user_id: str | None, start_time: int | None,
                     run_name: str | None, tag_list: list[dict]) -> dict:
        tag_map = {t["key"]: t["value"] for t in tag_list}
        name_tag = tag_map.get(RUN_NAME_TAG)
        if run_name and name_tag and run_name != name_tag:
            raise MlflowError.invalid(
                f"Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different "
                f"values (run_name='{run_name}', mlflow.runName='{name_tag}').")
        name = run_name or name_tag or random_run_name()
        tag_map[RUN_NAME_TAG] = name
        run_id = new_run_id()

        def create(conn):
            if not self.db.is_sqlite:
                return _create_in_one_trip(conn, project, experiment_id, run_id, name, user_id or "",
                                           start_time if start_time is not None else now_ms(), tag_map)
            exp = _active_experiment(experiment_row(conn, project, experiment_id))
            row = {
                "run_uuid": run_id, "experiment_id": exp.experiment_id, "name": name, "user_id": user_id or "",
                "status": "RUNNING", "start_time": start_time if start_time is not None else now_ms(),
                "end_time": None, "lifecycle_stage": ACTIVE,
                "artifact_uri": f"{exp.artifact_location.rstrip('/')}/{run_id}/artifacts", "deleted_time": None,
            }
            conn.execute(_INSERT_RUN, row)
            conn.execute(_INSERT_TAGS, [{"run_uuid": run_id, "key": k, "value": v} for k, v in tag_map.items()])
            return _info(row)

        info = await self.db.write(create)
        self._created += 1
        if self._created >= self._analyze_at:
            self._analyze_at *= 2
            self.db.analyze_soon(["runs", "params", "tags", "latest_metrics", "experiments"])
        return {
            "info": info,
            "data": {"tags": [{"key": k, "value": v} for k, v in tag_map.items()]},
            "inputs": {},
        }

    async def update(self, project: str, run_id: str, status: str | None, end_time: int | None, run_name: str | None) -> dict:
        values = {}
        if status is not None:
            values["status"] = status
        if end_time is not None:
            values["end_time"] = end_time
        if run_name:
            values["name"] = run_name

        def update(conn):
            row = None
            if values:  # check and change in one statement; the checks below only say why not
                row = conn.execute(_UPDATE_ACTIVE_RUN, {"run_id": run_id, "project_": project, **values}).first()
            if row is None:
                row = active_run(conn, run_id, project)
            if run_name:
                conn.execute(self.db.upsert(tags, ["run_uuid", "key"],
                                            {"run_uuid": run_id, "key": RUN_NAME_TAG, "value": run_name},
                                            update=["value"]))
            return _info(row._mapping)

        return await self.db.write(update)

    async def set_lifecycle(self, project: str, run_id: str, stage: str) -> None:
        def change(conn):
            row = run_row(conn, run_id, project)
            if stage == DELETED and row.lifecycle_stage != ACTIVE:
                raise MlflowError.invalid(f"The run {run_id} must be in the 'active' state. "
                                          f"Current state is {row.lifecycle_stage}.")
            if stage == ACTIVE and row.lifecycle_stage != DELETED:
                raise MlflowError.invalid(f"The run {run_id} must be in the 'deleted' state. "
                                          f"Current state is {row.lifecycle_stage}.")
            conn.execute(runs.update().where(runs.c.run_uuid == run_id).values(
                lifecycle_stage=stage, deleted_time=now_ms() if stage == DELETED else None))

        await self.db.write(change)

    # -- logging --------------------------------------------------------------------------------
    async def log_batch(self, project: str, run_id: str, metric_list: list[dict], param_list: list[dict],
                        tag_list: list[dict]) -> None:
        """Metrics, params and tags in one transaction: all stored, or none."""
        metric_rows = []
        for m in metric_list:
            value, is_nan = _metric_value(m["value"])
            metric_rows.append({
                "run_uuid": run_id, "key": m["key"], "step": m["step"] or 0, "timestamp": m["timestamp"],
                "value": value, "is_nan": is_nan, "model_id": m.get("model_id"),
                "dataset_name": m.get("dataset_name"), "dataset_digest": m.get("dataset_digest"),
            })
        latest: dict[str, dict] = {}
        for r in metric_rows:
            cur = latest.get(r["key"])
            if cur is None or (r["step"], r["timestamp"], r["value"]) > (cur["step"], cur["timestamp"], cur["value"]):
                latest[r["key"]] = r
        param_map = {p["key"]: p["value"] for p in param_list}
        tag_rows = list({t["key"]: {"run_uuid": run_id, "key": t["key"], "value": t["value"]} for t in tag_list}.values())
        model_metric_rows = [r for r in metric_rows if r["model_id"]]
        db = self.db
        # On PostgreSQL a batch of metrics and params (the hot path) is one statement, one round trip.
        one_trip = not db.is_sqlite and not tag_rows and not model_metric_rows

        def write(conn):
            if one_trip and _log_batch_in_one_trip(conn, project, run_id, metric_rows, latest, param_map):
                return
            row = active_run(conn, run_id, project)
            if param_map:
                existing = _refuse_changed_params(conn, run_id, param_map)
                fresh = [{"run_uuid": run_id, "key": k, "value": v} for k, v in param_map.items() if k not in existing]
                if fresh:
                    conn.execute(_INSERT_PARAMS, fresh)
            if tag_rows:
                conn.execute(db.upsert(tags, ["run_uuid", "key"], None, update=["value"]), tag_rows)
                for t in tag_rows:
                    if t["key"] == RUN_NAME_TAG:
                        conn.execute(runs.update().where(runs.c.run_uuid == run_id).values(name=t["value"]))
            if metric_rows:
                conn.exec_driver_sql(db.sql(_INSERT_METRICS), [
                    (run_id, r["key"], r["step"], r["timestamp"], r["value"], r["is_nan"], r["model_id"],
                     r["dataset_name"], r["dataset_digest"]) for r in metric_rows])
                conn.exec_driver_sql(db.sql(_UPSERT_LATEST), [
                    (run_id, r["key"], r["value"], r["is_nan"], r["timestamp"], r["step"]) for r in latest.values()])
            if model_metric_rows:
                _log_model_metrics(conn, db, row.experiment_id, model_metric_rows)

        await self.db.write(write)

    async def delete_tag(self, project: str, run_id: str, key: str) -> None:
        def delete(conn):
            active_run(conn, run_id, project)
            res = conn.execute(tags.delete().where(tags.c.run_uuid == run_id, tags.c.key == key))
            if res.rowcount == 0:
                raise MlflowError.not_found(f"No tag with name: {key} in run with id {run_id}")

        await self.db.write(delete)

    async def log_inputs(self, project: str, run_id: str, dataset_inputs: list[dict], model_inputs: list[dict]) -> None:
        def write(conn):
            row = active_run(conn, run_id, project)
            for item in dataset_inputs:
                ds = item["dataset"]
                found = conn.execute(sa.select(datasets.c.dataset_uuid).where(
                    datasets.c.experiment_id == row.experiment_id, datasets.c.name == ds["name"],
                    datasets.c.digest == ds["digest"])).first()
                if found:
                    dataset_uuid = found.dataset_uuid
                else:
                    dataset_uuid = uuid.uuid4().hex
                    conn.execute(datasets.insert().values(
                        dataset_uuid=dataset_uuid, experiment_id=row.experiment_id, name=ds["name"],
                        digest=ds["digest"], source_type=ds["source_type"], source=ds["source"],
                        schema=ds.get("schema"), profile=ds.get("profile")))
                existing = conn.execute(sa.select(run_inputs.c.input_uuid).where(
                    run_inputs.c.run_uuid == run_id, run_inputs.c.dataset_uuid == dataset_uuid)).first()
                if existing:
                    continue
                input_uuid = uuid.uuid4().hex
                conn.execute(run_inputs.insert().values(input_uuid=input_uuid, run_uuid=run_id, dataset_uuid=dataset_uuid))
                item_tags = {t["key"]: t["value"] for t in item["tags"]}
                if item_tags:
                    conn.execute(input_tags.insert(), [{"input_uuid": input_uuid, "key": k, "value": v}
                                                        for k, v in item_tags.items()])
            if model_inputs:
                conn.execute(self.db.upsert(run_model_inputs, ["run_uuid", "model_id"], None),
                             [{"run_uuid": run_id, "model_id": m["model_id"]} for m in model_inputs])

        await self.db.write(write)

    async def log_outputs(self, project: str, run_id: str, model_outputs: list[dict]) -> None:
        def write(conn):
            active_run(conn, run_id, project)
            if model_outputs:
                conn.execute(self.db.upsert(run_model_outputs, ["run_uuid", "model_id"], None, update=["step"]),
                             [{"run_uuid": run_id, "model_id": m["model_id"], "step": m["step"] or 0}
                              for m in model_outputs])

        await self.db.write(write)

    # -- reads ----------------------------------------------------------------------------------
    async def get(self, project: str, run_id: str) -> dict:
        def get(conn):
            return load_runs(conn, [run_row(conn, run_id, project)])[0]

        return await self.db.read(get)

    async def search(self, project: str, experiment_ids: list[str], filter_string: str | None, view_type: str,
                     max_results: int, order_by: list[str], page_token: str | None) -> tuple[list[dict], str | None]:
        stages = _VIEW_STAGES.get(view_type or "ACTIVE_ONLY")
        if stages is None:
            raise MlflowError.invalid(f"Invalid run_view_type '{view_type}'")
        comparisons = search.parse_filter(filter_string, SEARCH)
        orders = [search.parse_order_by(o, SEARCH, _ORDER_ONLY) for o in order_by or []]
        offset = search.decode_page_token(page_token)

        def run(conn):
            if not self.db.is_sqlite:
                # A sorted page may take several statements: let them all see one snapshot, as
                # SQLite's read transaction does.
                conn.execution_options(isolation_level="REPEATABLE READ")
            eids = project_experiment_ids(conn, project, experiment_ids)
            rows = search_page(conn, eids, stages, comparisons, orders, offset, max_results + 1)
            token = search.encode_page_token(offset + max_results) if len(rows) > max_results else None
            return load_runs(conn, rows[:max_results]), token

        return await self.db.read(run)


# -- helpers shared by the write and read paths ----------------------------------------------------
# Checks the run and logs the whole batch in one round trip; data-modifying CTEs always run to
# completion, and they insert nothing when the run is missing, deleted or of another project.
_PG_LOG_BATCH = """
WITH run AS (
    SELECT runs.run_uuid FROM runs JOIN experiments ON experiments.experiment_id = runs.experiment_id
    WHERE runs.run_uuid = %(run)s AND runs.lifecycle_stage = 'active' AND experiments.project = %(project)s
), history AS (
    INSERT INTO metrics (run_uuid, key, step, timestamp, value, is_nan, model_id, dataset_name, dataset_digest)
    SELECT run.run_uuid, m.key, m.step, m.ts, m.value, m.is_nan, NULL, m.dataset_name, m.dataset_digest
    FROM run, unnest(%(keys)s::varchar[], %(steps)s::bigint[], %(ts)s::bigint[], %(values)s::float8[],
                     %(nans)s::bool[], %(dnames)s::varchar[], %(ddigests)s::varchar[])
         AS m(key, step, ts, value, is_nan, dataset_name, dataset_digest)
    ON CONFLICT DO NOTHING
), clash AS (
    SELECT count(*) AS n FROM params p
    JOIN unnest(%(pkeys)s::varchar[], %(pvalues)s::text[]) AS n(key, value) ON p.key = n.key
    WHERE p.run_uuid = %(run)s AND p.value <> n.value
), fresh_params AS (
    INSERT INTO params (run_uuid, key, value)
    SELECT run.run_uuid, n.key, n.value FROM run, unnest(%(pkeys)s::varchar[], %(pvalues)s::text[]) AS n(key, value)
    ON CONFLICT DO NOTHING
), latest AS (
    INSERT INTO latest_metrics (run_uuid, key, value, is_nan, timestamp, step)
    SELECT run.run_uuid, l.key, l.value, l.is_nan, l.ts, l.step
    FROM run, unnest(%(lkeys)s::varchar[], %(lvalues)s::float8[], %(lnans)s::bool[], %(lts)s::bigint[],
                     %(lsteps)s::bigint[]) AS l(key, value, is_nan, ts, step)
    ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value, is_nan = excluded.is_nan,
        timestamp = excluded.timestamp, step = excluded.step
    WHERE (excluded.step, excluded.timestamp, excluded.value)
        > (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)
)
SELECT (SELECT count(*) FROM run), (SELECT n FROM clash)
"""


# Checks the experiment and creates the run with its tags in one round trip; the run is inserted
# only into an active experiment of the project, and the row returned says why not otherwise.
_PG_CREATE_RUN = """
WITH exp AS (
    SELECT experiment_id, project, lifecycle_stage, artifact_location FROM experiments WHERE {where}
), run AS (
    INSERT INTO runs (run_uuid, experiment_id, name, user_id, status, start_time, lifecycle_stage, artifact_uri)
    SELECT %(run)s::varchar, experiment_id, %(name)s, %(user)s, 'RUNNING', %(start)s, 'active',
           rtrim(artifact_location, '/') || '/' || %(run)s::varchar || '/artifacts'
    FROM exp WHERE project = %(project)s AND lifecycle_stage = 'active'
    RETURNING artifact_uri
), tagged AS (
    INSERT INTO tags (run_uuid, key, value)
    SELECT %(run)s::varchar, t.key, t.value
    FROM run, unnest(%(keys)s::varchar[], %(values)s::text[]) AS t(key, value)
)
SELECT exp.experiment_id, exp.project, exp.lifecycle_stage, (SELECT artifact_uri FROM run) AS artifact_uri FROM exp
"""


def _create_in_one_trip(conn, project: str, experiment_id, run_id: str, name: str, user_id: str, start_time: int,
                        tag_map: dict) -> dict:
    eid = parse_experiment_id(experiment_id)
    sql = _PG_CREATE_RUN.format(where="project = %(project)s AND name = 'Default'"
                                if names_project_default(project, eid) else "experiment_id = %(eid)s")
    exp = conn.exec_driver_sql(sql, {"eid": eid, "project": project, "run": run_id, "name": name, "user": user_id,
                                     "start": start_time, "keys": list(tag_map), "values": list(tag_map.values())}
                               ).first()
    exp = _active_experiment(in_project(exp, project, eid))  # the run was inserted only if both hold
    return _info({"run_uuid": run_id, "experiment_id": exp.experiment_id, "name": name, "user_id": user_id,
                  "status": "RUNNING", "start_time": start_time, "end_time": None, "lifecycle_stage": ACTIVE,
                  "artifact_uri": exp.artifact_uri})


def _active_experiment(exp):
    if exp.lifecycle_stage != ACTIVE:
        raise MlflowError.invalid(f"The experiment {exp.experiment_id} must be in the 'active' state. "
                                  f"Current state is {exp.lifecycle_stage}.")
    return exp


def _refuse_changed_params(conn, run_id: str, param_map: dict) -> dict:
    """The params of ``param_map`` already logged; INVALID_PARAMETER_VALUE if one changes value."""
    existing = dict(conn.execute(_LOGGED_PARAMS, {"run_id": run_id, "keys": list(param_map)}).all())
    changed = [(k, existing[k], v) for k, v in param_map.items() if k in existing and existing[k] != v]
    if changed:
        k, old, new = changed[0]
        raise MlflowError.invalid(
            f"Changing param values is not allowed. Params were already logged='[{{'key': '{k}', "
            f"'old_value': '{old}', 'new_value': '{new}'}}]' for run ID='{run_id}'.")
    return existing


def _log_batch_in_one_trip(conn, project: str, run_id: str, rows: list[dict], latest: dict,
                           param_map: dict) -> bool:
    """True if logged; False if the run is not an active run of the project (nothing was written:
    the caller then takes the ordinary path, which says what is wrong). A param logged before with
    another value raises, and the transaction's rollback takes the rest of the batch with it."""
    found, clashes = conn.exec_driver_sql(_PG_LOG_BATCH, {
        "run": run_id, "project": project,
        "keys": [r["key"] for r in rows], "steps": [r["step"] for r in rows], "ts": [r["timestamp"] for r in rows],
        "values": [r["value"] for r in rows], "nans": [r["is_nan"] for r in rows],
        "dnames": [r["dataset_name"] for r in rows], "ddigests": [r["dataset_digest"] for r in rows],
        "lkeys": list(latest), "lvalues": [r["value"] for r in latest.values()],
        "lnans": [r["is_nan"] for r in latest.values()], "lts": [r["timestamp"] for r in latest.values()],
        "lsteps": [r["step"] for r in latest.values()],
        "pkeys": list(param_map), "pvalues": list(param_map.values()),
    }).one()
    if found and clashes:
        _refuse_changed_params(conn, run_id, param_map)
    return bool(found)


# The statements every write runs, built once: building a Core statement and its cache key on
# each call was a fifth of the SQLite writer's time under create_run load (py-spy).
_RUN_ROW = (sa.select(runs, experiments.c.project)
            .join(experiments, experiments.c.experiment_id == runs.c.experiment_id)
            .where(runs.c.run_uuid == sa.bindparam("run_id")))
_LOGGED_PARAMS = sa.select(params.c.key, params.c.value).where(
    params.c.run_uuid == sa.bindparam("run_id"), params.c.key.in_(sa.bindparam("keys", expanding=True)))
_INSERT_RUN = runs.insert()
# The columns to set are the parameters' other keys (status, end_time, name).
_UPDATE_ACTIVE_RUN = runs.update().where(
    runs.c.run_uuid == sa.bindparam("run_id"), runs.c.lifecycle_stage == ACTIVE,
    runs.c.experiment_id.in_(sa.select(experiments.c.experiment_id)
                             .where(experiments.c.project == sa.bindparam("project_")))).returning(*runs.c)
_INSERT_TAGS = tags.insert()
_INSERT_PARAMS = params.insert()


def run_row(conn, run_id: str, project: str):
    """The run, if it exists in ``project``; a run of another project is as good as missing."""
    row = conn.execute(_RUN_ROW, {"run_id": run_id}).first()
    if row is None or row.project != project:
        raise MlflowError.not_found(f"Run with id={run_id} not found")
    return row


def active_run(conn, run_id: str, project: str):
    row = run_row(conn, run_id, project)
    if row.lifecycle_stage != ACTIVE:
        raise MlflowError.invalid(
            f"The run {run_id} must be in the 'active' state. Current state is {row.lifecycle_stage}.")
    return row


def _log_model_metrics(conn, db: Database, experiment_id: int, rows: list[dict]) -> None:
    ids = sorted({r["model_id"] for r in rows})
    known = {m for (m,) in conn.execute(sa.select(logged_models.c.model_id).where(logged_models.c.model_id.in_(ids)))}
    values = [{
        "model_id": r["model_id"], "key": r["key"], "step": r["step"], "timestamp": r["timestamp"],
        "run_id": r["run_uuid"], "dataset_name": r["dataset_name"] or "", "dataset_digest": r["dataset_digest"] or "",
        "value": r["value"], "is_nan": r["is_nan"], "experiment_id": experiment_id,
    } for r in rows if r["model_id"] in known]
    if values:
        conn.execute(db.upsert(logged_model_metrics, ["model_id", "key", "step", "timestamp", "run_id",
                                                      "dataset_name", "dataset_digest"], None, update=["value", "is_nan"]),
                     values)


def _info(row) -> dict:
    info = {
        "run_uuid": row["run_uuid"], "run_id": row["run_uuid"], "experiment_id": str(row["experiment_id"]),
        "run_name": row["name"], "user_id": row["user_id"], "status": row["status"],
        "start_time": row["start_time"], "artifact_uri": row["artifact_uri"],
        "lifecycle_stage": row["lifecycle_stage"],
    }
    if row["end_time"] is not None:
        info["end_time"] = row["end_time"]
    return info


def _among(conn, column, ids: list[str]):
    """``column IN ids``. On PostgreSQL one array parameter (``= ANY``): a parameter per id made
    loading a page of 100 runs spend more time binding and planning than reading."""
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(None, ids, type_=ARRAY(column.type)))
    return column.in_(ids)


def load_runs(conn, rows) -> list[dict]:
    """Full runs (info, data, inputs, outputs) for rows of ``runs``, in a handful of queries
    (on PostgreSQL, one in the common case)."""
    ids = [r.run_uuid for r in rows]
    by_id = {}
    for r in rows:
        by_id[r.run_uuid] = {
            "info": _info(r._mapping),
            "data": {"metrics": [], "params": [], "tags": []},
            "inputs": {},
        }
    load = _load_at_once if conn.dialect.name == "postgresql" else _load_each
    for start in range(0, len(ids), _CHUNK):
        load(conn, ids[start:start + _CHUNK], by_id)
    out = []
    for rid in ids:
        run = by_id[rid]
        data = run["data"]
        for k in ("metrics", "params", "tags"):
            if not data[k]:
                del data[k]
        out.append(run)
    return out


def _load_each(conn, chunk: list[str], by_id: dict) -> None:
    for run_uuid, key, value, is_nan, ts, step in conn.execute(
            sa.select(latest_metrics.c.run_uuid, latest_metrics.c.key, latest_metrics.c.value,
                      latest_metrics.c.is_nan, latest_metrics.c.timestamp, latest_metrics.c.step)
            .where(_among(conn, latest_metrics.c.run_uuid, chunk))):
        by_id[run_uuid]["data"]["metrics"].append(
            {"key": key, "value": wire_metric_value(value, is_nan), "timestamp": ts, "step": step})
    for run_uuid, key, value in conn.execute(
            sa.select(params.c.run_uuid, params.c.key, params.c.value)
            .where(_among(conn, params.c.run_uuid, chunk))):
        by_id[run_uuid]["data"]["params"].append({"key": key, "value": value})
    for run_uuid, key, value in conn.execute(
            sa.select(tags.c.run_uuid, tags.c.key, tags.c.value).where(_among(conn, tags.c.run_uuid, chunk))):
        by_id[run_uuid]["data"]["tags"].append({"key": key, "value": value})
    _load_inputs(conn, chunk, by_id)


# A page's metrics, params, tags and model inputs and outputs in one round trip: over a local
# socket, six statements for 100 runs spent more time in binding the ids six times and waiting
# for six answers than PostgreSQL spent reading. Dataset inputs are rare; their rows only say
# that a second query must fetch them.
_PG_LOAD = """
SELECT 0 AS kind, run_uuid, key, NULL::text AS text, value, is_nan, timestamp, step
    FROM latest_metrics WHERE run_uuid = ANY(%(ids)s)
UNION ALL SELECT 1, run_uuid, key, value, NULL, NULL, NULL, NULL FROM params WHERE run_uuid = ANY(%(ids)s)
UNION ALL SELECT 2, run_uuid, key, value, NULL, NULL, NULL, NULL FROM tags WHERE run_uuid = ANY(%(ids)s)
UNION ALL SELECT 3, run_uuid, NULL, NULL, NULL, NULL, NULL, NULL FROM run_inputs WHERE run_uuid = ANY(%(ids)s)
UNION ALL SELECT 4, run_uuid, model_id, NULL, NULL, NULL, NULL, NULL
    FROM run_model_inputs WHERE run_uuid = ANY(%(ids)s)
UNION ALL SELECT 5, run_uuid, model_id, NULL, NULL, NULL, NULL, step
    FROM run_model_outputs WHERE run_uuid = ANY(%(ids)s)
"""


def _load_at_once(conn, chunk: list[str], by_id: dict) -> None:
    with_datasets = False
    with conn.connection.cursor() as cur:  # psycopg's own rows: SQLAlchemy's wrapping cost more than the read
        # By primary key, never by scanning whole tables: with the ids bound one by one PostgreSQL
        # chose to scan each table (2 to 6 ms a table at 10,000 runs), and statistics that lag a
        # fast-growing store could lead it there again. (Set in this cursor: through SQLAlchemy the
        # statement cost a tenth of the load.)
        cur.execute("SET LOCAL enable_seqscan = off")
        rows = cur.execute(_PG_LOAD, {"ids": chunk}).fetchall()
    for kind, run_uuid, key, text, value, is_nan, ts, step in rows:
        run = by_id[run_uuid]
        if kind == 0:
            run["data"]["metrics"].append(
                {"key": key, "value": wire_metric_value(value, is_nan), "timestamp": ts, "step": step})
        elif kind == 1:
            run["data"]["params"].append({"key": key, "value": text})
        elif kind == 2:
            run["data"]["tags"].append({"key": key, "value": text})
        elif kind == 3:
            with_datasets = True
        elif kind == 4:
            run["inputs"].setdefault("model_inputs", []).append({"model_id": key})
        else:
            run.setdefault("outputs", {}).setdefault("model_outputs", []).append({"model_id": key, "step": step})
    if with_datasets:
        _load_dataset_inputs(conn, chunk, by_id)


def _load_inputs(conn, chunk: list[str], by_id: dict) -> None:
    _load_dataset_inputs(conn, chunk, by_id)
    for run_uuid, model_id in conn.execute(
            sa.select(run_model_inputs.c.run_uuid, run_model_inputs.c.model_id)
            .where(_among(conn, run_model_inputs.c.run_uuid, chunk))):
        by_id[run_uuid]["inputs"].setdefault("model_inputs", []).append({"model_id": model_id})
    for run_uuid, model_id, step in conn.execute(
            sa.select(run_model_outputs.c.run_uuid, run_model_outputs.c.model_id, run_model_outputs.c.step)
            .where(_among(conn, run_model_outputs.c.run_uuid, chunk))):
        by_id[run_uuid].setdefault("outputs", {}).setdefault("model_outputs", []).append(
            {"model_id": model_id, "step": step})


def _load_dataset_inputs(conn, chunk: list[str], by_id: dict) -> None:
    rows = conn.execute(
        sa.select(run_inputs.c.run_uuid, run_inputs.c.input_uuid, datasets)
        .join(datasets, datasets.c.dataset_uuid == run_inputs.c.dataset_uuid)
        .where(_among(conn, run_inputs.c.run_uuid, chunk))).all()
    if rows:
        tag_rows = conn.execute(sa.select(input_tags).where(
            _among(conn, input_tags.c.input_uuid, [r.input_uuid for r in rows]))).all()
        tags_by_input: dict[str, list] = {}
        for t in tag_rows:
            tags_by_input.setdefault(t.input_uuid, []).append({"key": t.key, "value": t.value})
        for r in rows:
            ds = {"name": r.name, "digest": r.digest, "source_type": r.source_type, "source": r.source}
            if r.schema is not None:
                ds["schema"] = r.schema
            if r.profile is not None:
                ds["profile"] = r.profile
            item = {"dataset": ds}
            if r.input_uuid in tags_by_input:
                item["tags"] = tags_by_input[r.input_uuid]
            by_id[r.run_uuid]["inputs"].setdefault("dataset_inputs", []).append(item)
