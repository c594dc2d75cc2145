"""Monitors and reference profiles (``/api/modelyard/v1/monitors/...``, ``/references/...``).

A monitor watches one deployment's prediction log over tumbling or sliding windows (settings in
``modelyard/monitoring/evaluate.py``). The scheduler evaluates it when a window ends;
``POST /monitors/evaluate`` evaluates it now. Results are series (``GET /monitors/series``) and a
report per evaluation (``GET /monitors/report``).
"""
from __future__ import annotations

import re
import time

from modelyard.errors import MlflowError
from modelyard.monitoring.evaluate import ConfigError, normalise_config
from modelyard.monitoring.profile import Profile, dumps, loads
from modelyard.monitoring.service import monitoring_for
from modelyard.server.routing import Context, Endpoint
from modelyard.server.schema import ANY, BOOL, INT64, STRING, Field, Schema, invalid_value
from modelyard.server.validation import validate_time_ms

__all__ = ["ENDPOINTS"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}$")
MAX_POINTS = 10_000


def validate_name(name: str, what: str = "name") -> None:
    if not _NAME.match(name or ""):
        raise MlflowError.invalid(invalid_value(what, name, "1 to 256 letters, digits, '_', '.' or '-', "
                                                             "starting with a letter or digit."))


def _config(ctx: Context, raw) -> dict:
    if raw is not None and not isinstance(raw, dict):
        raise MlflowError.invalid("'config' is an object.")
    try:
        return normalise_config(raw, ctx.services.settings.monitor_bucket_seconds)
    except ConfigError as exc:
        raise MlflowError.invalid(f"Invalid monitor config: {exc}") from None


async def create(ctx: Context, a: dict) -> dict:
    validate_name(a["name"])
    validate_name(a["deployment"], "deployment")
    config = _config(ctx, a["config"])
    mon = monitoring_for(ctx.services)
    monitor = await ctx.services.stores.monitors.create(
        ctx.project, a["name"], a["deployment"], config, a["enabled"] is not False,
        mon.first_end(config, int(time.time() * 1000)))
    return {"monitor": monitor}


async def update(ctx: Context, a: dict) -> dict:
    if a["deployment"] is not None:
        validate_name(a["deployment"], "deployment")
    config = next_eval = None
    if a["config"] is not None:
        config = _config(ctx, a["config"])
        next_eval = monitoring_for(ctx.services).first_end(config, int(time.time() * 1000))
    monitor = await ctx.services.stores.monitors.update(ctx.project, a["name"], a["deployment"], config,
                                                         a["enabled"], next_eval)
    return {"monitor": monitor}


async def get(ctx: Context, a: dict) -> dict:
    return {"monitor": await ctx.services.stores.monitors.get(ctx.project, a["name"])}


async def list_monitors(ctx: Context, a: dict) -> dict:
    monitors = await ctx.services.stores.monitors.list(ctx.project, a["deployment"])
    for m in monitors:
        m.pop("project", None)
    return {"monitors": monitors}


async def delete(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.monitors.delete(ctx.project, a["name"])
    return {}


async def evaluate(ctx: Context, a: dict) -> dict:
    """Evaluate now: the window ending at ``at_ms`` (default: now, rounded up to a bucket)."""
    validate_time_ms(a["at_ms"], "at_ms")
    monitor = await ctx.services.stores.monitors.get(ctx.project, a["name"])
    mon = monitoring_for(ctx.services)
    at = a["at_ms"] if a["at_ms"] is not None else int(time.time() * 1000)
    result = await mon.evaluate(ctx.project, monitor, mon.align_end(at))
    if not a["include_report"]:
        result.pop("report", None)
    return {"evaluation": result}


async def series(ctx: Context, a: dict) -> dict:
    """Points of one monitor's series, oldest first, grouped by (metric, feature)."""
    monitor = await ctx.services.stores.monitors.get(ctx.project, a["name"])
    limit = a["max_results"] or 1000
    if not 1 <= limit <= MAX_POINTS:
        raise MlflowError.invalid(f"'max_results' is between 1 and {MAX_POINTS}.")
    points = await ctx.services.stores.monitors.series(monitor["monitor_id"], a["metric"], a["feature"],
                                                        a["start_ms"], a["end_ms"], limit)
    grouped: dict[tuple, list] = {}
    for p in points:
        grouped.setdefault((p["metric"], p["feature"]), []).append([p["ts_ms"], p["value"]])
    out = []
    for (metric, feature), values in sorted(grouped.items()):
        item = {"metric": metric, "points": values}
        if feature:
            item["feature"] = feature
        out.append(item)
    return {"series": out}


async def report(ctx: Context, a: dict) -> dict:
    monitor = await ctx.services.stores.monitors.get(ctx.project, a["name"])
    found = await ctx.services.stores.monitors.report(monitor["monitor_id"], a["at_ms"])
    if found is None:
        raise MlflowError.not_found(f"Monitor '{a['name']}' has not been evaluated yet.")
    ts, blob = found
    return {"monitor": monitor["name"], "ts_ms": ts, "report": loads(blob)}


# -- reference profiles ---------------------------------------------------------------------------
async def create_reference(ctx: Context, a: dict) -> dict:
    """Store a reference profile: a profile computed by the client (``modelyard monitor reference``),
    rows given inline (``records``), or the training dataset of a model version (``from_version``)."""
    stores = ctx.services.stores
    model_name, version = a["model_name"], a["model_version"]
    if version is not None and not str(version).isdigit():
        raise MlflowError.invalid(invalid_value("model_version", version, "a version number."))
    if a["from_version"]:
        if not model_name or version is None:
            raise MlflowError.invalid("'from_version' needs 'model_name' and 'model_version'.")
        from modelyard.monitoring.references import reference_from_version

        made = await reference_from_version(ctx.services, ctx.project, model_name, str(version))
        if made is None:
            raise MlflowError.invalid(
                f"Version {version} of '{model_name}' has no training dataset the server can read: its run "
                "logged none, or the dataset's source is not an artifact of this server.")
        return {"reference": made}
    name = a["name"] or (f"{model_name}/{version}" if model_name else None)
    if not name:
        raise MlflowError.invalid("A reference needs a 'name' (or a 'model_name').")
    if (a["profile"] is None) == (a["records"] is None):
        raise MlflowError.invalid("Give exactly one of 'profile' (from modelyard.monitoring) or 'records' (rows).")
    try:
        if a["profile"] is not None:
            profile = Profile.from_dict(a["profile"])
        else:
            import pandas as pd

            from modelyard.monitoring.profile import profile_frame

            if not isinstance(a["records"], list) or not all(isinstance(r, dict) for r in a["records"]):
                raise ValueError("'records' is a list of objects")
            profile = profile_frame(pd.DataFrame(a["records"]))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MlflowError.invalid(f"Invalid reference profile: {exc}") from None
    if profile.rows <= 0 or not profile.columns:
        raise MlflowError.invalid("A reference profile needs rows and columns.")
    ref = await stores.monitors.create_reference(ctx.project, name, model_name,
                                                 None if version is None else str(version), a["source"] or "upload",
                                                 profile.rows, dumps(profile.to_dict()))
    return {"reference": ref}


async def get_reference(ctx: Context, a: dict) -> dict:
    if a["include_profile"]:
        info, blob = await ctx.services.stores.monitors.get_reference(ctx.project, a["reference_id"], with_profile=True)
        return {"reference": {**info, "profile": loads(blob)}}
    return {"reference": await ctx.services.stores.monitors.get_reference(ctx.project, a["reference_id"])}


async def list_references(ctx: Context, a: dict) -> dict:
    return {"references": await ctx.services.stores.monitors.list_references(ctx.project, a["model_name"])}


async def delete_reference(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.monitors.delete_reference(ctx.project, a["reference_id"])
    return {}


_NAME_FIELD = Field("name", STRING, required=True)

ENDPOINTS = [
    Endpoint("POST", "/monitors/create", create, Schema(
        _NAME_FIELD, Field("deployment", STRING, required=True), Field("config", ANY), Field("enabled", BOOL)),
        access="write"),
    Endpoint("POST", "/monitors/update", update, Schema(
        _NAME_FIELD, Field("deployment", STRING), Field("config", ANY), Field("enabled", BOOL)), access="write"),
    Endpoint("GET", "/monitors/get", get, Schema(_NAME_FIELD), access="read"),
    Endpoint("GET", "/monitors/list", list_monitors, Schema(Field("deployment", STRING)), access="read"),
    Endpoint("DELETE", "/monitors/delete", delete, Schema(_NAME_FIELD), access="delete"),
    Endpoint("POST", "/monitors/evaluate", evaluate, Schema(
        _NAME_FIELD, Field("at_ms", INT64), Field("include_report", BOOL, default=True)), access="write"),
    Endpoint("GET", "/monitors/series", series, Schema(
        _NAME_FIELD, Field("metric", STRING), Field("feature", STRING), Field("start_ms", INT64),
        Field("end_ms", INT64), Field("max_results", INT64)), access="read"),
    Endpoint("GET", "/monitors/report", report, Schema(_NAME_FIELD, Field("at_ms", INT64)), access="read"),
    Endpoint("POST", "/references/create", create_reference, Schema(
        Field("name", STRING), Field("model_name", STRING), Field("model_version", STRING), Field("source", STRING),
        Field("profile", ANY), Field("records", ANY), Field("from_version", BOOL, default=False)), access="write"),
    Endpoint("GET", "/references/get", get_reference, Schema(
        Field("reference_id", STRING, required=True), Field("include_profile", BOOL, default=False)), access="read"),
    Endpoint("GET", "/references/list", list_references, Schema(Field("model_name", STRING)), access="read"),
    Endpoint("DELETE", "/references/delete", delete_reference, Schema(Field("reference_id", STRING, required=True)),
             access="delete"),
]
