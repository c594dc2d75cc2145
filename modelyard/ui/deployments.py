"""Deployments and alerts: versions and traffic weights, replicas, the monitors' series (request
rate, latency, errors, drift per feature, performance once labels arrive), the latest drift report
with reference and current histograms side by side, and the alerts with their silences.

The series are those ``GET /monitors/series`` answers; the page embeds them and its script polls
that same endpoint every 30 seconds to keep the charts live.
"""
from __future__ import annotations

import time

from starlette.responses import Response

from modelyard.errors import MlflowError
from modelyard.monitoring.profile import loads
from modelyard.monitoring.rules import matches
from modelyard.store.search import encode_page_token
from modelyard.ui.render import Page

__all__ = ["deployments_page", "deployment_page", "alerts_page", "group_series", "RANGES"]

RANGES = {"1h": 3_600_000, "6h": 6 * 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000}
MAX_MONITORS = 5
MAX_POINTS = 10_000
ALERTS = 500
PAGE = 100


def group_series(points: list[dict]) -> list[dict]:
    """Store points grouped as ``GET /monitors/series`` answers: ``[{metric, feature?, points}]``."""
    grouped: dict[tuple, list] = {}
    for p in points:
        grouped.setdefault((p["metric"], p["feature"]), []).append([p["ts_ms"], p["value"]])
    out = []
    for (metric, feature), values in sorted(grouped.items()):
        item = {"metric": metric, "points": values}
        if feature:
            item["feature"] = feature
        out.append(item)
    return out


async def _alert_state(page: Page) -> tuple[list[dict], list[dict]]:
    """(alerts newest first, silences) of the project, each alert marked when a silence holds it."""
    alerts = await page.stores.alerts.list_alerts(page.project, None, None, ALERTS)
    silences = await page.stores.alerts.list_silences(page.project)
    active = [s for s in silences if s["state"] == "active"]
    for a in alerts:
        a["silenced_by"] = next((s["silence_id"] for s in active if matches(a["labels"], s["matchers"])), None)
    return alerts, silences


def _sorted_alerts(alerts: list[dict]) -> list[dict]:
    order = {"firing": 0, "pending": 1, "resolved": 2}
    return sorted(alerts, key=lambda a: (order.get(a["state"], 3), -(a.get("fired_at_ms") or a["active_at_ms"])))


async def deployments_page(page: Page) -> Response:
    offset = page.int_param("offset", 0, 0, 10**12)
    deployments, token = await page.stores.deployments.list(page.project, page.param("model") or None, PAGE,
                                                            encode_page_token(offset) if offset else None)
    alerts, _ = await _alert_state(page)
    firing: dict[str, int] = {}
    for a in alerts:
        if a["state"] == "firing" and not a["silenced_by"]:
            dep = a["labels"].get("deployment", "")
            firing[dep] = firing.get(dep, 0) + 1
    return await page.render("deployments.html", deployments=deployments, firing=firing, offset=offset, size=PAGE,
                             has_next=token is not None)


async def deployment_page(page: Page) -> Response:
    name = page.request.path_params["name"]
    deployment = await page.stores.deployments.get(page.project, name)
    window = page.param("range", "24h")
    if window not in RANGES:
        window = "24h"
    now = int(time.time() * 1000)
    start = now - RANGES[window]
    monitors = (await page.stores.monitors.list(page.project, name))[:MAX_MONITORS]
    charts, reports = [], []
    for m in monitors:
        points = await page.stores.monitors.series(m["monitor_id"], None, None, start, None, MAX_POINTS)
        charts.append({"name": m["name"], "series": group_series(points)})
        found = await page.stores.monitors.report(m["monitor_id"], None)
        if found is not None:
            ts, blob = found
            reports.append({"monitor": m["name"], "ts_ms": ts, "report": loads(blob)})
    alerts, silences = await _alert_state(page)
    mine = _sorted_alerts([a for a in alerts if a["labels"].get("deployment") == name])
    firing = [a for a in mine if a["state"] in ("firing", "pending")]
    recent = [a for a in mine if a["state"] == "resolved"][:20]
    silences = [s for s in silences if s["state"] != "expired"
                and any(m[0] == "deployment" and matches({"deployment": name}, [m]) for m in s["matchers"])]
    drift = []
    for r in reports:
        for kind in ("data_drift", "prediction_drift"):
            for col in (r["report"].get(kind) or {}).get("columns", []):
                drift.append({**col, "kind": kind, "monitor": r["monitor"]})
    performance = [{"monitor": r["monitor"], **r["report"]["performance"]} for r in reports
                   if r["report"].get("performance", {}).get("labeled_rows")]
    return await page.render(
        "deployment.html", deployment=deployment, monitors=monitors, charts=charts, reports=reports, drift=drift,
        performance=performance, firing=firing, recent=recent, silences=silences, window=window,
        ranges=list(RANGES), start_ms=start)


async def alerts_page(page: Page) -> Response:
    alerts, silences = await _alert_state(page)
    rules = await page.stores.alerts.list_rules(page.project)
    try:
        history = await page.stores.alerts.events(page.project, None, None, 50, None)
    except MlflowError:
        history = []
    names = {r["rule_id"]: r["name"] for r in rules if "rule_id" in r}
    for e in history:
        e["rule"] = names.get(e.get("rule_id"), "")
    active = _sorted_alerts([a for a in alerts if a["state"] != "resolved"])
    return await page.render("alerts.html", active=active, resolved=[a for a in alerts if a["state"] == "resolved"][:50],
                             silences=[s for s in silences if s["state"] != "expired"], rules=rules, history=history)
