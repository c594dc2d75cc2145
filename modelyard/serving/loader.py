"""Loading a registered model version through MLflow's pyfunc loader, and warming it up.

The version's files are downloaded from the tracking server (``models:/NAME/VERSION``, over HTTP,
exactly as the ``mlflow`` client does) into a directory of this process, then loaded with
``mlflow.pyfunc.load_model``: any flavor MLflow can load is served. What the request parser needs
to know about the model's signature is worked out once, here.
"""
from __future__ import annotations

import inspect
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.serving import protocol

__all__ = ["LoadedModel", "load_version", "warm_up"]


@dataclass(eq=False)
class LoadedModel:
    """A loaded model version and the facts about its signature that parsing needs."""

    model_name: str
    version: str
    pyfunc: Any
    path: Path | None
    schema: Any  # mlflow.types.Schema, or None without a signature
    # dtype that ``inputs``/``instances`` row lists become (None: no signature); False when the
    # signature is not one unnamed tensor, so those bodies take MLflow's parser.
    tensor_dtype: Any
    fast_json: bool  # False for signatures from type hints: the raw ``inputs`` go to the model
    accepts_params: bool
    input_names: list[str] | None
    serving_example: bytes | None
    load_seconds: float = 0.0
    download_dir: Path | None = None  # removed with the model
    # Equal profiles parse a body the same way, so a payload parsed for one serves the other.
    parse_profile: str = ""

    @classmethod
    def from_pyfunc(cls, model_name: str, version: str, pyfunc, path: Path | None = None,
                    load_seconds: float = 0.0) -> "LoadedModel":
        metadata = pyfunc.metadata
        schema = metadata.get_input_schema()
        if schema is None:
            tensor_dtype = None
        elif schema.is_tensor_spec() and len(schema.inputs) == 1 and not schema.has_input_names():
            tensor_dtype = np.dtype(schema.inputs[0].type)
        else:
            tensor_dtype = False
        type_hint = getattr(metadata, "_is_signature_from_type_hint", lambda: False)()
        example = None
        if path is not None:
            try:
                text = metadata.get_serving_input(str(path))
                example = text.encode() if isinstance(text, str) else None
            except Exception:  # noqa: BLE001 - an unreadable example only means no warm-up input
                example = None
        return cls(
            model_name=model_name, version=str(version), pyfunc=pyfunc, path=path, schema=schema,
            tensor_dtype=tensor_dtype, fast_json=not type_hint,
            accepts_params="params" in inspect.signature(pyfunc.predict).parameters,
            input_names=schema.input_names() if schema is not None and schema.has_input_names() else None,
            serving_example=example, load_seconds=load_seconds,
            parse_profile=repr((str(tensor_dtype), not type_hint, schema.to_json() if schema is not None else None)),
        )

    def release(self) -> None:
        """Drop the downloaded files (the model object goes with its last reference)."""
        if self.download_dir is not None:
            shutil.rmtree(self.download_dir, ignore_errors=True)


def load_version(model_name: str, version: str, root: Path) -> LoadedModel:
    """Download ``models:/NAME/VERSION`` under ``root`` and load it with MLflow's pyfunc loader."""
    import mlflow.artifacts
    import mlflow.pyfunc

    started = time.perf_counter()
    target = Path(root) / f"{_safe(model_name)}-v{version}-{time.time_ns()}"
    target.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}",
                                                    dst_path=str(target))
        pyfunc = mlflow.pyfunc.load_model(local)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    model = LoadedModel.from_pyfunc(model_name, version, pyfunc, Path(local), time.perf_counter() - started)
    model.download_dir = target
    return model


def warm_up(model: LoadedModel, live: list[tuple[bytes, bytes | None]] = ()) -> list[str]:
    """Run the model before it takes traffic: on its saved serving example (which must succeed),
    then on recent live request bodies (whose failure is reported, not fatal: the new version may
    expect other inputs). Returns warnings."""
    warnings = []
    if model.serving_example is not None:
        outcome = _score(model, model.serving_example, b"application/json")
        if outcome.status != 200:
            raise RuntimeError(f"version {model.version} fails on its own serving example: "
                               f"{outcome.body[:500].decode(errors='replace')}")
    for body, content_type in live:
        outcome = _score(model, body, content_type)
        if outcome.status != 200:
            warnings.append(f"version {model.version} answers {outcome.status} to a recent request: "
                            f"{outcome.body[:300].decode(errors='replace')}")
    return warnings


def _score(model: LoadedModel, body: bytes, content_type: bytes | None) -> protocol.Outcome:
    try:
        mime = protocol.media_type(content_type)
        payload = protocol.parse_fast(body, model) if mime == protocol.CONTENT_TYPE_JSON else None
        if payload is None:
            payload = protocol.parse_slow(body, mime, model)
    except protocol.ScoringError as exc:
        return protocol.Outcome(exc.status, exc.body, exc.content_type, None, model.version)
    return protocol.execute(model, [payload])[0]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
