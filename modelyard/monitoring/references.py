"""Reference profiles from data: an uploaded file, or the training dataset a run logged.

A model version registered from a run that logged a dataset with ``mlflow.log_input`` gets its
reference profile computed once, the first time the server sees the version (the scheduler's sweep)
or a monitor needs it. The dataset's rows must be readable by the server: its source is an
artifact of the tracking server holding a CSV, Parquet or JSON-lines file, named by its URL
(``http://host/api/2.0/mlflow-artifacts/artifacts/<path>``, which is how ``mlflow.data`` accepts
it: the client refuses ``mlflow-artifacts:/`` and ``runs:/`` sources, though this reads them too). Other sources (a path on the client's disk, a table elsewhere)
cannot be read; upload a profile with ``modelyard monitor reference`` instead.
"""
from __future__ import annotations

import io
import logging

import orjson

from modelyard.errors import MlflowError
from modelyard.monitoring.profile import Profile, dumps, profile_frame

__all__ = ["read_table", "reference_from_version", "MAX_DATASET_BYTES"]

log = logging.getLogger("modelyard.monitoring")

MAX_DATASET_BYTES = 512 * 1024 * 1024


def read_table(data: bytes, name: str):
    """A pandas DataFrame from file bytes, by extension (.csv, .parquet, .json/.jsonl)."""
    import pandas as pd

    lower = name.lower()
    if lower.endswith((".parquet", ".pq")):
        return pd.read_parquet(io.BytesIO(data))
    if lower.endswith((".json", ".jsonl", ".ndjson")):
        text = data.decode()
        if text.lstrip().startswith("["):
            return pd.DataFrame(orjson.loads(text))
        return pd.read_json(io.StringIO(text), lines=True)
    if lower.endswith((".csv", ".txt", ".tsv")):
        return pd.read_csv(io.BytesIO(data), sep="\t" if lower.endswith(".tsv") else ",")
    raise ValueError(f"cannot tell the format of {name!r}: use .csv, .parquet or .json")


def _source_uri(dataset: dict) -> str | None:
    try:
        source = orjson.loads(dataset.get("source") or "{}")
    except orjson.JSONDecodeError:
        return dataset.get("source")
    if isinstance(source, dict):
        return source.get("uri") or source.get("url") or source.get("path")
    return None


async def _artifact_path(services, project: str, uri: str) -> str | None:
    if uri.startswith("runs:/"):
        run_id, _, rel = uri[len("runs:/"):].partition("/")
        run = await services.stores.runs.get(project, run_id)
        base = run["info"]["artifact_uri"].rstrip("/")
        uri = f"{base}/{rel}"
    return services.artifacts.path_for_uri(uri)


async def reference_from_version(services, project: str, model_name: str, version: str,
                                 once: bool = False) -> dict | None:
    """Compute and store the reference profile of a model version from its run's training dataset.

    Returns the stored reference, or None when the version has no readable logged dataset. With
    ``once``, a version that has a reference by the time this one is computed keeps that one.
    """
    stores = services.stores
    mv = await stores.registry.get_version(project, model_name, int(version))
    run_id = mv.get("run_id")
    if not run_id:
        return None
    try:
        run = await stores.runs.get(project, run_id)
    except MlflowError:
        return None
    inputs = (run.get("inputs") or {}).get("dataset_inputs") or []
    if not inputs:
        return None

    def context(item):
        return next((t.get("value") for t in item.get("tags", []) if t.get("key") == "mlflow.data.context"), None)

    inputs = sorted(inputs, key=lambda i: 0 if context(i) in ("training", "train") else 1)
    for item in inputs:
        ds = item["dataset"]
        uri = _source_uri(ds)
        if not uri:
            continue
        path = await _artifact_path(services, project, uri)
        if path is None:
            continue
        size = await services.artifacts.size(path)
        if size is None or size > MAX_DATASET_BYTES:
            continue
        data = b"".join([chunk async for chunk in services.artifacts.read(path)])
        try:
            import anyio.to_thread

            profile: Profile = await anyio.to_thread.run_sync(lambda: profile_frame(read_table(data, path)))
        except Exception as exc:  # noqa: BLE001 - an unreadable file is reported, not raised
            log.warning("cannot profile dataset %s of %s/%s: %s", uri, model_name, version, exc)
            continue
        return await stores.monitors.create_reference(
            project, f"{model_name}/{version}", model_name, str(version),
            f"dataset {ds.get('name')}@{ds.get('digest')} ({uri})", profile.rows, dumps(profile.to_dict()), once=once)
    return None
