"""The experiments list and an experiment's runs table (columns, search, sorting, paging, CSV).

The runs table is one page of ``RunStore.search`` (the store behind ``runs/search``): a page costs
the same at offset 0 and at offset 99,950, and the columns offered are the keys of the runs on the
page, so nothing scans the experiment's 100,000 runs to draw it.
"""
from __future__ import annotations

import csv
import io
import re
from typing import AsyncIterator

from starlette.responses import Response, StreamingResponse

from modelyard.errors import MlflowError
from modelyard.store.search import encode_page_token
from modelyard.ui.render import Page, order_key

__all__ = ["experiments_page", "experiment_page", "runs_csv", "column_value", "Column"]

PAGE_SIZES = (25, 50, 100, 250, 500)
DEFAULT_COLUMNS = 8  # metrics and params each, when the reader has not chosen
CSV_PAGE = 1000
CSV_MAX_ROWS = 200_000
_GRAMMAR = re.compile(r"(=|<|>|\bLIKE\b|\bILIKE\b|\bIS\b|\bIN\b)", re.IGNORECASE)
# Tags the client sets on every run; shown as columns of their own, not offered as tag columns.
SYSTEM_TAGS = ("mlflow.runName", "mlflow.user", "mlflow.source.name", "mlflow.source.type",
               "mlflow.source.git.commit", "mlflow.log-model.history", "mlflow.note.content", "mlflow.parentRunId")
_VIEWS = {"active": "ACTIVE_ONLY", "deleted": "DELETED_ONLY", "all": "ALL"}


def name_filter(q: str) -> str | None:
    """A search box: MLflow's grammar when it reads as such, else a case-blind name match."""
    if not q:
        return None
    if _GRAMMAR.search(q):
        return q
    quote = '"' if "'" in q else "'"
    return f"name ILIKE {quote}%{q.replace(quote, '')}%{quote}"


async def experiments_page(page: Page) -> Response:
    q = page.param("q")
    view = page.param("view", "active")
    offset = page.int_param("offset", 0, 0, 10**12)
    size = 50
    order = page.param("order", "last_update_time DESC")
    if order not in ("name ASC", "name DESC", "creation_time DESC", "creation_time ASC", "last_update_time DESC"):
        order = "last_update_time DESC"
    error = None
    try:
        found, token = await page.stores.experiments.search(
            page.project, _VIEWS.get(view, "ACTIVE_ONLY"), size, name_filter(q), [order],
            encode_page_token(offset) if offset else None)
    except MlflowError as exc:
        found, token, error = [], None, exc.message
    for e in found:
        tags = {t["key"]: t["value"] for t in e.get("tags", [])}
        e["description"] = (tags.get("mlflow.note.content") or "").strip().splitlines()[:1]
        e["user_tags"] = {k: v for k, v in tags.items() if not k.startswith("mlflow.")}
    return await page.render("experiments.html", http_status=400 if error else 200, experiments=found, q=q, view=view,
                             order=order, offset=offset, size=size, has_next=token is not None, error=error)


class Column:
    """A chosen column of the runs table: ``metrics.rmse``, ``params.lr`` or ``tags.team``."""

    KINDS = {"metrics": "metric", "params": "param", "tags": "tag"}

    def __init__(self, spec: str):
        kind, _, key = spec.partition(".")
        if kind not in self.KINDS or not key:
            raise MlflowError.invalid(f"A column is metrics.<key>, params.<key> or tags.<key>; got {spec!r}.")
        self.spec, self.kind, self.key = spec, kind, key

    @property
    def order(self) -> str:
        return order_key(self.kind, self.key)

    def __eq__(self, other) -> bool:
        return isinstance(other, Column) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)


def column_value(run: dict, column: Column):
    data = run.get("data", {})
    for item in data.get(column.kind, []):
        if item["key"] == column.key:
            return item["value"]
    return None


def _keys(runs: list[dict]) -> dict[str, list[str]]:
    keys: dict[str, set] = {"metrics": set(), "params": set(), "tags": set()}
    for run in runs:
        data = run.get("data", {})
        for kind in keys:
            keys[kind].update(i["key"] for i in data.get(kind, []))
    keys["tags"] -= set(SYSTEM_TAGS)
    return {k: sorted(v) for k, v in keys.items()}


def _columns(page: Page, keys: dict[str, list[str]]) -> tuple[list[Column], bool]:
    """The reader's columns (``c=metrics.rmse&c=params.lr``), or the first keys of each kind."""
    chosen = [c for c in page.request.query_params.getlist("c") if c and c != "-"]
    explicit = "c" in page.request.query_params
    if explicit:
        return list(dict.fromkeys(Column(c) for c in chosen)), True
    return ([Column(f"metrics.{k}") for k in keys["metrics"][:DEFAULT_COLUMNS]]
            + [Column(f"params.{k}") for k in keys["params"][:DEFAULT_COLUMNS]]), False


def _run_row(run: dict) -> dict:
    info = run["info"]
    tags = {t["key"]: t["value"] for t in run.get("data", {}).get("tags", [])}
    end = info.get("end_time")
    return {
        "run_id": info["run_id"], "name": info.get("run_name") or info["run_id"][:8], "status": info["status"],
        "start_time": info.get("start_time"), "duration": (end - info["start_time"]) if end and info.get("start_time") else None,
        "user": info.get("user_id") or tags.get("mlflow.user", ""), "source": tags.get("mlflow.source.name", ""),
        "commit": tags.get("mlflow.source.git.commit", ""), "parent": tags.get("mlflow.parentRunId"),
        "lifecycle": info.get("lifecycle_stage"),
    }


def _search_args(page: Page) -> tuple[str | None, list[str], str]:
    filter_string = page.param("filter") or None
    order = page.param("order")
    view = _VIEWS.get(page.param("view", "active"), "ACTIVE_ONLY")
    return filter_string, [order] if order else [], view


async def experiment_page(page: Page) -> Response:
    experiment_id = page.request.path_params["experiment_id"]
    experiment = await page.stores.experiments.get(page.project, experiment_id)
    filter_string, order_by, view = _search_args(page)
    size = page.int_param("n", 50, 1, PAGE_SIZES[-1])
    offset = page.int_param("offset", 0, 0, 10**12)
    error = None
    try:
        runs, token = await page.stores.runs.search(
            page.project, [experiment["experiment_id"]], filter_string, view, size, order_by,
            encode_page_token(offset) if offset else None)
    except MlflowError as exc:
        runs, token, error = [], None, exc.message
    keys = _keys(runs)
    columns, explicit = _columns(page, keys)
    rows = []
    for run in runs:
        row = _run_row(run)
        row["values"] = [column_value(run, c) for c in columns]
        rows.append(row)
    offered = {kind: list(dict.fromkeys(names + [c.key for c in columns if c.kind == kind]))
               for kind, names in keys.items()}
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    current = order_by[0] if order_by else ""
    query = [(k, v) for k, v in page.request.query_params.multi_items() if k not in ("offset",)]
    return await page.render(
        "experiment.html", http_status=400 if error else 200, experiment=experiment,
        description=tags.get("mlflow.note.content"), rows=rows, columns=columns, explicit=explicit, offered=offered,
        filter=filter_string or "", order=current, view=page.param("view", "active"), size=size, sizes=PAGE_SIZES,
        offset=offset, has_next=token is not None, error=error, query=query,
        cols=([c.spec for c in columns] or ["-"]) if explicit else None,
        sort_links={c.spec: _sort_link(current, c.order) for c in columns},
        attr_sort={a: _sort_link(current, f"attributes.{a}") for a in ("run_name", "start_time", "status")})


def _sort_link(current: str, key: str) -> tuple[str, str]:
    """(the order to ask for when the header is clicked, the arrow to show now)."""
    if current.startswith(key + " ") or current == key:
        descending = current.upper().endswith("DESC")
        return (f"{key} ASC" if descending else f"{key} DESC"), ("▼" if descending else "▲")
    return f"{key} DESC", ""


async def runs_csv(page: Page) -> Response:
    """Every run the filter matches (up to 200,000), streamed page by page as CSV: the run's
    attributes, then the chosen columns, else every metric and param key of the first page."""
    experiment = await page.stores.experiments.get(page.project, page.request.path_params["experiment_id"])
    filter_string, order_by, view = _search_args(page)
    first, token = await page.stores.runs.search(page.project, [experiment["experiment_id"]], filter_string, view,
                                                  CSV_PAGE, order_by, None)
    keys = _keys(first)
    columns, explicit = _columns(page, keys)
    if not explicit:
        columns = ([Column(f"metrics.{k}") for k in keys["metrics"]] + [Column(f"params.{k}") for k in keys["params"]]
                   + [Column(f"tags.{k}") for k in keys["tags"]])
    stores, project, eid = page.stores, page.project, experiment["experiment_id"]

    async def rows() -> AsyncIterator[str]:
        buf = io.StringIO()
        out = csv.writer(buf)
        out.writerow(["run_id", "run_name", "status", "start_time", "end_time", "user", "source",
                      *[c.spec for c in columns]])
        batch, next_token, sent = first, token, 0
        while True:
            for run in batch:
                info = run["info"]
                r = _run_row(run)
                out.writerow([info["run_id"], r["name"], info["status"], info.get("start_time", ""),
                              info.get("end_time", ""), r["user"], r["source"],
                              *["" if (v := column_value(run, c)) is None else v for c in columns]])
            sent += len(batch)
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
            if next_token is None or sent >= CSV_MAX_ROWS:
                return
            batch, next_token = await stores.runs.search(project, [eid], filter_string, view, CSV_PAGE, order_by,
                                                          next_token)

    filename = re.sub(r"[^\w.-]+", "_", experiment["name"]) or "runs"
    return page.finish(StreamingResponse(rows(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{filename}-runs.csv"'}))
