"""Logged models (MLflow 3): a model's own id, artifacts, params, tags and metrics."""
from __future__ import annotations

import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.store import search
from modelyard.store._common import new_model_id, now_ms
from modelyard.store._filters import numeric_op, string_op
from modelyard.store.db import Database
from modelyard.store.experiments import ACTIVE, DELETED, project_experiment_ids, resolve_experiment_id
from modelyard.store.runs import wire_metric_value, random_run_name
from modelyard.store.schema import experiments
from modelyard.store.schema import logged_model_metrics as LM
from modelyard.store.schema import logged_model_params as LP
from modelyard.store.schema import logged_model_tags as LT
from modelyard.store.schema import logged_models as L

__all__ = ["LoggedModelStore", "STATUSES", "SEARCH"]

STATUSES = ("LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED")

SEARCH = search.Entity(
    "logged models",
    attributes={
        "name": ("string", "name"),
        "model_id": ("string", "model_id"),
        "model_type": ("string", "model_type"),
        "status": ("string", "status"),
        "source_run_id": ("string", "source_run_id"),
        "creation_timestamp": ("numeric", "creation_timestamp_ms"),
        "creation_time": ("numeric", "creation_timestamp_ms"),
        "last_updated_timestamp": ("numeric", "last_updated_timestamp_ms"),
        "last_updated_time": ("numeric", "last_updated_timestamp_ms"),
    },
    kinds={
        "metric": search.NUMERIC_OPS,
        "param": ("=", "!=", "LIKE", "ILIKE"),
        "tag": ("=", "!=", "LIKE", "ILIKE"),
    },
    in_attributes=("model_id", "name", "source_run_id"),
)


class LoggedModelStore:
    def __init__(self, db: Database):
        self.db = db

    async def create(self, project: str, experiment_id: str, name: str | None, model_type: str | None,
                     source_run_id: str | None, params: list[dict], tags: list[dict]) -> dict:
        model_id = new_model_id()
        name = name or random_run_name()

        def create(conn):
            eid = resolve_experiment_id(conn, project, experiment_id)
            exp = conn.execute(sa.select(experiments.c.lifecycle_stage, experiments.c.artifact_location)
                               .where(experiments.c.experiment_id == eid)).first()
            if exp.lifecycle_stage != ACTIVE:
                raise MlflowError.invalid(f"The experiment {eid} must be in the 'active' state.")
            t = now_ms()
            conn.execute(L.insert().values(
                model_id=model_id, experiment_id=eid, name=name,
                artifact_location=f"{exp.artifact_location.rstrip('/')}/models/{model_id}/artifacts",
                creation_timestamp_ms=t, last_updated_timestamp_ms=t, status="LOGGED_MODEL_PENDING",
                lifecycle_stage=ACTIVE, model_type=model_type, source_run_id=source_run_id))
            if params:
                conn.execute(LP.insert(), [{"model_id": model_id, "key": k, "value": v}
                                           for k, v in {p["key"]: p["value"] for p in params}.items()])
            if tags:
                conn.execute(LT.insert(), [{"model_id": model_id, "key": k, "value": v}
                                           for k, v in {p["key"]: p["value"] for p in tags}.items()])
            return _load(conn, [_row(conn, model_id, project)])[0]

        return await self.db.write(create)

    async def get(self, project: str, model_id: str) -> dict:
        return await self.db.read(lambda conn: _load(conn, [_row(conn, model_id, project)])[0])

    async def finalize(self, project: str, model_id: str, status: str) -> dict:
        def finalize(conn):
            _row(conn, model_id, project)
            conn.execute(L.update().where(L.c.model_id == model_id).values(
                status=status, last_updated_timestamp_ms=now_ms()))
            return _load(conn, [_row(conn, model_id, project)])[0]

        return await self.db.write(finalize)

    async def delete(self, project: str, model_id: str) -> None:
        def delete(conn):
            _row(conn, model_id, project)
            conn.execute(L.update().where(L.c.model_id == model_id).values(
                lifecycle_stage=DELETED, last_updated_timestamp_ms=now_ms()))

        await self.db.write(delete)

    async def set_tags(self, project: str, model_id: str, tags: list[dict]) -> None:
        def write(conn):
            _row(conn, model_id, project)
            if tags:
                conn.execute(self.db.upsert(LT, ["model_id", "key"], None, update=["value"]),
                             [{"model_id": model_id, "key": k, "value": v}
                              for k, v in {t["key"]: t["value"] for t in tags}.items()])
                conn.execute(L.update().where(L.c.model_id == model_id).values(last_updated_timestamp_ms=now_ms()))

        await self.db.write(write)

    async def delete_tag(self, project: str, model_id: str, key: str) -> None:
        def write(conn):
            _row(conn, model_id, project)
            if conn.execute(LT.delete().where(LT.c.model_id == model_id, LT.c.key == key)).rowcount == 0:
                raise MlflowError.not_found(f"No tag with key {key!r} found for model with ID {model_id!r}.")

        await self.db.write(write)

    async def log_params(self, project: str, model_id: str, params: list[dict]) -> None:
        def write(conn):
            _row(conn, model_id, project)
            if params:
                conn.execute(self.db.upsert(LP, ["model_id", "key"], None, update=["value"]),
                             [{"model_id": model_id, "key": k, "value": v}
                              for k, v in {p["key"]: p["value"] for p in params}.items()])

        await self.db.write(write)

    async def search(self, project: str, experiment_ids: list[str], filter_string: str | None, dataset_filters: list[dict],
                     max_results: int, order_by: list[dict], page_token: str | None) -> tuple[list[dict], str | None]:
        comparisons = search.parse_filter(filter_string, SEARCH)
        offset = search.decode_page_token(page_token)
        orders = []
        for o in order_by:
            parsed = search.parse_order_by(o["field_name"], SEARCH)
            orders.append((parsed, o.get("ascending", True) is not False, o.get("dataset_name"), o.get("dataset_digest")))

        def run(conn):
            eids = project_experiment_ids(conn, project, experiment_ids)
            q = sa.select(L).where(L.c.experiment_id.in_(eids), L.c.lifecycle_stage == ACTIVE)
            for c in comparisons:
                q = q.where(_condition(c, dataset_filters))
            cols = []
            for i, (o, ascending, ds_name, ds_digest) in enumerate(orders):
                if o.kind == "attribute":
                    col = L.c[o.key]
                elif o.kind == "metric":
                    sub = sa.select(sa.func.max(LM.c.value)).where(LM.c.model_id == L.c.model_id, LM.c.key == o.key)
                    if ds_name:
                        sub = sub.where(LM.c.dataset_name == ds_name)
                    if ds_digest:
                        sub = sub.where(LM.c.dataset_digest == ds_digest)
                    col = sub.scalar_subquery()
                else:
                    table = LP if o.kind == "param" else LT
                    col = sa.select(table.c.value).where(table.c.model_id == L.c.model_id,
                                                         table.c.key == o.key).scalar_subquery()
                cols += [col.is_(None), col.asc() if ascending else col.desc()]
            if not orders:
                cols.append(L.c.creation_timestamp_ms.desc())
            cols.append(L.c.model_id.asc())
            rows = conn.execute(q.order_by(*cols).limit(max_results + 1).offset(offset)).all()
            token = search.encode_page_token(offset + max_results) if len(rows) > max_results else None
            return _load(conn, rows[:max_results]), token

        return await self.db.read(run)


def _row(conn, model_id: str, project: str):
    row = conn.execute(sa.select(L, experiments.c.project)
                       .join(experiments, experiments.c.experiment_id == L.c.experiment_id)
                       .where(L.c.model_id == model_id)).first()
    if row is None or row.lifecycle_stage != ACTIVE or row.project != project:
        raise MlflowError.not_found(f"Logged model with ID '{model_id}' not found.")
    return row


def _condition(c: search.Comparison, dataset_filters: list[dict]):
    if c.kind == "metric":
        sub = sa.select(LM.c.model_id).where(LM.c.model_id == L.c.model_id, LM.c.key == c.key,
                                             numeric_op(LM.c.value, c.op, c.value))
        if dataset_filters:
            sub = sub.where(sa.or_(*[
                sa.and_(LM.c.dataset_name == d["dataset_name"],
                        *([LM.c.dataset_digest == d["dataset_digest"]] if d.get("dataset_digest") else []))
                for d in dataset_filters]))
        return sub.exists()
    if c.kind in ("param", "tag"):
        table = LP if c.kind == "param" else LT
        return sa.select(table.c.model_id).where(table.c.model_id == L.c.model_id, table.c.key == c.key,
                                                 string_op(table.c.value, c.op, c.value)).exists()
    col = L.c[c.key]
    if c.key.endswith("_ms"):
        return numeric_op(col, c.op, c.value)
    return string_op(col, c.op, c.value)


def _load(conn, rows) -> list[dict]:
    ids = [r.model_id for r in rows]
    tags: dict[str, list] = {}
    params: dict[str, list] = {}
    metrics: dict[str, list] = {}
    if ids:
        for r in conn.execute(sa.select(LT).where(LT.c.model_id.in_(ids))):
            tags.setdefault(r.model_id, []).append({"key": r.key, "value": r.value})
        for r in conn.execute(sa.select(LP).where(LP.c.model_id.in_(ids))):
            params.setdefault(r.model_id, []).append({"key": r.key, "value": r.value})
        for r in conn.execute(sa.select(LM).where(LM.c.model_id.in_(ids))):
            m = {"key": r.key, "value": wire_metric_value(r.value, r.is_nan), "timestamp": r.timestamp,
                 "step": r.step, "model_id": r.model_id, "run_id": r.run_id}
            if r.dataset_name:
                m["dataset_name"] = r.dataset_name
            if r.dataset_digest:
                m["dataset_digest"] = r.dataset_digest
            metrics.setdefault(r.model_id, []).append(m)
    out = []
    for r in rows:
        info = {
            "model_id": r.model_id, "experiment_id": str(r.experiment_id), "name": r.name,
            "creation_timestamp_ms": r.creation_timestamp_ms, "last_updated_timestamp_ms": r.last_updated_timestamp_ms,
            "artifact_uri": r.artifact_location, "status": r.status,
        }
        if r.model_type:
            info["model_type"] = r.model_type
        if r.source_run_id:
            info["source_run_id"] = r.source_run_id
        if r.status_message:
            info["status_message"] = r.status_message
        if r.model_id in tags:
            info["tags"] = tags[r.model_id]
        data = {}
        if r.model_id in params:
            data["params"] = params[r.model_id]
        if r.model_id in metrics:
            data["metrics"] = metrics[r.model_id]
        out.append({"info": info, "data": data})
    return out
