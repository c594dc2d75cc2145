"""One typed object holds every server setting.

Each setting has a name, a type, a default and a help text; the CLI turns them into flags and reads
the matching ``MODELYARD_*`` environment variable, so ``modelyard server --help`` lists them all.
Order of precedence: flag, then environment, then default.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings", "setting_fields"]


def _setting(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class Settings:
    host: str = _setting("127.0.0.1", "Address to bind.")
    port: int = _setting(5000, "Port to listen on.")
    data_dir: Path = _setting(Path("./modelyard-data"), "Directory for the SQLite file and local artifacts.")
    database_url: str | None = _setting(
        None, "SQLAlchemy URL of the store, e.g. postgresql://user@host/db. Default: SQLite under --data-dir."
    )
    artifacts_uri: str | None = _setting(
        None, "Where artifacts live: a directory or s3://bucket/prefix. Default: <data-dir>/artifacts."
    )
    s3_endpoint_url: str | None = _setting(None, "Endpoint URL of an S3-compatible server (MinIO, moto, ...).")
    workers: int = _setting(1, "Number of server processes.")
    max_json_body: int = _setting(16 * 1024 * 1024, "Largest JSON request body accepted, in bytes.")
    max_artifact_body: int = _setting(
        5 * 1024**3, "Largest artifact upload accepted, in bytes (uploads stream; this bounds disk, not memory)."
    )
    auth: bool = _setting(False, "Require an access token on every request (create one with `modelyard admin`).")
    auth_failure_delay_ms: int = _setting(
        500, "How long a request with a bad token waits before its 401, in milliseconds (slows guessing)."
    )
    insecure_no_auth: bool = _setting(
        False, "Allow listening on a non-loopback address without --auth (anyone who can reach it gets in)."
    )
    log_level: str = _setting("warning", "Server log level (debug, info, warning, error).")
    monitor_bucket_seconds: int = _setting(
        60, "Width of the time buckets prediction logs are summarised in; monitor windows are whole buckets."
    )
    prediction_retention_days: int = _setting(
        30, "Days of prediction logs, labels and monitor results kept; older day partitions are dropped."
    )
    audit_retention_days: int = _setting(
        0, "Days of audit events kept (0: all of them); older ones are deleted by the monitor scheduler's hourly pass."
    )
    disable_monitor_scheduler: bool = _setting(
        False, "Do not evaluate monitors, alert rules and notification deliveries in the background of this server."
    )
    monitor_tick_ms: int = _setting(1000, "How often the monitor scheduler looks for due work, in milliseconds.")

    webhook_allowed_schemes: str = _setting(
        "https", "URL schemes a registry webhook, an alert channel or an alert's webhook action may use, comma-separated "
        "(add http for a receiver on a private network)."
    )
    webhook_allow_private_ips: bool = _setting(
        False, "Let registry webhooks, alert channels and alert actions call loopback and private addresses "
        "(off: only public ones, against SSRF)."
    )
    webhook_timeout: int = _setting(30, "Seconds a registry webhook delivery may take before it counts as failed.")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return _normalise_database_url(self.database_url)
        return f"sqlite:///{Path(self.data_dir).resolve() / 'modelyard.db'}"

    @property
    def resolved_artifacts_uri(self) -> str:
        if self.artifacts_uri:
            return self.artifacts_uri
        return str(Path(self.data_dir).resolve() / "artifacts")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "Settings":
        """Settings from ``MODELYARD_*`` variables; keyword arguments that are not None win."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is not None and raw != "":
                values[f.name] = _coerce(f, raw)
        values.update({k: _coerce(_field(k), v) for k, v in overrides.items() if v is not None})
        return cls(**values)


def env_name(name: str) -> str:
    return "MODELYARD_" + name.upper()


def setting_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(Settings))


def _field(name: str) -> dataclasses.Field:
    for f in dataclasses.fields(Settings):
        if f.name == name:
            return f
    raise KeyError(name)


def _coerce(f: dataclasses.Field, raw):
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if not isinstance(raw, str):
        return Path(raw) if kind == "Path" else raw
    if kind == "int":
        return int(raw)
    if kind == "Path":
        return Path(raw)
    if kind == "bool":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return raw


def _normalise_database_url(url: str) -> str:
    # psycopg 3 is the PostgreSQL driver; accept the plain scheme users type.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url
