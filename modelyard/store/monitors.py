"""Reference profiles, monitors, their result series and reports, and scheduler leases."""
from __future__ import annotations

import uuid

import orjson
import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.store._common import now_ms
from modelyard.store.db import Database
from modelyard.store.schema import monitor_leases as LEASE
from modelyard.store.schema import monitor_reports as REP
from modelyard.store.schema import monitor_series as S
from modelyard.store.schema import model_versions as MV
from modelyard.store.schema import monitors as M
from modelyard.store.schema import reference_profiles as R

__all__ = ["MonitorStore"]

MAX_REPORTS_KEPT = 200


def _reference(row) -> dict:
    """A reference's wire form from a row or a dict of its columns (its profile left out)."""
    get = row.get if isinstance(row, dict) else (lambda k: getattr(row, k))
    d = {"reference_id": get("reference_id"), "name": get("name"), "rows": get("rows"), "created_ms": get("created_ms")}
    for k in ("model_name", "model_version", "source"):
        if get(k) is not None:
            d[k] = get(k)
    return d


def _monitor(row) -> dict:
    d = {"monitor_id": row.monitor_id, "name": row.name, "deployment": row.deployment,
         "config": orjson.loads(row.config), "enabled": bool(row.enabled), "created_ms": row.created_ms,
         "updated_ms": row.updated_ms, "next_eval_ms": row.next_eval_ms}
    for k in ("last_eval_ms", "last_status", "last_error"):
        if getattr(row, k) is not None:
            d[k] = getattr(row, k)
    return d


class MonitorStore:
    def __init__(self, db: Database):
        self.db = db

    # -- reference profiles --------------------------------------------------------------------------
    async def create_reference(self, project: str, name: str, model_name: str | None, model_version: str | None,
                               source: str | None, rows: int, blob: bytes, once: bool = False) -> dict:
        """Store a reference profile. With ``once``, a model version that already has one keeps it and
        that one is returned: the scheduler's sweep and a monitor's first window may both compute the
        profile of a newly registered version, and only the first to commit stores it."""
        values = {"reference_id": uuid.uuid4().hex, "project": project, "name": name, "model_name": model_name,
                  "model_version": model_version, "source": source, "rows": rows, "created_ms": now_ms(),
                  "profile": blob}

        def write(conn):
            if once:
                # PostgreSQL: the version's row lock orders two writers; SQLite has one writer anyway
                conn.execute(sa.select(MV.c.name).where(
                    MV.c.project == project, MV.c.name == model_name, MV.c.version == int(model_version))
                    .with_for_update()).first()
                row = conn.execute(sa.select(*[c for c in R.c if c.name != "profile"]).where(
                    R.c.project == project, R.c.model_name == model_name, R.c.model_version == model_version)).first()
                if row is not None:
                    return _reference(row)
            conn.execute(R.insert().values(**values))
            return _reference(values)

        return await self.db.write(write)

    async def get_reference(self, project: str, reference_id: str, with_profile: bool = False):
        def read(conn):
            row = conn.execute(sa.select(R).where(R.c.project == project, R.c.reference_id == reference_id)).first()
            if row is None:
                raise MlflowError.not_found(f"Reference profile '{reference_id}' not found.")
            return (_reference(row), row.profile) if with_profile else _reference(row)

        return await self.db.read(read)

    async def list_references(self, project: str, model_name: str | None = None, limit: int = 1000) -> list[dict]:
        def read(conn):
            q = sa.select(*[c for c in R.c if c.name != "profile"]).where(R.c.project == project)
            if model_name is not None:
                q = q.where(R.c.model_name == model_name)
            return [_reference(r) for r in conn.execute(q.order_by(R.c.created_ms.desc()).limit(limit))]

        return await self.db.read(read)

    async def find_reference(self, project: str, model_name: str, version: str | None) -> tuple[dict, bytes] | None:
        """The newest profile of that model version; without a version (or none for it), of the model."""

        def read(conn):
            base = sa.select(R).where(R.c.project == project, R.c.model_name == model_name)
            row = None
            if version is not None:
                row = conn.execute(base.where(R.c.model_version == str(version)).order_by(R.c.created_ms.desc())).first()
            if row is None:
                row = conn.execute(base.order_by(R.c.created_ms.desc())).first()
            return None if row is None else (_reference(row), row.profile)

        return await self.db.read(read)

    async def has_reference(self, project: str, model_name: str, version: str) -> bool:
        def read(conn):
            return conn.execute(sa.select(R.c.reference_id).where(
                R.c.project == project, R.c.model_name == model_name, R.c.model_version == version)).first() is not None

        return await self.db.read(read)

    async def delete_reference(self, project: str, reference_id: str) -> None:
        def write(conn):
            if not conn.execute(R.delete().where(R.c.project == project, R.c.reference_id == reference_id)).rowcount:
                raise MlflowError.not_found(f"Reference profile '{reference_id}' not found.")

        await self.db.write(write)

    # -- monitors ------------------------------------------------------------------------------------
    async def create(self, project: str, name: str, deployment: str, config: dict, enabled: bool,
                     next_eval_ms: int) -> dict:
        now = now_ms()
        values = {"monitor_id": uuid.uuid4().hex, "project": project, "name": name, "deployment": deployment,
                  "config": orjson.dumps(config).decode(), "enabled": enabled, "created_ms": now, "updated_ms": now,
                  "next_eval_ms": next_eval_ms}

        def write(conn):
            if conn.execute(sa.select(M.c.monitor_id).where(M.c.project == project, M.c.name == name)).first():
                raise MlflowError.exists(f"Monitor '{name}' already exists.")
            conn.execute(M.insert().values(**values))
            return _monitor(conn.execute(sa.select(M).where(M.c.monitor_id == values["monitor_id"])).one())

        return await self.db.write(write)

    async def update(self, project: str, name: str, deployment: str | None, config: dict | None,
                     enabled: bool | None, next_eval_ms: int | None) -> dict:
        def write(conn):
            row = conn.execute(sa.select(M).where(M.c.project == project, M.c.name == name)).first()
            if row is None:
                raise MlflowError.not_found(f"Monitor '{name}' not found.")
            values = {"updated_ms": now_ms()}
            if deployment is not None:
                values["deployment"] = deployment
            if config is not None:
                values["config"] = orjson.dumps(config).decode()
            if enabled is not None:
                values["enabled"] = enabled
            if next_eval_ms is not None:
                values["next_eval_ms"] = next_eval_ms
            conn.execute(M.update().where(M.c.monitor_id == row.monitor_id).values(**values))
            return _monitor(conn.execute(sa.select(M).where(M.c.monitor_id == row.monitor_id)).one())

        return await self.db.write(write)

    async def get(self, project: str, name: str) -> dict:
        def read(conn):
            row = conn.execute(sa.select(M).where(M.c.project == project, M.c.name == name)).first()
            if row is None:
                raise MlflowError.not_found(f"Monitor '{name}' not found.")
            return _monitor(row)

        return await self.db.read(read)

    async def get_by_id(self, monitor_id: str) -> tuple[str, dict] | None:
        def read(conn):
            row = conn.execute(sa.select(M).where(M.c.monitor_id == monitor_id)).first()
            return None if row is None else (row.project, _monitor(row))

        return await self.db.read(read)

    async def list(self, project: str | None, deployment: str | None = None) -> list[dict]:
        def read(conn):
            q = sa.select(M)
            if project is not None:
                q = q.where(M.c.project == project)
            if deployment is not None:
                q = q.where(M.c.deployment == deployment)
            return [dict(_monitor(r), project=r.project) for r in conn.execute(q.order_by(M.c.name))]

        return await self.db.read(read)

    async def delete(self, project: str, name: str) -> None:
        def write(conn):
            row = conn.execute(sa.select(M.c.monitor_id).where(M.c.project == project, M.c.name == name)).first()
            if row is None:
                raise MlflowError.not_found(f"Monitor '{name}' not found.")
            for table in (S, REP):
                conn.execute(table.delete().where(table.c.monitor_id == row.monitor_id))
            conn.execute(M.delete().where(M.c.monitor_id == row.monitor_id))

        await self.db.write(write)

    async def claim_due(self, now: int, delay_ms: int, step_ms) -> list[tuple[str, dict, int]]:
        """Claim every enabled monitor whose next window ended at least ``delay_ms`` ago.

        The claim is a conditional UPDATE of ``next_eval_ms``: when several server processes race,
        exactly one moves it and evaluates that window. ``step_ms(monitor)`` gives the next window
        end after a given one. Returns (project, monitor, window end) for each claimed monitor.
        """

        def write(conn):
            due = conn.execute(sa.select(M).where(M.c.enabled == sa.true(), M.c.next_eval_ms <= now - delay_ms)
                               .order_by(M.c.next_eval_ms).limit(100)).all()
            claimed = []
            for row in due:
                mon = _monitor(row)
                nxt = step_ms(mon, row.next_eval_ms, now - delay_ms)
                res = conn.execute(M.update().where(M.c.monitor_id == row.monitor_id,
                                                    M.c.next_eval_ms == row.next_eval_ms).values(next_eval_ms=nxt))
                if res.rowcount == 1:
                    claimed.append((row.project, mon, row.next_eval_ms))
            return claimed

        return await self.db.write(write)

    async def record(self, monitor_id: str, ts_ms: int, series: list[tuple[str, str, float]], report: bytes | None,
                     status: str, error: str | None) -> None:
        """Store one evaluation: its series points (replacing any at the same time) and report."""
        rows = [{"monitor_id": monitor_id, "ts_ms": ts_ms, "metric": m, "feature": f, "value": v} for m, f, v in series]

        def write(conn):
            conn.execute(S.delete().where(S.c.monitor_id == monitor_id, S.c.ts_ms == ts_ms))
            if rows:
                conn.execute(S.insert(), rows)
            if report is not None:
                conn.execute(REP.delete().where(REP.c.monitor_id == monitor_id, REP.c.ts_ms == ts_ms))
                conn.execute(REP.insert().values(monitor_id=monitor_id, ts_ms=ts_ms, report=report))
                old = conn.execute(sa.select(REP.c.ts_ms).where(REP.c.monitor_id == monitor_id)
                                   .order_by(REP.c.ts_ms.desc()).offset(MAX_REPORTS_KEPT).limit(1)).first()
                if old is not None:
                    conn.execute(REP.delete().where(REP.c.monitor_id == monitor_id, REP.c.ts_ms <= old.ts_ms))
            conn.execute(M.update().where(M.c.monitor_id == monitor_id).values(
                last_eval_ms=ts_ms, last_status=status, last_error=error))

        await self.db.write(write)

    async def series(self, monitor_id: str, metric: str | None, feature: str | None, start_ms: int | None,
                     end_ms: int | None, limit: int) -> list[dict]:
        """Points ordered by time (the newest ``limit`` of them), grouped by the caller."""

        def read(conn):
            q = sa.select(S.c.ts_ms, S.c.metric, S.c.feature, S.c.value).where(S.c.monitor_id == monitor_id)
            if metric is not None:
                q = q.where(S.c.metric == metric)
            if feature is not None:
                q = q.where(S.c.feature == feature)
            if start_ms is not None:
                q = q.where(S.c.ts_ms >= start_ms)
            if end_ms is not None:
                q = q.where(S.c.ts_ms < end_ms)
            rows = conn.execute(q.order_by(S.c.ts_ms.desc()).limit(limit)).all()
            return [{"ts_ms": r.ts_ms, "metric": r.metric, "feature": r.feature, "value": r.value}
                    for r in reversed(rows)]

        return await self.db.read(read)

    async def latest_points(self, monitor_ids: list[str]) -> dict[str, list[tuple[str, str, float]]]:
        """Each monitor's points at its last evaluation."""

        def read(conn):
            out: dict[str, list] = {}
            for mid in monitor_ids:
                last = conn.execute(sa.select(M.c.last_eval_ms).where(M.c.monitor_id == mid)).scalar()
                if last is None:
                    continue
                out[mid] = [(r.metric, r.feature, r.value) for r in conn.execute(
                    sa.select(S.c.metric, S.c.feature, S.c.value).where(S.c.monitor_id == mid, S.c.ts_ms == last))]
            return out

        return await self.db.read(read)

    async def report(self, monitor_id: str, ts_ms: int | None) -> tuple[int, bytes] | None:
        def read(conn):
            q = sa.select(REP.c.ts_ms, REP.c.report).where(REP.c.monitor_id == monitor_id)
            if ts_ms is not None:
                q = q.where(REP.c.ts_ms <= ts_ms)
            row = conn.execute(q.order_by(REP.c.ts_ms.desc()).limit(1)).first()
            return None if row is None else (row.ts_ms, row.report)

        return await self.db.read(read)

    async def drop_series_before(self, cutoff_ms: int) -> None:
        def write(conn):
            conn.execute(S.delete().where(S.c.ts_ms < cutoff_ms))
            conn.execute(REP.delete().where(REP.c.ts_ms < cutoff_ms))

        await self.db.write(write)

    # -- leases --------------------------------------------------------------------------------------
    async def acquire_lease(self, name: str, owner: str, ttl_ms: int) -> bool:
        """Take (or keep) the named lease for ``ttl_ms``; False while another owner holds it."""
        now = now_ms()

        def write(conn):
            conn.execute(self.db.upsert(LEASE, ["name"], {"name": name, "owner": owner, "until_ms": 0}))
            res = conn.execute(LEASE.update().where(
                LEASE.c.name == name, sa.or_(LEASE.c.until_ms < now, LEASE.c.owner == owner)).values(
                owner=owner, until_ms=now + ttl_ms))
            return res.rowcount == 1

        return await self.db.write(write)

