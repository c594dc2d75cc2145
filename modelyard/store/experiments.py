"""Experiments and their tags."""
from __future__ import annotations

import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.store import search
from modelyard.store._filters import numeric_op, string_op
from modelyard.store._common import now_ms
from modelyard.store.db import Database
from modelyard.store.projects import DEFAULT_PROJECT
from modelyard.store.schema import experiment_tags as T
from modelyard.store.schema import experiments as E

__all__ = [
    "ExperimentStore", "ACTIVE", "DELETED", "SEARCH", "experiment_row", "resolve_experiment_id", "project_experiment_ids",
]

ACTIVE, DELETED = "active", "deleted"
DEFAULT_ID = 0

SEARCH = search.Entity(
    "experiments",
    attributes={
        "name": ("string", "name"),
        "experiment_id": ("string", "experiment_id"),
        "creation_time": ("numeric", "creation_time"),
        "last_update_time": ("numeric", "last_update_time"),
    },
    kinds={"tag": ("=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL")},
    in_attributes=("experiment_id",),
)

_VIEW_STAGES = {"ACTIVE_ONLY": (ACTIVE,), "DELETED_ONLY": (DELETED,), "ALL": (ACTIVE, DELETED)}


def parse_experiment_id(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MlflowError.invalid(f"Invalid experiment ID: '{value}'") from None


_EXPERIMENT_COLS = (E.c.experiment_id, E.c.project, E.c.lifecycle_stage, E.c.artifact_location)
# Built once: every run created looks its experiment up.
_EXPERIMENT_BY_ID = sa.select(*_EXPERIMENT_COLS).where(E.c.experiment_id == sa.bindparam("eid"))
_PROJECT_DEFAULT = sa.select(*_EXPERIMENT_COLS).where(E.c.project == sa.bindparam("project"), E.c.name == "Default")


def experiment_row(conn, project: str, experiment_id):
    """The experiment an id names as seen from ``project``: it must belong to it.

    The client falls back to experiment "0" when none is set; every project has its own Default
    experiment, and "0" names it (in the project ``default`` it really is experiment 0).
    """
    eid = parse_experiment_id(experiment_id)
    if names_project_default(project, eid):
        row = conn.execute(_PROJECT_DEFAULT, {"project": project}).first()
    else:
        row = conn.execute(_EXPERIMENT_BY_ID, {"eid": eid}).first()
    return in_project(row, project, eid)


def names_project_default(project: str, eid: int) -> bool:
    """Whether ``eid`` is "0" asked from a project other than ``default``: that project's Default."""
    return eid == DEFAULT_ID and project != DEFAULT_PROJECT


def in_project(row, project: str, eid: int):
    """``row``, an experiment looked up for ``eid``, if it belongs to ``project``: another
    project's experiment is as good as missing."""
    if row is None or row.project != project:
        raise MlflowError.not_found(f"No Experiment with id={eid} exists")
    return row


def resolve_experiment_id(conn, project: str, experiment_id) -> int:
    return experiment_row(conn, project, experiment_id).experiment_id


def project_experiment_ids(conn, project: str, experiment_ids: list) -> list[int]:
    """The ids among ``experiment_ids`` that belong to ``project`` (others are silently absent)."""
    wanted = [parse_experiment_id(e) for e in experiment_ids]
    if project != DEFAULT_PROJECT and DEFAULT_ID in wanted:
        row = conn.execute(sa.select(E.c.experiment_id).where(E.c.project == project, E.c.name == "Default")).first()
        wanted = [w for w in wanted if w != DEFAULT_ID] + ([row.experiment_id] if row else [])
    if not wanted:
        return []
    return [r.experiment_id for r in conn.execute(
        sa.select(E.c.experiment_id).where(E.c.experiment_id.in_(wanted), E.c.project == project))]


class ExperimentStore:
    def __init__(self, db: Database, artifact_root: str):
        self.db = db
        self.artifact_root = artifact_root.rstrip("/")

    # -- writes ---------------------------------------------------------------------------------
    def ensure_default(self) -> None:
        def create(conn):
            if conn.execute(sa.select(E.c.experiment_id).where(E.c.experiment_id == DEFAULT_ID)).first():
                return
            t = now_ms()
            conn.execute(E.insert().values(
                experiment_id=DEFAULT_ID, project=DEFAULT_PROJECT, name="Default",
                artifact_location=f"{self.artifact_root}/0",
                lifecycle_stage=ACTIVE, creation_time=t, last_update_time=t))

        try:
            self.db.write_sync(create)
        except sa.exc.IntegrityError:
            pass  # another worker made it first

    def create_sync(self, conn, project: str, name: str, artifact_location: str | None = None,
                    tags: list[dict] | None = None) -> str:
        # Creations queue on the Default experiment's row (PostgreSQL; SQLite's single writer
        # already serialises them), so the name check and max + 1 below never race.
        conn.execute(sa.select(E.c.experiment_id).where(E.c.experiment_id == DEFAULT_ID).with_for_update())
        if conn.execute(sa.select(E.c.experiment_id).where(E.c.project == project, E.c.name == name)).first():
            raise MlflowError.exists(f"Experiment '{name}' already exists.")
        # Ids are made here, not read back: the next integer, under that lock.
        new_id = (conn.execute(sa.select(sa.func.max(E.c.experiment_id))).scalar() or 0) + 1
        t = now_ms()
        conn.execute(E.insert().values(
            experiment_id=new_id, project=project, name=name,
            artifact_location=artifact_location or f"{self.artifact_root}/{new_id}",
            lifecycle_stage=ACTIVE, creation_time=t, last_update_time=t))
        if tags:
            conn.execute(T.insert(), [{"experiment_id": new_id, "key": x["key"], "value": x["value"]}
                                      for x in _dedupe(tags)])
        return str(new_id)

    async def create(self, project: str, name: str, artifact_location: str | None, tags: list[dict]) -> str:
        def create(conn):
            return self.create_sync(conn, project, name, artifact_location, tags)

        return await self.db.write(create)

    async def rename(self, project: str, experiment_id: str, new_name: str) -> None:
        def rename(conn):
            eid = resolve_experiment_id(conn, project, experiment_id)
            row = self._get_row(conn, eid)
            if row.lifecycle_stage != ACTIVE:
                raise MlflowError.invalid("Cannot rename a non-active experiment.")
            clash = conn.execute(sa.select(E.c.experiment_id).where(E.c.project == project, E.c.name == new_name)).first()
            if clash and clash.experiment_id != eid:
                raise MlflowError.exists(f"Experiment '{new_name}' already exists.")
            conn.execute(E.update().where(E.c.experiment_id == eid).values(name=new_name, last_update_time=now_ms()))

        await self.db.write(rename)

    async def set_lifecycle(self, project: str, experiment_id: str, stage: str) -> None:
        def change(conn):
            eid = resolve_experiment_id(conn, project, experiment_id)
            row = self._get_row(conn, eid)
            if stage == DELETED and (eid == DEFAULT_ID or row.name == "Default"):
                raise MlflowError.invalid("Cannot delete the default experiment '0'.")
            if stage == DELETED and row.lifecycle_stage != ACTIVE:
                raise MlflowError.invalid(f"Cannot delete non-active experiment {eid}.")
            if stage == ACTIVE and row.lifecycle_stage != DELETED:
                raise MlflowError.invalid(f"Cannot restore an active experiment {eid}.")
            t = now_ms()
            conn.execute(E.update().where(E.c.experiment_id == eid).values(lifecycle_stage=stage, last_update_time=t))
            from modelyard.store.schema import runs

            conn.execute(runs.update().where(runs.c.experiment_id == eid).values(
                lifecycle_stage=stage, deleted_time=t if stage == DELETED else None))

        await self.db.write(change)

    async def set_tag(self, project: str, experiment_id: str, key: str, value: str) -> None:
        def set_tag(conn):
            eid = resolve_experiment_id(conn, project, experiment_id)
            row = self._get_row(conn, eid)
            if row.lifecycle_stage != ACTIVE:
                raise MlflowError.invalid(f"The experiment {eid} must be in the 'active' state.")
            conn.execute(self.db.upsert(T, ["experiment_id", "key"],
                                        {"experiment_id": eid, "key": key, "value": value}, update=["value"]))

        await self.db.write(set_tag)

    async def delete_tag(self, project: str, experiment_id: str, key: str) -> None:
        def delete_tag(conn):
            eid = resolve_experiment_id(conn, project, experiment_id)
            row = self._get_row(conn, eid)
            if row.lifecycle_stage != ACTIVE:
                raise MlflowError.invalid(f"The experiment {eid} must be in the 'active' state.")
            res = conn.execute(T.delete().where(T.c.experiment_id == eid, T.c.key == key))
            if res.rowcount == 0:
                raise MlflowError.not_found(f"No tag with name: {key} in experiment with id {eid}")

        await self.db.write(delete_tag)

    # -- reads ----------------------------------------------------------------------------------
    @staticmethod
    def _get_row(conn, eid: int):
        row = conn.execute(sa.select(E).where(E.c.experiment_id == eid)).first()
        if row is None:
            raise MlflowError.not_found(f"No Experiment with id={eid} exists")
        return row

    async def get(self, project: str, experiment_id: str) -> dict:
        def get(conn):
            return self._to_dicts(conn, [self._get_row(conn, resolve_experiment_id(conn, project, experiment_id))])[0]

        return await self.db.read(get)

    async def get_by_name(self, project: str, name: str) -> dict:
        def get(conn):
            row = conn.execute(sa.select(E).where(E.c.project == project, E.c.name == name)).first()
            if row is None:
                raise MlflowError.not_found(f"Could not find experiment with name '{name}'")
            return self._to_dicts(conn, [row])[0]

        return await self.db.read(get)

    async def search(self, project: str, view_type: str, max_results: int, filter_string: str | None,
                     order_by: list[str], page_token: str | None) -> tuple[list[dict], str | None]:
        stages = _VIEW_STAGES.get(view_type or "ACTIVE_ONLY")
        if stages is None:
            raise MlflowError.invalid(f"Invalid view_type '{view_type}'")
        comparisons = search.parse_filter(filter_string, SEARCH)
        orders = [search.parse_order_by(o, SEARCH) for o in order_by or []]
        offset = search.decode_page_token(page_token)

        def run(conn):
            q = sa.select(E).where(E.c.project == project, E.c.lifecycle_stage.in_(stages))
            for c in comparisons:
                q = q.where(_condition(c))
            order = []
            for o in orders:
                if o.kind == "tag":
                    raise MlflowError.invalid("Ordering experiments by tag is not supported.")
                col = E.c[o.key]
                order.append(col.asc() if o.ascending else col.desc())
            keys = {o.key for o in orders}
            if not orders:
                order.append(E.c.creation_time.desc())
            if "experiment_id" not in keys:
                order.append(E.c.experiment_id.asc())
            rows = conn.execute(q.order_by(*order).limit(max_results + 1).offset(offset)).all()
            token = search.encode_page_token(offset + max_results) if len(rows) > max_results else None
            return self._to_dicts(conn, rows[:max_results]), token

        return await self.db.read(run)

    def _to_dicts(self, conn, rows) -> list[dict]:
        ids = [r.experiment_id for r in rows]
        tags: dict[int, list] = {}
        if ids:
            for t in conn.execute(sa.select(T).where(T.c.experiment_id.in_(ids))):
                tags.setdefault(t.experiment_id, []).append({"key": t.key, "value": t.value})
        out = []
        for r in rows:
            d = {
                "experiment_id": str(r.experiment_id),
                "name": r.name,
                "artifact_location": r.artifact_location,
                "lifecycle_stage": r.lifecycle_stage,
                "last_update_time": r.last_update_time,
                "creation_time": r.creation_time,
            }
            if r.experiment_id in tags:
                d["tags"] = tags[r.experiment_id]
            out.append(d)
        return out


def _condition(c: search.Comparison):
    if c.kind == "tag":
        exists = sa.select(T.c.experiment_id).where(T.c.experiment_id == E.c.experiment_id, T.c.key == c.key)
        if c.op == "IS NULL":
            return ~exists.exists()
        if c.op == "IS NOT NULL":
            return exists.exists()
        if c.op == "!=":
            # MLflow: != matches experiments that have the tag with another value.
            return exists.where(T.c.value != c.value).exists()
        return exists.where(string_op(T.c.value, c.op, c.value)).exists()
    if c.key == "experiment_id":
        if c.op in ("IN", "NOT IN"):
            ids = [parse_experiment_id(v) for v in c.value]
            return E.c.experiment_id.in_(ids) if c.op == "IN" else E.c.experiment_id.not_in(ids)
        if c.op in ("=", "!="):
            eid = parse_experiment_id(c.value)
            return E.c.experiment_id == eid if c.op == "=" else E.c.experiment_id != eid
        return string_op(sa.cast(E.c.experiment_id, sa.String), c.op, c.value)
    col = E.c[c.key]
    if c.key in ("creation_time", "last_update_time"):
        return numeric_op(col, c.op, c.value)
    return string_op(col, c.op, c.value)


def _dedupe(tags: list[dict]) -> list[dict]:
    return list({t["key"]: t for t in tags}.values())
