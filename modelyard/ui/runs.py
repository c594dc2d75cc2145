"""A run's page (overview, charts, artifacts with previews) and the compare view of 2 to 20 runs.

Charts are drawn in the browser from ``metrics/get-history-bulk-interval``, the endpoint MLflow's
own UI uses: the server sends at most 1,000 evenly spread steps per run whatever the history's
length, and the page script overlays runs, smooths and switches to a log scale without asking
again.
"""
from __future__ import annotations

import csv
import io
import json
import posixpath
from typing import Any

from starlette.responses import Response

from modelyard.artifacts import basename, clean_path, join
from modelyard.errors import MlflowError
from modelyard.server.api.artifacts import run_artifact_root
from modelyard.ui.render import Page

__all__ = ["run_page", "compare_page", "quoted", "read_head", "preview_of"]

PREVIEW_BYTES = 256 * 1024
TABLE_ROWS = 100
MAX_COMPARE = 20
MAX_CHARTS = 24
_IMAGES = {"png", "jpg", "jpeg", "gif", "webp", "bmp", "svg"}
_TABLES = {"csv": ",", "tsv": "\t"}
_TEXT = {"txt", "log", "err", "cfg", "conf", "ini", "properties", "toml", "yaml", "yml", "xml", "js", "py", "md",
         "rst", "sh", "sql", "html", "htm", "r", "scala", "java", "go", "rs", "c", "h", "cpp", "ts", "css", "ipynb",
         "requirements", "lock"}
_TEXT_NAMES = {"MLmodel", "MLproject", "Dockerfile", "LICENSE", "README", "conda.yaml", "python_env.yaml"}


def quoted(value: str) -> str:
    """A string literal of MLflow's filter grammar."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise MlflowError.invalid("Names with both kinds of quotes cannot be searched for.")


def _by_key(items: list[dict] | None) -> dict[str, Any]:
    return {i["key"]: i["value"] for i in items or []}


def _datasets(run: dict) -> list[dict]:
    out = []
    for item in run.get("inputs", {}).get("dataset_inputs", []):
        ds = dict(item["dataset"])
        tags = _by_key(item.get("tags"))
        ds["context"] = tags.get("mlflow.data.context", "")
        try:
            source = json.loads(ds.get("source") or "{}")
            ds["source_text"] = source.get("uri") or source.get("url") or source.get("path") or ds.get("source")
        except (ValueError, AttributeError):
            ds["source_text"] = ds.get("source")
        try:
            ds["columns"] = [f"{c.get('name')}: {c.get('type')}"
                             for c in json.loads(ds.get("schema") or "{}").get("mlflow_colspec", [])]
        except (ValueError, AttributeError):
            ds["columns"] = []
        try:
            ds["rows"] = json.loads(ds.get("profile") or "{}").get("num_rows")
        except (ValueError, AttributeError):
            ds["rows"] = None
        out.append(ds)
    return out


async def _logged_models(page: Page, run: dict) -> list[dict]:
    ids = [m["model_id"] for m in run.get("outputs", {}).get("model_outputs", [])][:20]
    out = []
    for model_id in ids:
        try:
            out.append(await page.stores.logged_models.get(page.project, model_id))
        except MlflowError:
            out.append({"model_id": model_id, "name": model_id})
    return out


async def run_page(page: Page) -> Response:
    run_id = page.request.path_params["run_id"]
    run = await page.stores.runs.get(page.project, run_id)
    info = run["info"]
    experiment = await page.stores.experiments.get(page.project, info["experiment_id"])
    data = run.get("data", {})
    tags = _by_key(data.get("tags"))
    tab = page.param("tab", "overview")
    values: dict[str, Any] = {}
    if tab == "artifacts":
        values = await _artifacts(page, run_id)
    versions, _ = await page.stores.registry.search_versions(page.project, f"run_id = {quoted(run_id)}", 50,
                                                             ["version_number DESC"], None)
    metrics = sorted(data.get("metrics", []), key=lambda m: m["key"])
    return await page.render(
        "run.html", run=run, info=info, experiment=experiment, tab=tab, metrics=metrics,
        params=sorted(data.get("params", []), key=lambda p: p["key"]),
        user_tags=sorted((k, v) for k, v in tags.items() if not k.startswith("mlflow.")),
        system_tags=sorted((k, v) for k, v in tags.items() if k.startswith("mlflow.") and k != "mlflow.log-model.history"),
        note=tags.get("mlflow.note.content"), parent=tags.get("mlflow.parentRunId"),
        commit=tags.get("mlflow.source.git.commit") or tags.get("modelyard.git.commit"),
        pipeline_run=tags.get("modelyard.pipeline.run_id"), job=tags.get("modelyard.job"),
        datasets=_datasets(run), logged_models=await _logged_models(page, run), versions=versions,
        chart_keys=[m["key"] for m in metrics][:MAX_CHARTS],
        chart_runs=[{"run_id": run_id, "name": info.get("run_name") or run_id}], **values)


# -- artifacts --------------------------------------------------------------------------------------

def _kind(name: str) -> str:
    ext = posixpath.splitext(name)[1].lstrip(".").lower()
    if ext in _IMAGES:
        return "image"
    if ext == "json":
        return "json"
    if ext in _TABLES:
        return "table"
    if ext in _TEXT or name in _TEXT_NAMES:
        return "text"
    return "binary"


async def read_head(repo, path: str, limit: int = PREVIEW_BYTES) -> tuple[bytes, int]:
    """The first ``limit`` bytes of a file and its full size."""
    stream = await repo.open(path)
    head = bytearray()
    try:
        async for chunk in stream.chunks:
            head += chunk
            if len(head) >= limit:
                break
    finally:
        closer = getattr(stream.chunks, "aclose", None)
        if closer is not None:
            await closer()
    return bytes(head[:limit]), stream.size


async def preview_of(repo, full_path: str, name: str) -> dict:
    """What the page shows of one artifact: an image link, pretty JSON, a table or text."""
    kind = _kind(name)
    out: dict[str, Any] = {"kind": kind, "name": name}
    if kind == "image":
        return out
    head, size = await read_head(repo, full_path)
    out["size"] = size
    out["truncated"] = size > len(head)
    if kind == "binary" and b"\x00" in head[:4096]:
        return out
    text = head.decode("utf-8", errors="replace")
    if kind == "json" and not out["truncated"]:
        try:
            out["text"] = json.dumps(json.loads(text), indent=2, ensure_ascii=False)[:PREVIEW_BYTES]
            return out
        except ValueError:
            pass
    if kind == "table":
        delimiter = _TABLES[posixpath.splitext(name)[1].lstrip(".").lower()]
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
        if out["truncated"] and rows:
            rows = rows[:-1]  # the last line may be cut in the middle
        out["header"], out["rows"] = (rows[0], rows[1:TABLE_ROWS + 1]) if rows else ([], [])
        out["more_rows"] = len(rows) - 1 > TABLE_ROWS or out["truncated"]
        return out
    out["kind"] = "text"
    out["text"] = text
    return out


async def _artifacts(page: Page, run_id: str) -> dict:
    repo = page.services.artifacts
    try:
        root = await run_artifact_root(page.services, page.project, run_id)
    except MlflowError as exc:
        if exc.error_code == "NOT_IMPLEMENTED":
            return {"artifact_error": exc.message, "entries": [], "dir": "", "selected": None}
        raise
    directory = clean_path(page.param("path"))
    selected = clean_path(page.param("file")) or None
    entries = [{"path": posixpath.relpath(e.path, root) if root else e.path, "is_dir": e.is_dir,
                "size": e.file_size} for e in await repo.list(join(root, directory))]
    for e in entries:
        e["name"] = basename(e["path"])
    preview = None
    if selected:
        try:
            preview = await preview_of(repo, join(root, selected), basename(selected))
        except MlflowError as exc:
            preview = {"kind": "missing", "name": basename(selected), "message": exc.message}
    parents = []
    if directory:
        parts = directory.split("/")
        parents = [("/".join(parts[: i + 1]), part) for i, part in enumerate(parts)]
    return {"entries": entries, "dir": directory, "parents": parents, "selected": selected, "preview": preview}


# -- compare ----------------------------------------------------------------------------------------

def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


async def compare_page(page: Page) -> Response:
    ids: list[str] = []
    for raw in page.request.query_params.getlist("runs"):
        ids.extend(i.strip() for i in raw.split(",") if i.strip())
    ids = list(dict.fromkeys(ids))
    if not 2 <= len(ids) <= MAX_COMPARE:
        raise MlflowError.invalid(f"Compare takes 2 to {MAX_COMPARE} runs; {len(ids)} were selected.")
    runs = [await page.stores.runs.get(page.project, i) for i in ids]
    names = {r["info"]["run_id"]: r["info"].get("run_name") or r["info"]["run_id"][:8] for r in runs}
    params = [_by_key(r.get("data", {}).get("params")) for r in runs]
    metrics = [_by_key(r.get("data", {}).get("metrics")) for r in runs]
    param_keys = sorted(set().union(*params))
    metric_keys = sorted(set().union(*metrics))
    only_diff = page.param("diff") == "1"
    param_rows = []
    for key in param_keys:
        values = [p.get(key) for p in params]
        differs = len(set(values)) > 1
        if differs or not only_diff:
            param_rows.append({"key": key, "values": values, "differs": differs})
    metric_rows = [{"key": k, "values": [m.get(k) for m in metrics]} for k in metric_keys]
    numeric_params = [k for k in param_keys if all(_number(p.get(k)) is not None for p in params)]
    plot = {
        "runs": [{"run_id": r["info"]["run_id"], "name": names[r["info"]["run_id"]]} for r in runs],
        "params": {k: [p.get(k) for p in params] for k in param_keys},
        "numeric_params": numeric_params,
        "metrics": {k: [_number(m.get(k)) for m in metrics] for k in metric_keys},
    }
    experiments = sorted({r["info"]["experiment_id"] for r in runs})
    return await page.render(
        "compare.html", runs=runs, names=names, param_rows=param_rows, metric_rows=metric_rows,
        only_diff=only_diff, ids=ids, plot=plot, experiments=experiments,
        chart_keys=[k for k in metric_keys if all(k in m for m in metrics)][:MAX_CHARTS] or metric_keys[:MAX_CHARTS],
        chart_runs=plot["runs"])
