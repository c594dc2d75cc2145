"""Run search as SQL: MLflow's filters and orderings over runs, params, tags and latest metrics.

The parser (:mod:`modelyard.store.search`) hands over comparisons and order terms; :func:`page`
returns one page of ``runs`` rows in MLflow's order: the order terms (for a metric: its values,
then runs where it is NaN, then runs without it; for a param or tag: its values, then runs without
it; in either direction), then ``start_time`` descending, then ``run_uuid``.

Ordered first by a metric, param or tag, a page is not found by joining every run of the
experiment to its value and sorting them all (a few hundred milliseconds at 100,000 runs). The
order is read in segments, each only if the ones before it ran out before the page filled, and
counted (to shift the offset) only if the page starts past its end:

1. runs with a value, walked in value order through the ``(key, value)`` indexes of migration
   0009. Runs with equal values are ordered by the other terms, which no index holds, so the walk
   only finds the value at the page's last row; the runs before that value are few (at most the
   offset and the page) and sorted as they are, and the runs with that value are read as a group
   of their own: through the index when it is small (a metric, where values rarely repeat), or by
   walking the experiment's runs in start_time order when it is large (a param with three
   values, where sorting a third of the experiment is what we set out to avoid);
2. for a metric, runs where it is NaN;
3. runs without the key.

Segments pay off on the first pages (up to ``_SPLIT_UNTIL`` rows into the order) of searches that
match many runs; a search that also filters on other keys and keeps few runs is one query (the
filter first, then those runs sorted), as is everything else: no order, an attribute first, a
page deep into the order, a param or tag on PostgreSQL that has a value too long for its index.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression

from modelyard.store import search
from modelyard.store._filters import numeric_op, string_op
from modelyard.store.schema import datasets, input_tags, latest_metrics, params, run_inputs, runs, tags

__all__ = ["page"]

_ATTR_COLUMNS = {"run_id": runs.c.run_uuid, "run_name": runs.c.name}
_KEYED = {"metric": latest_metrics, "param": params, "tag": tags}
_JOINABLE = {"metric": (latest_metrics, None), "param": (params, ("=", "LIKE", "ILIKE")),
             "tag": (tags, ("=", "LIKE", "ILIKE"))}

# Segments pay off for the first pages of many runs. Past this many rows into the order, reading
# the rows before the page (each segment walks them) costs more than sorting every run once.
_SPLIT_UNTIL = 2000
# Runs a search must match for its pages to be read in segments (when it filters on other keys
# too: a filter that leaves a few runs is best applied first, then those runs sorted), and, on
# SQLite, for the value index to be walked rather than the experiment's runs (see _KeyOrder.walk).
_MANY = 2000
# A group of equal values with at least this many index entries is read by walking the
# experiment's runs in start_time order rather than by sorting the group.
_DENSE = 1000
# PostgreSQL indexes param and tag values of up to this many characters (a btree entry must stay
# under about 2.7 kB): the bound in migration 0009's partial indexes, written out as a literal so
# the planner can match the index's predicate.
_PG_INDEXED = sa.literal_column("256")


def page(conn: sa.Connection, eids: list[int], stages: tuple[str, ...], comparisons: list[search.Comparison],
         orders: list[search.OrderBy], offset: int, limit: int) -> list:
    """Up to ``limit`` rows of ``runs`` from ``offset``, in the search's order. (On PostgreSQL the
    read engine's connections plan each statement for its values and never JIT-compile: store/db.py
    says why.)"""
    postgresql = conn.dialect.name == "postgresql"
    first = orders[0] if orders else None
    # Filtered on its own key, a run left has a value, and the single query orders by that value
    # alone: PostgreSQL walks the value index for it by itself, without the segments' round trips.
    filtered_on_key = first is not None and any(
        (c.kind, c.key) == (first.kind, first.key) and _joinable(c) for c in comparisons)
    if (first is not None and first.kind in _KEYED and offset + limit <= _SPLIT_UNTIL
            and not (postgresql and filtered_on_key) and not _too_long_to_index(conn, first)):
        order = _KeyOrder(conn, eids, stages, comparisons, orders)
        if order.many or not order.others:
            return order.page(offset, limit)
    q = sa.select(runs).where(runs.c.experiment_id.in_(eids), runs.c.lifecycle_stage.in_(stages))
    joined: dict[tuple[str, str], Any] = {}
    for i, c in enumerate(comparisons):
        q = _filter(q, c, i, joined, postgresql)
    order_cols = []
    for i, o in enumerate(orders):
        q, cols = _order(q, o, i, joined)
        order_cols.extend(cols)
    return conn.execute(q.order_by(*order_cols, *_tie_breakers(orders)).limit(limit).offset(offset)).all()


class _KeyOrder:
    """A search ordered first by a metric, param or tag, read in the segments the module describes."""

    def __init__(self, conn: sa.Connection, eids: list[int], stages: tuple[str, ...],
                 comparisons: list[search.Comparison], orders: list[search.OrderBy]):
        self.conn, self.eids, self.stages = conn, eids, stages
        self.sqlite = conn.dialect.name == "sqlite"
        self.first, self.rest = orders[0], orders[1:]
        self.ascending = self.first.ascending
        self.table = _KEYED[self.first.kind]
        self.tie_breakers = _tie_breakers(orders)
        # Comparisons on the key that a run passes only with a value narrow the walk itself; the
        # others are filters as usual (in every segment).
        key = (self.first.kind, self.first.key)
        self.on_key = [c for c in comparisons if (c.kind, c.key) == key and _joinable(c)]
        self.others = [c for c in comparisons if not ((c.kind, c.key) == key and _joinable(c))]
        self.walk = False  # until we know (_runs reads it)
        self.many = bool(self.others or self.sqlite) and _at_least(
            conn, self._runs(drive="runs").with_only_columns(runs.c.run_uuid), _MANY)
        # SQLite plans without statistics of the experiment's size (and with only averages after
        # ANALYZE), so it is told: many runs are paged by walking the value index, a few by
        # reading them, which costs less than walking the values of every experiment sharing the
        # key. PostgreSQL's planner knows the sizes and chooses by itself.
        self.walk = self.sqlite and self.many

    def page(self, offset: int, limit: int) -> list:
        segments = [self._valued]
        if not self.on_key:  # else every run left has a value
            if self.first.kind == "metric":
                segments.append(self._nan)
            segments.append(self._missing)
        out: list = []
        for read in segments:
            rows, count = read(offset, limit - len(out))
            out += rows
            if len(out) >= limit:
                break
            if rows:  # the segment ended within the page: the next one starts at its beginning
                offset = 0
            elif offset:  # the page starts past this segment's end
                offset -= count()
        return out

    # -- the segments: each returns (rows from offset, the segment's size as a function) ----------
    def _valued(self, offset: int, limit: int):
        k = self.table.alias("sort_key")
        value = k.c.value
        by_value = value.asc() if self.ascending else value.desc()
        q = self._key_join(self._runs(drive="key"), k, self._with_value(k))
        count = lambda: self._count(q)  # noqa: E731
        end = self.conn.execute(
            q.with_only_columns(value).order_by(by_value).limit(1).offset(offset + limit - 1)).first()
        if end is None:  # the segment ends before the page does
            return self._read(q, [by_value], offset, limit), count
        before = q.where(value < end.value if self.ascending else value > end.value)
        rows = self._read(before, [by_value], offset, limit)
        n_before = offset + len(rows) if rows or not offset else self._count(before)
        return rows + self._group(end.value, max(0, offset - n_before), limit - len(rows)), count

    def _group(self, value, offset: int, limit: int) -> list:
        """The runs whose value is ``value``, ordered by the other terms."""
        t = self.table
        sort = bool(self.rest)  # other order terms need every run of the group anyway
        if not sort and (self.walk or not self.sqlite):  # (few runs on SQLite: walk them)
            sort = not _at_least(self.conn, sa.select(t.c.run_uuid).where(
                t.c.key == self.first.key, *self._with_value(t), t.c.value == value), _DENSE)
        if sort:
            # Few runs with the value (or other order terms): sort them.
            k = t.alias("sort_key")
            q = self._key_join(self._runs(drive="key"), k, [*self._with_value(k), k.c.value == value])
        else:
            # Many: walk the experiment's runs from the newest and keep those with the value. The
            # value is a scalar subquery, not EXISTS: PostgreSQL would turn EXISTS into a join and,
            # misjudging how many rows one (key, value) has, read the group by the index and sort it.
            k = t.alias("with_value")
            q = self._runs(drive="runs").where(sa.select(k.c.value).where(
                k.c.run_uuid == runs.c.run_uuid, k.c.key == self.first.key, *self._with_value(k)
            ).scalar_subquery() == value)
        return self._read(q, [], offset, limit)

    def _nan(self, offset: int, limit: int):
        k = self.table.alias("sort_key")
        q = self._key_join(self._runs(drive="key"), k, [k.c.is_nan == sa.true()])
        return self._read(q, [], offset, limit), lambda: self._count(q)

    def _missing(self, offset: int, limit: int):
        t = self.table.alias("present")
        q = self._runs(drive="runs").where(~sa.select(t.c.run_uuid).where(
            t.c.run_uuid == runs.c.run_uuid, t.c.key == self.first.key).exists())
        return self._read(q, [], offset, limit), lambda: self._count(q)

    # -- building blocks ---------------------------------------------------------------------------
    def _runs(self, drive: str):
        """The experiment's runs that pass the other filters. ``drive`` says which table the
        query should be read from on SQLite: "runs" (by experiment, in start_time order) or "key"
        (the value index), in which case the experiment's index is hidden from the planner."""
        hide = self.walk and drive == "key"
        experiment = _unindexed(runs.c.experiment_id) if hide else runs.c.experiment_id
        q = sa.select(runs).where(experiment.in_(self.eids), runs.c.lifecycle_stage.in_(self.stages))
        for i, c in enumerate(self.others):
            # Hidden too: with statistics (ANALYZE), SQLite would read a filter's (key, value) rows
            # first, a third of the experiment for params.model = 'tree', and sort them.
            q = _filter(q, c, i, {}, not self.sqlite, hide_index=hide)
        return q

    def _key_join(self, q, k, conditions: list):
        """``q`` joined to the key's rows ``k`` that meet ``conditions``."""
        key = k.c.key
        if self.sqlite and not self.walk:
            key = _unindexed(key)  # read from the runs: look the key up by run, not runs by value
        return q.join_from(runs, k, sa.and_(k.c.run_uuid == runs.c.run_uuid, key == self.first.key, *conditions))

    def _with_value(self, k) -> list:
        """What a row ``k`` of the key must be, besides of the key, to place its run in segment 1."""
        out = []
        if self.first.kind == "metric":
            out.append(k.c.is_nan == sa.false())
        elif not self.sqlite:
            out.append(sa.func.length(k.c.value) <= _PG_INDEXED)  # what the partial index holds
        return out + [_value_condition(k, c, not self.sqlite) for c in self.on_key]

    def _read(self, q, leading: list, offset: int, limit: int) -> list:
        """Rows of ``q`` ordered by ``leading``, then the other order terms and the tie-breakers."""
        joined: dict[tuple[str, str], Any] = {}
        cols = []
        for i, o in enumerate(self.rest, start=1):
            q, more = _order(q, o, i, joined)
            cols.extend(more)
        return self.conn.execute(q.order_by(*leading, *cols, *self.tie_breakers).limit(limit).offset(offset)).all()

    def _count(self, q) -> int:
        return self.conn.execute(q.with_only_columns(sa.func.count())).scalar_one()


def _too_long_to_index(conn: sa.Connection, o: search.OrderBy) -> bool:
    """On PostgreSQL, whether a value of this param or tag is too long for the value index
    (ix_params_key_long / ix_tags_key_long find one at once); such orders take the single query."""
    if o.kind == "metric" or conn.dialect.name != "postgresql":
        return False
    t = _KEYED[o.kind]
    # count(*), not LIMIT 1: PostgreSQL guesses a third of the rows match the length test (it keeps
    # no statistics for it) and would scan the table for the first one rather than use the index.
    return conn.execute(sa.select(sa.func.count()).where(
        t.c.key == o.key, sa.func.length(t.c.value) > _PG_INDEXED)).scalar_one() > 0


def _at_least(conn: sa.Connection, q, n: int) -> bool:
    """Whether ``q`` has ``n`` rows, reading no more than that."""
    return conn.execute(sa.select(sa.func.count()).select_from(q.limit(n).subquery())).scalar_one() >= n


def _unindexed(col):
    """``+col``: the same value, but SQLite will not use an index for a term on it (SQLite's
    documented way to steer its planner away from an index)."""
    return UnaryExpression(col, operator=operators.custom_op("+"), type_=col.type)


def _tie_breakers(orders: list[search.OrderBy]) -> list:
    cols = []
    if not any(o.kind == "attribute" and o.key == "start_time" for o in orders):
        cols.append(runs.c.start_time.desc())
    cols.append(runs.c.run_uuid.asc())
    return cols


def _col(key: str):
    return _ATTR_COLUMNS[key] if key in _ATTR_COLUMNS else runs.c[key]


def _kv_condition(table, c: search.Comparison):
    sub = sa.select(table.c.run_uuid).where(table.c.run_uuid == runs.c.run_uuid, table.c.key == c.key)
    if c.op == "IS NULL":
        return ~sub.exists()
    if c.op == "IS NOT NULL":
        return sub.exists()
    return sub.where(string_op(table.c.value, c.op, c.value)).exists()


def _condition(c: search.Comparison):
    if c.kind == "metric":
        sub = sa.select(latest_metrics.c.run_uuid).where(
            latest_metrics.c.run_uuid == runs.c.run_uuid, latest_metrics.c.key == c.key,
            latest_metrics.c.is_nan == sa.false(), numeric_op(latest_metrics.c.value, c.op, c.value))
        return sub.exists()
    if c.kind == "param":
        return _kv_condition(params, c)
    if c.kind == "tag":
        return _kv_condition(tags, c)
    if c.kind == "dataset":
        if c.key == "context":
            sub = (sa.select(run_inputs.c.run_uuid)
                   .join(input_tags, input_tags.c.input_uuid == run_inputs.c.input_uuid)
                   .where(run_inputs.c.run_uuid == runs.c.run_uuid, input_tags.c.key == "mlflow.data.context",
                          string_op(input_tags.c.value, c.op, c.value)))
        else:
            sub = (sa.select(run_inputs.c.run_uuid)
                   .join(datasets, datasets.c.dataset_uuid == run_inputs.c.dataset_uuid)
                   .where(run_inputs.c.run_uuid == runs.c.run_uuid, string_op(datasets.c[c.key], c.op, c.value)))
        return sub.exists()
    col = _col(c.key)
    if c.key in ("start_time", "end_time"):
        return numeric_op(col, c.op, c.value)
    return string_op(col, c.op, c.value)


def _joinable(c: search.Comparison) -> bool:
    """Whether a run passes ``c`` only with a row for its key (and then with that row alone)."""
    table, ops = _JOINABLE.get(c.kind, (None, None))
    return table is not None and (ops is None or c.op in ops)


def _value_condition(t, c: search.Comparison, postgresql: bool, hide_index: bool = False):
    """``c`` on the row ``t`` of its key (``c`` joinable); ``hide_index`` as for :func:`_filter`."""
    def col(name):
        return _unindexed(t.c[name]) if hide_index else t.c[name]

    if c.kind == "metric":
        return sa.and_(col("is_nan") == sa.false(), numeric_op(col("value"), c.op, c.value))
    if postgresql and c.op == "=" and len(c.value) <= 256:
        # Says nothing new, but lets PostgreSQL use the partial value index (values up to 256).
        return sa.and_(t.c.value == c.value, sa.func.length(t.c.value) <= _PG_INDEXED)
    return string_op(col("value"), c.op, c.value)


def _filter(q, c: search.Comparison, i: int, joined: dict, postgresql: bool, hide_index: bool = False):
    """A comparison that a run either passes with its one row for the key or fails becomes an
    inner join (which the planner can hash over many runs); the others stay EXISTS clauses.
    ``joined`` remembers the joins, so an ORDER BY on the same metric reuses its row.
    ``hide_index``: SQLite is to look the row up by run only, never find runs by value."""
    if not _joinable(c):
        return q.where(_condition(c))
    t = _JOINABLE[c.kind][0].alias(f"filter_{c.kind}{i}")
    joined.setdefault((c.kind, c.key), t)
    key = _unindexed(t.c.key) if hide_index else t.c.key
    return q.join_from(runs, t, sa.and_(t.c.run_uuid == runs.c.run_uuid, key == c.key,
                                        _value_condition(t, c, postgresql, hide_index)))


def _order(q, o: search.OrderBy, i: int, joined: dict):
    """Join what an ORDER BY term needs; its columns put runs without a value last either way:
    for a metric, its values, then NaN, then no value, as MLflow orders them."""
    if o.kind == "attribute":
        col = _col(o.key)
        by = col.asc() if o.ascending else col.desc()
        # A column that cannot be NULL needs no NULLs-last term, which would keep SQLite from
        # walking ix_runs_experiment_start for an order by start_time.
        return q, [col.is_(None), by] if col.nullable else [by]
    if o.kind == "metric" and ("metric", o.key) in joined:
        # Filtered on the same metric: every run left has a (non-NaN) value for it.
        t = joined[("metric", o.key)]
        return q, [t.c.value.asc() if o.ascending else t.c.value.desc()]
    if o.kind == "metric":
        t = latest_metrics.alias(f"order_m{i}")
        q = q.outerjoin_from(runs, t, sa.and_(t.c.run_uuid == runs.c.run_uuid, t.c.key == o.key))
        rank = sa.case((t.c.is_nan == sa.true(), 1), (t.c.value.is_(None), 2), else_=0)
        return q, [rank, t.c.value.asc() if o.ascending else t.c.value.desc()]
    table = params if o.kind == "param" else tags
    t = table.alias(f"order_{o.kind}{i}")
    q = q.outerjoin_from(runs, t, sa.and_(t.c.run_uuid == runs.c.run_uuid, t.c.key == o.key))
    return q, [t.c.value.is_(None), t.c.value.asc() if o.ascending else t.c.value.desc()]
