"""The model server's options: one frozen dataclass, each field with its help text.

``modelyard serve`` turns the fields into flags (``--max-batch-rows``); ``MODELYARD_SERVE_*``
environment variables set them too. The model server is a client of modelyard's server, so these
are its own options, not the server's ``Settings``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ServeOptions", "option_fields", "env_name"]


def _option(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServeOptions:
    model_uri: str | None = _option(None, "models:/NAME@ALIAS (followed as the alias moves) or models:/NAME/VERSION.")
    deployment: Path | None = _option(
        None, "A deployment file (YAML: versions and weights, shadow) or a modelyard.yml with a deployments section.")
    name: str | None = _option(
        None, "Deployment name. Default: NAME-ALIAS or NAME-vVERSION, or the file's. Alone: serve that deployment "
              "as recorded in the server.")
    tracking_uri: str | None = _option(
        None, "URL of the modelyard server (default: $MLFLOW_TRACKING_URI, else http://127.0.0.1:5000).")
    host: str = _option("127.0.0.1", "Address to bind.")
    port: int = _option(5001, "Port to listen on.")
    workers: int = _option(1, "Number of server processes; each loads the model and batches its own traffic.")
    max_batch_rows: int = _option(512, "Most rows merged into one model call (1 turns batching off).")
    max_batch_wait_ms: float = _option(
        0.0, "How long a batch that is not full may wait for more rows. 0: never wait; requests that arrive while "
             "the model is busy are batched anyway.")
    poll_interval: float = _option(
        10.0, "Seconds between checks of the aliases and the deployment record, and between heartbeats.")
    log_predictions: bool = _option(True, "Ship every prediction to the server's prediction log.")
    prediction_buffer_rows: int = _option(
        100_000, "Most predictions held while the server is slow or down; beyond it they are dropped and counted.")
    request_timeout: float = _option(60.0, "Seconds before a request is answered 504.")
    max_body_bytes: int = _option(100 * 1024 * 1024, "Largest request body accepted, in bytes.")
    access_log: bool = _option(True, "Write a JSON access log line per request (with its request id) to stdout.")
    advertise_url: str | None = _option(
        None, "URL under which this server is reachable, as recorded in the deployment. Default: http://HOST:PORT.")
    model_dir: Path | None = _option(None, "Where downloaded model versions go. Default: a temporary directory.")
    log_level: str = _option("warning", "Log level (debug, info, warning, error).")

    @classmethod
    def from_env(cls, **overrides) -> "ServeOptions":
        values = {}
        for f in dataclasses.fields(cls):
            raw = os.environ.get(env_name(f.name))
            if raw not in (None, ""):
                values[f.name] = _coerce(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values.get("tracking_uri"):
            values["tracking_uri"] = os.environ.get("MLFLOW_TRACKING_URI") or "http://127.0.0.1:5000"
        return cls(**values)

    @property
    def endpoint_url(self) -> str:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            import socket

            host = socket.gethostname()
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"


def option_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(ServeOptions))


def env_name(name: str) -> str:
    return "MODELYARD_SERVE_" + name.upper()


def _coerce(f: dataclasses.Field, raw: str):
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "bool":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if kind.startswith("Path"):
        return Path(raw)
    return raw
