"""Audit events: who did what to which object, when; written in batches off the request path."""
from __future__ import annotations

import asyncio
import uuid

import sqlalchemy as sa

from modelyard.store._common import now_ms
from modelyard.store.db import Database
from modelyard.store.schema import audit_events as A
from modelyard.store.schema import projects as P

__all__ = ["AuditLog"]

_FLUSH_SECONDS = 0.2
_MAX_PENDING = 100_000


class AuditLog:
    """Buffers events and writes them as one insert every 200 ms (or at shutdown).

    Recording must not add a transaction to every logged metric; the price is that a crash can
    lose the last 200 ms of audit events (never the data they describe).
    """

    def __init__(self, db: Database):
        self.db = db
        self._pending: list[dict] = []
        self._task: asyncio.Task | None = None
        # One flush at a time: a read flushes first, and must not read past a batch that an earlier
        # flush has taken from the buffer but not yet committed.
        self._flushing = asyncio.Lock()
        self.dropped = 0

    def record(self, project: str, actor: str, action: str, status: int, object_type: str | None = None,
               object_id: str | None = None, source_ip: str | None = None, details: str | None = None) -> None:
        if len(self._pending) >= _MAX_PENDING:
            self.dropped += 1
            return
        self._pending.append({
            "event_id": uuid.uuid4().hex, "time_ms": now_ms(), "project": project, "actor": actor,
            "action": action, "object_type": object_type, "object_id": (object_id or "")[:512] or None,
            "status": status, "source_ip": source_ip, "details": details,
        })
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(_FLUSH_SECONDS)
        await self.flush()

    async def flush(self) -> None:
        async with self._flushing:
            events, self._pending = self._pending, []
            if events:
                await self.db.write(lambda conn: conn.execute(A.insert(), events))

    async def list(self, project: str, limit: int, before_ms: int | None, actor: str | None,
                   action: str | None) -> list[dict]:
        await self.flush()

        def read(conn):
            q = sa.select(A).where(A.c.project == project).order_by(A.c.time_ms.desc(), A.c.event_id).limit(limit)
            if before_ms is not None:
                q = q.where(A.c.time_ms < before_ms)
            if actor:
                q = q.where(A.c.actor == actor)
            if action:
                q = q.where(A.c.action.like(f"%{action}%"))
            return [{str(k): v for k, v in r._asdict().items() if v is not None} for r in conn.execute(q)]

        return await self.db.read(read)

    async def drop_before(self, cutoff_ms: int, batch: int = 10_000) -> int:
        """Forget events older than ``cutoff_ms``, a batch per write so that no transaction holds
        SQLite's write lock for long; returns how many went."""
        projects = await self.db.read(lambda conn: list(conn.execute(sa.select(P.c.name)).scalars()))
        dropped = 0
        for project in projects:
            old = sa.select(A.c.event_id).where(A.c.project == project, A.c.time_ms < cutoff_ms).limit(batch)
            while True:
                n = await self.db.write(lambda conn: conn.execute(A.delete().where(A.c.event_id.in_(old))).rowcount)
                dropped += n
                if n < batch:
                    break
        return dropped

    async def for_object(self, project: str, object_type: str, name: str, actions: list[str], limit: int) -> list[dict]:
        """Events about ``name`` and its parts (``name/<version>``, ``name@<alias>``) whose action is
        one of ``actions``, newest first. Reads the object's events only (``ix_audit_events_object``)."""
        await self.flush()
        escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

        def read(conn):
            q = (sa.select(A).where(A.c.project == project, A.c.object_type == object_type, A.c.action.in_(actions),
                                    sa.or_(A.c.object_id == name, A.c.object_id.like(escaped + "/%", escape="\\"),
                                           A.c.object_id.like(escaped + "@%", escape="\\")))
                 # "+ 0": sorting the object's few events beats walking the whole log in time order,
                 # which SQLite would otherwise pick to avoid the sort.
                 .order_by((A.c.time_ms + 0).desc(), A.c.event_id).limit(limit))
            out = []
            for r in conn.execute(q):
                obj = r.object_id or ""
                # LIKE ignores case on SQLite: keep this object's events only.
                if obj == name or obj.startswith((name + "/", name + "@")):
                    out.append({str(k): v for k, v in r._asdict().items() if v is not None})
            return out

        return await self.db.read(read)
