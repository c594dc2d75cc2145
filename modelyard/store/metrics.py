"""Metric history: every value of one key of a run, paged; and downsampled views for charts."""
from __future__ import annotations

import math

import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.store import search
from modelyard.store.db import Database, driver_rows
from modelyard.store.runs import run_row, wire_metric_value
from modelyard.store.schema import metrics as M

__all__ = ["MetricStore"]

_COLS = (M.c.step, M.c.timestamp, M.c.value, M.c.is_nan)
_HISTORY_PAGE = (
    "SELECT step, timestamp, value, is_nan FROM metrics WHERE run_uuid = ? AND key = ? "
    "ORDER BY step, timestamp, value, is_nan LIMIT ? OFFSET ?"
)
# The next pages seek past the last row's key instead of skipping the rows before it.
_HISTORY_PAGE_AFTER = (
    "SELECT step, timestamp, value, is_nan FROM metrics WHERE run_uuid = ? AND key = ? "
    "AND (step, timestamp, value, is_nan) > (?, ?, ?, ?) "
    "ORDER BY step, timestamp, value, is_nan LIMIT ?"
)


class MetricStore:
    def __init__(self, db: Database):
        self.db = db

    async def history(self, project: str, run_id: str, key: str, max_results: int, page_token: str | None
                      ) -> tuple[list[dict], str | None]:
        offset, after = search.decode_keyed_page_token(page_token)
        if after is not None and len(after) != 4:
            raise MlflowError.invalid(f"Invalid page token: {page_token!r}")

        def read(conn):
            run_row(conn, run_id, project)
            # Raw SQL and the driver's rows on purpose: a page is 25,000 rows and SQLAlchemy's
            # row objects cost more than the query. Rows come back in primary-key order.
            if after is None:
                rows = driver_rows(conn, self.db.sql(_HISTORY_PAGE), (run_id, key, max_results + 1, offset))
            else:
                step, ts, value, nan = after
                rows = driver_rows(conn, self.db.sql(_HISTORY_PAGE_AFTER),
                                   (run_id, key, step, ts, value, bool(nan), max_results + 1))
            token = None
            if len(rows) > max_results:
                rows = rows[:max_results]
                s, ts, v, n = rows[-1]
                # JSON has no infinities: a page ending on one falls back to the plain offset.
                after_key = [s, ts, v, int(bool(n))] if math.isfinite(v) else None
                token = search.encode_page_token(offset + max_results, after_key)
            return [{"key": key, "value": wire_metric_value(v, n), "timestamp": ts, "step": s}
                    for s, ts, v, n in rows], token

        return await self.db.read(read)

    async def history_bulk(self, project: str, run_ids: list[str], key: str, max_results: int) -> list[dict]:
        """Every run's history of one key (the UI's ``get-history-bulk``), ``run_id`` on each item."""

        def read(conn):
            out = []
            for run_id in run_ids:
                run_row(conn, run_id, project)
                rows = conn.execute(
                    sa.select(*_COLS).where(M.c.run_uuid == run_id, M.c.key == key)
                    .order_by(M.c.step, M.c.timestamp, M.c.value).limit(max_results - len(out))).all()
                out.extend({"key": key, "value": wire_metric_value(v, n), "timestamp": ts, "step": s,
                            "run_id": run_id} for s, ts, v, n in rows)
                if len(out) >= max_results:
                    break
            return out

        return await self.db.read(read)

    async def history_bulk_interval(self, project: str, run_ids: list[str], key: str, start_step: int | None,
                                    end_step: int | None, max_results: int) -> list[dict]:
        """Up to ``max_results`` steps per run, spread evenly over the range, first and last kept."""

        def read(conn):
            for run_id in run_ids:
                run_row(conn, run_id, project)
            where = [M.c.run_uuid.in_(run_ids), M.c.key == key]
            if start_step is not None:
                where += [M.c.step >= start_step, M.c.step <= end_step]
            steps = [s for (s,) in conn.execute(sa.select(M.c.step).where(*where).distinct().order_by(M.c.step))]
            if len(steps) > max_results:
                n = len(steps)
                picked = sorted({steps[round(i * (n - 1) / (max_results - 1))] for i in range(max_results)}) \
                    if max_results > 1 else [steps[0]]
            else:
                picked = steps
            out = []
            for start in range(0, len(picked), 500):
                chunk = picked[start:start + 500]
                for run_id, s, ts, v, n in conn.execute(
                        sa.select(M.c.run_uuid, *_COLS).where(M.c.run_uuid.in_(run_ids), M.c.key == key,
                                                              M.c.step.in_(chunk))):
                    out.append({"key": key, "value": wire_metric_value(v, n), "timestamp": ts, "step": s,
                                "run_id": run_id})
            order = {r: i for i, r in enumerate(run_ids)}
            out.sort(key=lambda m: (order[m["run_id"]], m["step"], m["timestamp"]))
            return out

        if (start_step is None) != (end_step is None):
            raise MlflowError.invalid("If either start step or end step are specified, both must be specified.")
        if start_step is not None and start_step > end_step:
            raise MlflowError.invalid("end_step must be greater than start_step.")
        return await self.db.read(read)
