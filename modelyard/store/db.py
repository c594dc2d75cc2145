"""The database handle: engines, reads in threads, writes funnelled and grouped.

SQLite (the default) allows many readers and one writer. Rather than let request threads fight
over the write lock ("database is locked"), every write is a function queued to one writer thread,
which runs whatever has queued up inside one transaction and commits once: a group commit. If one
function raises, the group is rolled back and each of its functions runs again on its own, so one
bad request never takes its neighbours down with it (write functions are therefore plain functions
of their arguments and the connection, safe to run twice). The caller's future resolves after the
commit, so a 200 means committed.

PostgreSQL could take concurrent writers itself, but every commit waits for its WAL to reach the
disk; the same group writer (one connection per server process) shares that wait among all the
writes that queued up meanwhile. Several server processes each have their own writer, and
PostgreSQL's row locks (``SELECT ... FOR UPDATE`` in the stores) keep them apart.
"""
from __future__ import annotations

import asyncio
import queue
import threading
from pathlib import Path
from typing import Any, Callable

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite

__all__ = ["Database", "driver_rows"]

WriteFn = Callable[..., Any]
_MAX_GROUP = 512
# PostgreSQL writes wait on network round trips, not on a file lock: a few writers overlap them.
# Groups that deadlock on each other's row locks fail and rerun their writes one by one.
_PG_WRITERS = 4


class Database:
    """Owns the engines; ``read`` and ``write`` run a function of a connection off the event loop."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = _sqlite_engine(url, begin="BEGIN", pool_size=8)
            self.write_engine = _sqlite_engine(url, begin="BEGIN IMMEDIATE", pool_size=1, max_overflow=1)
            self._writer = _GroupWriter(self.write_engine)
        else:
            # Reads plan each statement for its values, without JIT, set when the connection opens
            # (no round trip per request). A search's best plan depends on its values (this
            # experiment is large, this group of equal values is large), and psycopg prepares any
            # statement run a few times, which PostgreSQL may then plan once for all values. JIT
            # compiles what the planner believes costly: walking an experiment's runs until a page
            # is full is estimated as costly as walking them all, and compiling that walk took 300 ms
            # of a 5 ms query.
            self.engine = sa.create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True, connect_args={
                "options": "-c plan_cache_mode=force_custom_plan -c jit=off"})
            # A connection per writer thread, one spare for write_sync (start-up, admin).
            self.write_engine = sa.create_engine(url, pool_size=_PG_WRITERS, max_overflow=1, pool_pre_ping=True)
            self._writer = _GroupWriter(self.write_engine, threads=_PG_WRITERS)
        self.insert = sqlite.insert if self.is_sqlite else postgresql.insert
        self._analyzing = threading.Lock()

    def start(self) -> None:
        self._writer.start()

    def close(self) -> None:
        self._writer.stop()
        self.engine.dispose()
        self.write_engine.dispose()

    async def read(self, fn: Callable[..., Any], *args) -> Any:
        return await anyio.to_thread.run_sync(self.read_sync, fn, *args)

    def read_sync(self, fn: Callable[..., Any], *args) -> Any:
        with self.engine.connect() as conn:
            return fn(conn, *args)

    async def write(self, fn: WriteFn, *args) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._writer.submit(fn, args, future, loop)
        return await future

    def write_sync(self, fn: WriteFn, *args) -> Any:
        """Run one write in its own transaction, bypassing the group writer (CLI, start-up)."""
        with self.write_engine.begin() as conn:
            return fn(conn, *args)

    def analyze_soon(self, tables: list[str]) -> None:
        """Refresh PostgreSQL's planner statistics for ``tables`` in the background.

        autovacuum analyses a table within a minute or so of heavy change; until then the planner
        believes a freshly filled experiment holds a handful of runs and picks nested loops that
        cost a search of 10,000 runs ten times too much. The stores call this after bursts of
        growth. SQLite's planner needs no statistics for these queries.
        """
        if self.is_sqlite or self._analyzing.locked():
            return

        def analyze():
            with self._analyzing:
                try:
                    with self.engine.connect() as conn:
                        conn.exec_driver_sql("ANALYZE " + ", ".join(tables))
                        conn.commit()
                except sa.exc.SQLAlchemyError:
                    pass  # only statistics: autovacuum will catch up

        threading.Thread(target=analyze, name="modelyard-analyze", daemon=True).start()

    def sql(self, text: str) -> str:
        """Raw SQL written with ``?`` placeholders, in this driver's parameter style.

        Used only on hot paths (metric logging), where building SQLAlchemy parameters for a
        thousand rows costs more than the insert itself.
        """
        return text if self.is_sqlite else text.replace("?", "%s")

    def upsert(self, table: sa.Table, index_elements: list[str], values, update: list[str] | None = None,
               where=None):
        """``INSERT ... ON CONFLICT`` in the dialect at hand; ``update=None`` means do nothing."""
        stmt = self.insert(table).values(values) if isinstance(values, dict) else self.insert(table)
        if update is None:
            return stmt.on_conflict_do_nothing(index_elements=index_elements)
        return stmt.on_conflict_do_update(
            index_elements=index_elements, set_={c: stmt.excluded[c] for c in update}, where=where
        )


def driver_rows(conn: sa.Connection, sql: str, params) -> list[tuple]:
    """The rows of raw ``sql`` as the driver's own tuples, read in the connection's transaction.

    For statements that return tens of thousands of rows (a page of metric history): SQLAlchemy's
    row objects cost four times what psycopg spends reading the rows. The transaction must have
    begun (a statement through ``conn`` before this one)."""
    cur = conn.connection.cursor()
    try:
        cur.execute(sql, params)
        return cur.fetchall()
    finally:
        cur.close()


def _sqlite_engine(url: str, begin: str, pool_size: int, max_overflow: int = 0) -> sa.Engine:
    engine = sa.create_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, connect_args={"check_same_thread": False, "timeout": 60}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy, not pysqlite, decide where transactions begin (needed for savepoints).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives the process being killed; only power loss can
        # lose the last transactions. Group commit makes FULL affordable too, but not needed here.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA cache_size=-65536")
        cur.execute("PRAGMA temp_store=MEMORY")
        # MLflow: LIKE is case-sensitive, ILIKE is not (SQLAlchemy spells ILIKE as lower() LIKE lower()).
        cur.execute("PRAGMA case_sensitive_like=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql(begin)

    return engine


class _GroupWriter:
    """Writer threads, a connection each, taking queued write functions in grouped transactions."""

    def __init__(self, engine: sa.Engine, threads: int = 1):
        self._engine = engine
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, name=f"modelyard-writer-{i}", daemon=True)
                         for i in range(threads)]
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def stop(self) -> None:
        if self._started:
            for _ in self._threads:
                self._queue.put(None)  # one stop sign per thread
            for thread in self._threads:
                thread.join(timeout=30)

    def submit(self, fn: WriteFn, args: tuple, future: asyncio.Future, loop: asyncio.AbstractEventLoop) -> None:
        self._queue.put((fn, args, future, loop))

    def _loop(self) -> None:
        conn: sa.Connection | None = None
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                group = [job]
                stop = False
                while len(group) < _MAX_GROUP:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    group.append(nxt)
                try:
                    conn = conn or self._engine.connect()
                except Exception as exc:  # noqa: BLE001 - the database is down: these writes fail
                    results = [(False, exc)] * len(group)
                else:
                    results = self._run_group(conn, group)
                for (_, _, future, loop), result in zip(group, results):
                    loop.call_soon_threadsafe(_settle, future, result)
                if conn is not None and any(not ok and getattr(value, "connection_invalidated", False)
                                            for ok, value in results):
                    # The database went away (a PostgreSQL restart): the next group gets a new connection.
                    conn.close()
                    conn = None
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _run_group(self, conn: sa.Connection, group: list) -> list[tuple[bool, Any]]:
        """Optimistically, the whole group in one transaction: one commit, no savepoints. If any
        write raises (most often a client's mistake) the group is rolled back and each write runs
        again in a transaction of its own, so a bad request only ever fails itself."""
        try:
            with conn.begin():
                values = [fn(conn, *args) for fn, args, _, _ in group]
            return [(True, value) for value in values]
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            if len(group) == 1 and not _lost_to_another_writer(exc):
                return [(False, exc)]
        return [self._run_alone(conn, fn, args) for fn, args, _, _ in group]

    @staticmethod
    def _run_alone(conn: sa.Connection, fn: WriteFn, args: tuple) -> tuple[bool, Any]:
        attempt = 1
        while True:
            try:
                with conn.begin():
                    return True, fn(conn, *args)
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                if attempt == _ATTEMPTS or not _lost_to_another_writer(exc):
                    return False, exc
                attempt += 1


# PostgreSQL's writer threads take row locks in whatever order their groups' requests came, so two
# transactions can deadlock, and PostgreSQL then aborts one of them. Its writes did nothing wrong:
# they run again (as a group's writes do after any failure), a few times before the error stands.
_ATTEMPTS = 3
_RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure


def _lost_to_another_writer(exc: Exception) -> bool:
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in _RETRYABLE_SQLSTATES


def _settle(future: asyncio.Future, result: tuple[bool, Any]) -> None:
    if future.cancelled():
        return
    ok, value = result
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
