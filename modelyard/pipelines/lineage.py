"""Dataset lineage: the data files a job reads, logged as MLflow dataset inputs of its run.

A job's input that is a table (``.csv``, ``.tsv``, ``.parquet``, or a folder of them) becomes a
dataset input of the job's MLflow run (``runs/log-inputs``, what ``mlflow.log_input`` sends) with
its content digest, its schema and row count when pyarrow is there to read them, and a source
that points at the file: the producing job's stored output when a job of the pipeline wrote it
(an ``http`` source the ``mlflow`` client can load), the path on disk otherwise. The register step
logs the datasets of every job upstream of the model, so a model version's run leads to the data
the model was trained on.
"""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

__all__ = ["is_dataset", "dataset_entity", "DATA_SUFFIXES"]

DATA_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
_MAX_SCAN = 256 * 1024 * 1024  # tables larger than this get a schema but no row count

_ARROW_TO_MLFLOW = {"int64": "long", "int32": "integer", "int16": "integer", "int8": "integer", "uint8": "integer",
                    "uint16": "integer", "uint32": "long", "uint64": "long", "double": "double", "float": "float",
                    "halffloat": "float", "string": "string", "large_string": "string", "bool": "boolean",
                    "binary": "binary", "large_binary": "binary", "date32[day]": "datetime"}


def is_dataset(root: Path, rel: str) -> bool:
    path = root / rel
    if path.is_file():
        return path.suffix.lower() in DATA_SUFFIXES
    if path.is_dir():
        return any(p.suffix.lower() in DATA_SUFFIXES for p in path.rglob("*") if p.is_file())
    return False


def _schema_and_rows(path: Path) -> tuple[list[dict] | None, int | None]:
    try:
        import pyarrow.csv as pacsv
        import pyarrow.dataset as pads
    except ImportError:
        return None, None
    try:
        size = sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
        suffix = path.suffix.lower() if path.is_file() else next(
            (p.suffix.lower() for p in path.rglob("*") if p.suffix.lower() in DATA_SUFFIXES), ".parquet")
        if suffix in (".csv", ".tsv"):
            fmt = pads.CsvFileFormat(parse_options=pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ","))
        else:
            fmt = "parquet"
        ds = pads.dataset(str(path), format=fmt)
        rows = ds.count_rows() if size <= _MAX_SCAN or fmt == "parquet" else None
        schema = [{"type": _ARROW_TO_MLFLOW.get(str(f.type), "string" if "string" in str(f.type) else
                                               ("datetime" if "timestamp" in str(f.type) else "string")),
                   "name": f.name, "required": not f.nullable} for f in ds.schema]
        return schema, rows
    except Exception:  # noqa: BLE001 - lineage is best effort; a table pyarrow cannot read still has a digest
        return None, None


def dataset_entity(root: Path, rel: str, content_hash: str, tracking_uri: str,
                   produced_by: tuple[str, str] | None) -> dict:
    """An MLflow ``Dataset`` for the input ``rel``. ``produced_by``: (job name, the artifact URI of
    the MLflow run holding that job's outputs)."""
    schema, rows = _schema_and_rows(root / rel)
    if produced_by is not None:
        root_uri = produced_by[1][len("mlflow-artifacts:"):].lstrip("/")
        url = f"{tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{quote(root_uri)}/outputs/{quote(rel)}"
        source_type, source = "http", {"url": url}
    else:
        source_type, source = "local", {"uri": str((root / rel).resolve())}
    entity = {"name": rel, "digest": content_hash[:16], "source_type": source_type, "source": json.dumps(source)}
    if schema is not None:
        entity["schema"] = json.dumps({"mlflow_colspec": schema})
    if rows is not None:
        entity["profile"] = json.dumps({"num_rows": rows, "num_elements": rows * len(schema or [])})
    return entity
