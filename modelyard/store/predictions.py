"""Prediction logs and labels: narrow rows in one table per UTC day, and per-bucket summaries.

Ingestion is the hot path (tens of thousands of rows a second from every model server): rows go
in with one raw ``executemany`` per day partition (``COPY`` on PostgreSQL), and the same
transaction bumps the row count of each (deployment, bucket) they fall in. Summaries are built
later, off the request path, by :meth:`PredictionStore.summarise`: a bucket whose counts moved
since its summary was made is summarised again from its rows (late rows and late labels
included); every other bucket is read as stored.

A partition is a table ``prediction_log_YYYYMMDD`` with the rows of that day, indexed by
(project, deployment, time) for windows and by (project, request id) for labels. A query touches
only the days of its window, and retention drops whole tables.
"""
from __future__ import annotations

import datetime as dt
import threading
from typing import Callable

import orjson
import sqlalchemy as sa

from modelyard.store._common import now_ms
from modelyard.store.db import Database
from modelyard.store.schema import prediction_labels as L
from modelyard.store.schema import prediction_partitions as P
from modelyard.store.schema import window_buckets as W

__all__ = ["PredictionStore", "partition_table", "day_of"]

_DAY_MS = 86_400_000
_CHUNK = 500


def day_of(ts_ms: int) -> int:
    """The partition key of a timestamp: its UTC date as YYYYMMDD."""
    d = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.timezone.utc)
    return d.year * 10000 + d.month * 100 + d.day


def _day_start_ms(day: int) -> int:
    d = dt.datetime(day // 10000, day // 100 % 100, day % 100, tzinfo=dt.timezone.utc)
    return int(d.timestamp() * 1000)


def partition_table(day: int) -> sa.Table:
    name = f"prediction_log_{day}"
    return sa.Table(
        name, sa.MetaData(),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("deployment", sa.String(256), nullable=False),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("request_id", sa.String(256), nullable=False),
        sa.Column("model_name", sa.String(256)),
        sa.Column("model_version", sa.String(64)),
        sa.Column("latency_ms", sa.Float(53)),
        sa.Column("shadow", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("outputs", sa.Text),
        sa.Index(f"ix_{name}_window", "project", "deployment", "ts_ms"),
        sa.Index(f"ix_{name}_request", "project", "request_id"),
    )


_COLUMNS = ("project, deployment, ts_ms, request_id, model_name, model_version, latency_ms, shadow, error, "
            "inputs, outputs")
_INSERT = "INSERT INTO {table} (" + _COLUMNS + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# PostgreSQL takes a partition's rows through COPY: two and a half times executemany's rows a second.
_COPY = "COPY {table} (" + _COLUMNS + ") FROM STDIN"


class PredictionStore:
    def __init__(self, db: Database):
        self.db = db
        self._known_days: set[int] = set()
        self._lock = threading.Lock()

    # -- ingestion -----------------------------------------------------------------------------------
    async def ensure_partitions(self, days: set[int]) -> None:
        missing = days - self._known_days
        if not missing:
            return

        def create(conn):
            for day in sorted(missing):
                partition_table(day).create(conn, checkfirst=True)
                conn.execute(self.db.upsert(P, ["day"], {"day": day, "table_name": f"prediction_log_{day}",
                                                          "created_ms": now_ms()}))

        try:
            await self.db.write(create)
        except sa.exc.SQLAlchemyError:
            # Another server process made the same table at the same moment (PostgreSQL); it exists now.
            await self.db.write(create)
        with self._lock:
            self._known_days |= missing

    async def log(self, project: str, rows: list[tuple], bucket_ms: int) -> int:
        """Store rows ``(project, deployment, ts_ms, request_id, model_name, model_version, latency_ms,
        shadow, error, inputs_json, outputs_json)``, all committed together or none."""
        by_day: dict[int, list[tuple]] = {}
        counts: dict[tuple[str, int], int] = {}
        bucket = bucket_ms
        day_index: dict[int, int] = {}
        for r in rows:
            ts = r[2]
            di = ts // _DAY_MS
            day = day_index.get(di)
            if day is None:
                day = day_index[di] = day_of(ts)
            part = by_day.get(day)
            if part is None:
                part = by_day[day] = []
            part.append(r)
            if not r[7]:  # shadow rows are kept but not monitored
                key = (r[1], ts - ts % bucket)
                counts[key] = counts.get(key, 0) + 1
        await self.ensure_partitions(set(by_day))
        bump = self._bump_sql("rows_seen")

        def write(conn):
            for day, part in by_day.items():
                table = f"prediction_log_{day}"
                if self.db.is_sqlite:
                    conn.exec_driver_sql(self.db.sql(_INSERT.format(table=table)), part)
                    continue
                with conn.connection.driver_connection.cursor() as cur, cur.copy(_COPY.format(table=table)) as copy:
                    for row in part:
                        copy.write_row(row)
            if counts:
                conn.exec_driver_sql(bump, [(project, d, b, n) for (d, b), n in counts.items()])
            return len(rows)

        return await self.db.write(write)

    def _bump_sql(self, column: str) -> str:
        return self.db.sql(
            f"INSERT INTO window_buckets (project, deployment, bucket_ms, {column}) VALUES (?, ?, ?, ?) "
            f"ON CONFLICT (project, deployment, bucket_ms) DO UPDATE SET {column} = window_buckets.{column} + "
            f"excluded.{column}")

    async def label(self, project: str, labels: list[tuple[str, str]], bucket_ms: int) -> int:
        """Store labels ``(request_id, label_json)`` and mark the buckets of their predictions for a
        new summary. Returns how many labels matched a logged prediction."""
        received = now_ms()
        days = await self.days()
        bump = self._bump_sql("labels_seen")

        def write(conn):
            conn.execute(self.db.upsert(L, ["project", "request_id"], None, update=["label", "received_ms"]),
                         [{"project": project, "request_id": rid, "label": lab, "received_ms": received}
                          for rid, lab in labels])
            pending = {rid for rid, _ in labels}
            counts: dict[tuple[str, int], int] = {}
            matched = set()
            for day in sorted(days, reverse=True):  # labels mostly follow recent predictions
                if not pending:
                    break
                ids = list(pending)
                for i in range(0, len(ids), _CHUNK):
                    chunk = ids[i:i + _CHUNK]
                    marks = ", ".join("?" * len(chunk))
                    sql = self.db.sql(f"SELECT request_id, deployment, ts_ms FROM prediction_log_{day} "
                                      f"WHERE project = ? AND request_id IN ({marks}) AND NOT shadow")
                    for rid, dep, ts in conn.exec_driver_sql(sql, (project, *chunk)):
                        matched.add(rid)
                        key = (dep, ts - ts % bucket_ms)
                        counts[key] = counts.get(key, 0) + 1
                pending -= matched
            if counts:
                conn.exec_driver_sql(bump, [(project, d, b, n) for (d, b), n in counts.items()])
            return len(matched)

        return await self.db.write(write)

    async def days(self) -> list[int]:
        def read(conn):
            return [d for (d,) in conn.execute(sa.select(P.c.day).order_by(P.c.day))]

        days = await self.db.read(read)
        with self._lock:
            self._known_days |= set(days)
        return days

    # -- reading -------------------------------------------------------------------------------------
    def _days_between(self, days: list[int], start_ms: int, end_ms: int) -> list[int]:
        first, last = day_of(start_ms), day_of(max(end_ms - 1, start_ms))
        return [d for d in days if first <= d <= last]

    async def search(self, project: str, deployment: str, start_ms: int, end_ms: int, limit: int) -> list[dict]:
        """The newest rows of a deployment in [start, end), with their labels (bounded by ``limit``)."""
        days = self._days_between(await self.days(), start_ms, end_ms)

        def read(conn):
            out = []
            for day in sorted(days, reverse=True):
                sql = self.db.sql(
                    f"SELECT p.request_id, p.ts_ms, p.model_name, p.model_version, p.latency_ms, p.shadow, p.error, "
                    f"p.inputs, p.outputs, l.label FROM prediction_log_{day} p LEFT JOIN prediction_labels l "
                    f"ON l.project = p.project AND l.request_id = p.request_id WHERE p.project = ? AND "
                    f"p.deployment = ? AND p.ts_ms >= ? AND p.ts_ms < ? ORDER BY p.ts_ms DESC LIMIT ?")
                for rid, ts, mn, mv, lat, shadow, err, inp, outp, lab in conn.exec_driver_sql(
                        sql, (project, deployment, start_ms, end_ms, limit - len(out))):
                    item = {"request_id": rid, "timestamp_ms": ts, "deployment": deployment, "model_name": mn,
                            "model_version": mv, "latency_ms": lat, "shadow": bool(shadow),
                            "inputs": orjson.loads(inp), "outputs": orjson.loads(outp) if outp else None}
                    if err:
                        item["error"] = err
                    if lab is not None:
                        item["label"] = orjson.loads(lab)
                    out.append(item)
                if len(out) >= limit:
                    break
            return out

        return await self.db.read(read)

    async def summaries(self, project: str, deployment: str, start_ms: int, end_ms: int, bucket_ms: int,
                        summarise: Callable[[list[tuple]], bytes], limit: int | None = None) -> list[bytes]:
        """The stored summaries of every bucket of [start, end), first re-summarising the buckets
        whose rows or labels changed. ``summarise`` turns a bucket's rows into a summary blob.
        With ``limit``, at most that many buckets are summarised (the scheduler's warm-up)."""

        def read_state(conn):
            return conn.execute(sa.select(W.c.bucket_ms, W.c.rows_seen, W.c.labels_seen, W.c.rows_done,
                                          W.c.labels_done, W.c.summary).where(
                W.c.project == project, W.c.deployment == deployment, W.c.bucket_ms >= start_ms,
                W.c.bucket_ms < end_ms).order_by(W.c.bucket_ms)).all()

        state = await self.db.read(read_state)
        stale = [r for r in state if r.rows_seen != r.rows_done or r.labels_seen != r.labels_done or r.summary is None]
        if limit is not None:
            stale = stale[:limit]
        blobs = {r.bucket_ms: r.summary for r in state if r not in stale}
        if stale:
            days = await self.days()
            fresh = await self.db.read(self._summarise_buckets, project, deployment, stale, days, bucket_ms, summarise)

            def save(conn):
                for bucket, rows_seen, labels_seen, blob in fresh:
                    # Only what the counts said when reading: rows that came in meanwhile leave the
                    # bucket stale, so the next evaluation summarises it again.
                    conn.execute(W.update().where(W.c.project == project, W.c.deployment == deployment,
                                                  W.c.bucket_ms == bucket).values(
                        rows_done=rows_seen, labels_done=labels_seen, summary=blob, updated_ms=now_ms()))

            await self.db.write(save)
            blobs.update({b: blob for b, _, _, blob in fresh})
        return [blobs[b] for b in sorted(blobs) if blobs[b] is not None]

    def _summarise_buckets(self, conn, project, deployment, stale, days, bucket_ms, summarise):
        out = []
        for r in stale:
            start, end = r.bucket_ms, r.bucket_ms + bucket_ms
            rows: list[tuple] = []
            for day in self._days_between(days, start, end):
                sql = self.db.sql(
                    f"SELECT p.inputs, p.outputs, p.latency_ms, p.error, p.model_version, l.label "
                    f"FROM prediction_log_{day} p LEFT JOIN prediction_labels l ON l.project = p.project AND "
                    f"l.request_id = p.request_id WHERE p.project = ? AND p.deployment = ? AND p.ts_ms >= ? "
                    f"AND p.ts_ms < ? AND NOT p.shadow")
                rows.extend(conn.exec_driver_sql(sql, (project, deployment, start, end)).fetchall())
            out.append((r.bucket_ms, r.rows_seen, r.labels_seen, summarise(rows)))
        return out

    async def versions_served(self, project: str, deployment: str, limit_days: int = 30) -> list[tuple[str, str, int]]:
        """(model_name, model_version, last time served) for a deployment, newest first."""
        days = await self.days()

        def read(conn):
            seen: dict[tuple[str, str], int] = {}
            for day in sorted(days, reverse=True)[:limit_days]:
                sql = self.db.sql(f"SELECT model_name, model_version, MAX(ts_ms) FROM prediction_log_{day} "
                                  f"WHERE project = ? AND deployment = ? AND NOT shadow GROUP BY model_name, model_version")
                for mn, mv, ts in conn.exec_driver_sql(sql, (project, deployment)):
                    key = (mn, mv)
                    seen[key] = max(seen.get(key, 0), ts)
            return sorted(((mn, mv, ts) for (mn, mv), ts in seen.items()), key=lambda x: -x[2])

        return await self.db.read(read)

    async def deployments(self, project: str) -> list[str]:
        def read(conn):
            return [d for (d,) in conn.execute(sa.select(W.c.deployment).where(W.c.project == project).distinct())]

        return await self.db.read(read)

    # -- retention -----------------------------------------------------------------------------------
    async def drop_before(self, cutoff_ms: int) -> list[int]:
        """Drop the day partitions entirely before ``cutoff_ms``, and the labels and buckets as old."""
        days = await self.days()
        old = [d for d in days if _day_start_ms(d) + _DAY_MS <= cutoff_ms]

        def write(conn):
            for day in old:
                partition_table(day).drop(conn, checkfirst=True)
                conn.execute(P.delete().where(P.c.day == day))
            conn.execute(W.delete().where(W.c.bucket_ms < cutoff_ms))
            conn.execute(L.delete().where(L.c.received_ms < cutoff_ms))

        await self.db.write(write)
        with self._lock:
            self._known_days -= set(old)
        return old

