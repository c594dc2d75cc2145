"""Notification channels, deliveries and alert actions (``/api/modelyard/v1/notification-channels/...``),
and the Prometheus ``/metrics`` page of the tracking server.

Channels: ``webhook`` ({url, headers}), ``slack`` ({url}) and ``email`` ({host, port, from, to,
starttls, ssl, username, password}). Secrets are write-only: listings mask them.
"""
from __future__ import annotations

import re

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelyard import outbound
from modelyard.errors import MlflowError
from modelyard.monitoring import channels
from modelyard.monitoring.evaluate import METRIC_HELP
from modelyard.server.api.monitors import validate_name
from modelyard.server.routing import Context, Endpoint, error_response, with_access
from modelyard.server.schema import ANY, INT64, STRING, Field, Schema

__all__ = ["ENDPOINTS", "routes"]


async def create_channel(ctx: Context, a: dict) -> dict:
    validate_name(a["name"])
    try:
        config = channels.validate_config(a["type"], a["config"] or {})
    except ValueError as exc:
        raise MlflowError.invalid(f"Invalid {a['type']} channel: {exc}.") from None
    if "url" in config:
        await outbound.check(config["url"], ctx.services.settings)
    return {"channel": await ctx.services.stores.notifications.create_channel(ctx.project, a["name"], a["type"], config)}


async def list_channels(ctx: Context, a: dict) -> dict:
    return {"channels": await ctx.services.stores.notifications.list_channels(ctx.project)}


async def delete_channel(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.notifications.delete_channel(ctx.project, a["name"])
    return {}


async def test_channel(ctx: Context, a: dict) -> dict:
    """Queue a test notification to a channel; it goes out with the next scheduler tick."""
    channel = await ctx.services.stores.notifications.get_channel(ctx.project, a["name"], secrets=True)
    payload = {"version": "4", "status": "firing", "rule": "test", "groupKey": "test", "groupLabels": {},
               "commonLabels": {"alertname": "test"}, "commonAnnotations": {"summary": "modelyard test notification"},
               "alerts": [{"status": "firing", "labels": {"alertname": "test"},
                           "annotations": {"summary": "modelyard test notification"}}]}
    delivery = await ctx.services.stores.notifications.enqueue(
        ctx.project, channel["name"], {"type": channel["type"], "config": channel["config"]}, "test", payload)
    return {"delivery_id": delivery}


def _limit(a: dict) -> int:
    limit = a["max_results"] or 100
    if not 1 <= limit <= 1000:
        raise MlflowError.invalid("'max_results' is between 1 and 1000.")
    return limit


async def list_deliveries(ctx: Context, a: dict) -> dict:
    if a["status"] not in (None, "pending", "sent", "failed"):
        raise MlflowError.invalid("'status' is pending, sent or failed.")
    return {"deliveries": await ctx.services.stores.notifications.list_deliveries(
        ctx.project, a["status"], a["channel"], _limit(a))}


async def list_actions(ctx: Context, a: dict) -> dict:
    return {"actions": await ctx.services.stores.notifications.list_actions(ctx.project, _limit(a))}


ENDPOINTS = [
    Endpoint("POST", "/notification-channels/create", create_channel, Schema(
        Field("name", STRING, required=True), Field("type", STRING, required=True, choices=channels.CHANNEL_TYPES),
        Field("config", ANY)), access="manage"),
    Endpoint("GET", "/notification-channels/list", list_channels, Schema(), access="read"),
    Endpoint("DELETE", "/notification-channels/delete", delete_channel, Schema(Field("name", STRING, required=True)),
             access="manage"),
    Endpoint("POST", "/notification-channels/test", test_channel, Schema(Field("name", STRING, required=True)),
             access="write"),
    Endpoint("GET", "/notifications/deliveries", list_deliveries, Schema(
        Field("status", STRING), Field("channel", STRING), Field("max_results", INT64)), access="read"),
    Endpoint("GET", "/alerts/actions", list_actions, Schema(Field("max_results", INT64)), access="read"),
]


# -- /metrics ------------------------------------------------------------------------------------------
_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_]")


class _MonitorCollector:
    """Each monitor's series at its last evaluation, and alert counts by state, as gauges."""

    def __init__(self, monitors: list[dict], points: dict, alerts: list[dict]):
        self.monitors, self.points, self.alerts = monitors, points, alerts

    def collect(self):
        families: dict[str, GaugeMetricFamily] = {}
        for m in self.monitors:
            for metric, feature, value in self.points.get(m["monitor_id"], []):
                name = "modelyard_monitor_" + _BAD_CHARS.sub("_", metric)
                fam = families.get(name)
                if fam is None:
                    fam = families[name] = GaugeMetricFamily(
                        name, METRIC_HELP.get(metric, f"Monitor series {metric}."),
                        labels=["project", "monitor", "deployment", "feature"])
                fam.add_metric([m["project"], m["name"], m["deployment"], feature], value)
        yield from families.values()
        last = GaugeMetricFamily("modelyard_monitor_last_evaluation_timestamp_seconds",
                                 "When each monitor last evaluated a window (its end).",
                                 labels=["project", "monitor", "deployment"])
        for m in self.monitors:
            if m.get("last_eval_ms"):
                last.add_metric([m["project"], m["name"], m["deployment"]], m["last_eval_ms"] / 1000)
        yield last
        alerts = GaugeMetricFamily("modelyard_alerts", "Alerts by rule and state (pending, firing).",
                                   labels=["project", "alertname", "severity", "state"])
        counts: dict[tuple, int] = {}
        for a in self.alerts:
            key = (a["project"], a["rule"], a["labels"].get("severity", ""), a["state"])
            counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items()):
            alerts.add_metric(list(key), n)
        yield alerts


def routes(services) -> list[Route]:
    async def metrics(request: Request) -> Response:
        if services.settings.auth:
            # Scrapers authenticate like any client; reading monitor series needs an admin token,
            # since /metrics spans every project.
            from modelyard.server.auth import check

            try:
                principal = await services.auth.principal(request.headers, None, None)
                check(principal, "default", "admin", "read /metrics (it spans every project)")
            except MlflowError as exc:
                return error_response(exc)
        monitors = await services.stores.monitors.list(None)
        points = await services.stores.monitors.latest_points([m["monitor_id"] for m in monitors])
        alerts = []
        for project in sorted({m["project"] for m in monitors} | {"default"}):
            for a in await services.stores.alerts.list_alerts(project, ["pending", "firing"], None, 10_000):
                alerts.append({**a, "project": project})
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_MonitorCollector(monitors, points, alerts))
        body = await anyio.to_thread.run_sync(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [with_access(Route("/metrics", metrics), "admin")]
