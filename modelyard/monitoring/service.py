"""Monitoring inside the tracking server: evaluate monitors, apply alert rules, deliver, act.

:class:`Monitoring` is built once per server process (:func:`monitoring_for`). Its scheduler is a
background task started in the app's lifespan; every tick it

1. claims the monitors whose window has ended (a conditional UPDATE, so with several server
   processes on PostgreSQL each window is evaluated by exactly one of them) and evaluates them;
2. sends the notification deliveries that are due (claimed the same way), retrying with backoff;
3. runs the actions queued by firing alerts;
4. now and then, under a lease row, computes reference profiles for newly registered versions and
   drops data past retention.

An evaluation merges the window's bucket summaries (summarising only the buckets that changed),
compares them with the reference profile, stores the series and the report, then hands the new
series to every alert rule that selects this monitor.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid

import anyio.to_thread
import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.monitoring import channels
from modelyard.monitoring.actions import AUDIT_ACTOR, run_action
from modelyard.monitoring.evaluate import evaluate_window
from modelyard.monitoring.profile import Profile, dumps, loads
from modelyard.monitoring.references import reference_from_version
from modelyard.monitoring.rules import parse_expr
from modelyard.monitoring.window import WindowSummary, summarise_rows

__all__ = ["Monitoring", "monitoring_for"]

log = logging.getLogger("modelyard.monitoring")

_RETENTION_MS = 3_600_000
_NEGATIVE_CACHE_MS = 300_000
_SEND_CONCURRENCY = 8


def now_ms() -> int:
    return int(time.time() * 1000)


def _summarise_blob(rows: list[tuple]) -> bytes:
    return dumps(summarise_rows(rows).to_dict())


def monitoring_for(services) -> "Monitoring":
    """The process's :class:`Monitoring` for these services (made on first use)."""
    found = getattr(services, "_monitoring", None)
    if found is None:
        found = Monitoring(services)
        setattr(services, "_monitoring", found)
    return found


class Monitoring:
    def __init__(self, services):
        self.services = services
        self.settings = services.settings
        self.bucket_ms = self.settings.monitor_bucket_seconds * 1000
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._refs: dict[str, Profile] = {}
        self._missing_refs: dict[tuple, int] = {}
        self._last_sweep = 0
        self._last_retention = 0
        self._last_warm = 0
        self._sweep_cursor = now_ms() - 7 * 86_400_000

    @property
    def sweep_ms(self) -> int:
        """How often new model versions are looked for (ten ticks, between 1 and 30 seconds)."""
        return min(30_000, max(1000, 10 * self.settings.monitor_tick_ms))

    @property
    def delay_ms(self) -> int:
        """How long after a window ends it is evaluated: model servers ship logs in batches."""
        return min(self.bucket_ms, 5000)

    # -- evaluation ----------------------------------------------------------------------------------
    def align_end(self, at_ms: int) -> int:
        """A window end at the bucket boundary at or after ``at_ms``."""
        return -(-at_ms // self.bucket_ms) * self.bucket_ms

    def first_end(self, config: dict, now: int) -> int:
        every = config["every_seconds"] * 1000
        return (now // every + 1) * every

    @staticmethod
    def next_end(monitor: dict, previous: int, now: int) -> int:
        every = monitor["config"]["every_seconds"] * 1000
        nxt = previous + every
        if nxt + every <= now:  # far behind (the server was down): skip to the newest window
            nxt = now - now % every
        return nxt

    async def window(self, project: str, deployment: str, start_ms: int, end_ms: int) -> WindowSummary:
        blobs = await self.services.stores.predictions.summaries(project, deployment, start_ms, end_ms,
                                                                 self.bucket_ms, _summarise_blob)
        return await anyio.to_thread.run_sync(
            lambda: WindowSummary.merge([WindowSummary.from_dict(loads(b)) for b in blobs]))

    async def reference_for(self, project: str, monitor: dict, window: WindowSummary) -> tuple[Profile | None, dict]:
        """The reference profile a window is compared with (see evaluate.py: ``reference``)."""
        stores = self.services.stores
        ref_cfg = monitor["config"].get("reference") or {}
        if ref_cfg.get("reference_id"):
            info, blob = await stores.monitors.get_reference(project, ref_cfg["reference_id"], with_profile=True)
            return self._profile(info["reference_id"], blob), info
        model_name, version = ref_cfg.get("model_name"), ref_cfg.get("version")
        if model_name is None:
            deployments = getattr(stores, "deployments", None)  # the serving issue's store
            try:
                model_name = deployments and (await deployments.get(project, monitor["deployment"])).get("model_name")
            except MlflowError:
                model_name = None
        if model_name is None:
            served = await stores.predictions.versions_served(project, monitor["deployment"], limit_days=2)
            model_name = served[0][0] if served else None
        if model_name is None:
            return None, {}
        if version is None and window.versions:
            version = max(window.versions, key=window.versions.get)
        found = await stores.monitors.find_reference(project, model_name, version)
        if (found is None or found[0].get("model_version") != str(version)) and version and str(version).isdigit():
            key = (project, model_name, str(version))
            if now_ms() - self._missing_refs.get(key, 0) > _NEGATIVE_CACHE_MS:
                try:
                    made = await reference_from_version(self.services, project, model_name, str(version), once=True)
                except Exception as exc:  # noqa: BLE001 - an unreadable dataset leaves the window unjudged
                    if not isinstance(exc, MlflowError):
                        log.warning("reference profile for %s/%s: %s", model_name, version, exc)
                    made = None
                if made is None:
                    self._missing_refs[key] = now_ms()
                else:
                    found = await stores.monitors.find_reference(project, model_name, version)
        if found is None:
            return None, {"model_name": model_name, **({"model_version": str(version)} if version else {})}
        info, blob = found
        return self._profile(info["reference_id"], blob), info

    def _profile(self, reference_id: str, blob: bytes) -> Profile:
        prof = self._refs.get(reference_id)
        if prof is None:
            prof = Profile.from_dict(loads(blob))
            if len(self._refs) > 64:
                self._refs.clear()
            self._refs[reference_id] = prof
        return prof

    async def evaluate(self, project: str, monitor: dict, end_ms: int) -> dict:
        """Evaluate the window ending at ``end_ms``, store the results and apply the alert rules."""
        cfg = monitor["config"]
        start_ms = end_ms - cfg["window_seconds"] * 1000
        try:
            window = await self.window(project, monitor["deployment"], start_ms, end_ms)
            reference, ref_info = await self.reference_for(project, monitor, window)
            series, report = await anyio.to_thread.run_sync(
                lambda: evaluate_window(cfg, window, reference, start_ms, end_ms))
            report["reference"] = ref_info
        except Exception as exc:
            if not isinstance(exc, MlflowError):
                log.exception("monitor %s failed", monitor["name"])
            await self.services.stores.monitors.record(monitor["monitor_id"], end_ms, [], None, "error", str(exc))
            raise
        await self.services.stores.monitors.record(monitor["monitor_id"], end_ms, series, dumps(report), "ok", None)
        alerts = await self.apply_rules(project, monitor, series)
        return {"monitor": monitor["name"], "ts_ms": end_ms, "rows": window.rows,
                "series": [{"metric": m, "feature": f, "value": v} for m, f, v in series],
                "report": report, "alerts": alerts}

    async def apply_rules(self, project: str, monitor: dict, series: list[tuple[str, str, float]]) -> dict:
        out = {}
        store = self.services.stores.alerts
        for rule in await store.rules_for_monitor(project, monitor["name"]):
            expr = parse_expr(rule["expr"])
            samples = []
            for metric, feature, value in series:
                labels = {"monitor": monitor["name"], "deployment": monitor["deployment"]}
                if feature:
                    labels["feature"] = feature
                if expr.selects(metric, labels):
                    samples.append(({**labels, "metric": metric}, value))
            summary = await store.apply(project, rule, monitor["name"], samples, now_ms())
            out[rule["name"]] = summary
            for kind in ("pending", "firing", "resolved"):
                if summary.get(kind):
                    # Alert transitions are audit events too (notifications and actions are recorded
                    # where they happen).
                    self.services.audit.record(project, AUDIT_ACTOR, f"alert {kind}", 200, "alert_rule",
                                               rule["name"], details=f"{summary[kind]} alert(s), monitor "
                                                                     f"{monitor['name']}")
        return out

    # -- scheduler -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None and not self.settings.disable_monitor_scheduler:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="modelyard-monitoring")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except sa.exc.OperationalError as exc:
                log.warning("monitoring tick: database unavailable (%s)", exc)
            except Exception:  # noqa: BLE001 - the scheduler outlives any one failure
                log.exception("monitoring tick failed")
            await asyncio.sleep(self.settings.monitor_tick_ms / 1000)

    async def tick(self) -> None:
        stores = self.services.stores
        now = now_ms()
        for project, monitor, end_ms in await stores.monitors.claim_due(now, self.delay_ms, self.next_end):
            try:
                await self.evaluate(project, monitor, end_ms)
            except Exception:  # noqa: BLE001 - recorded on the monitor; the others still run
                pass
        await self.deliver_due()
        await self.run_actions()
        if now - self._last_warm >= 5 * self.settings.monitor_tick_ms:
            self._last_warm = now
            await self.warm_buckets(now)
        if now - self._last_sweep >= self.sweep_ms:
            self._last_sweep = now
            if await stores.monitors.acquire_lease("reference-sweep", self.owner, self.sweep_ms * 2):
                await self.sweep_references()
        if now - self._last_retention >= _RETENTION_MS:
            self._last_retention = now
            if await stores.monitors.acquire_lease("retention", self.owner, _RETENTION_MS):
                await self.retention()

    async def deliver_due(self) -> int:
        stores = self.services.stores
        items = await stores.notifications.claim_deliveries(now_ms())
        if not items:
            return 0
        sem = asyncio.Semaphore(_SEND_CONCURRENCY)

        async def one(item):
            async with sem:
                error = None
                try:
                    await anyio.to_thread.run_sync(channels.send, item["target"], item["payload"], self.settings)
                except channels.DeliveryError as exc:
                    error = str(exc)
                except Exception as exc:  # noqa: BLE001 - any failure is recorded and retried
                    error = f"{type(exc).__name__}: {exc}"
                # Audited before the delivery is marked finished, so whoever sees it finished finds the event.
                self.services.audit.record(
                    item["project"], AUDIT_ACTOR, f"notification {item['kind']}",
                    200 if error is None else 502, "notification_channel", item["channel"] or item["target"]["type"],
                    details=error or "sent")
                done = await stores.notifications.finish_delivery(item["delivery_id"], error is None, error, now_ms())
                status = done.get("status", "retrying")
                if status in ("sent", "failed"):
                    await stores.alerts.record_event(item["project"], f"notification_{status}", item["rule_id"], {
                        "delivery_id": item["delivery_id"], "channel": item["channel"], "kind": item["kind"],
                        "attempts": done["attempts"], **({"error": error} if error else {})})

        await asyncio.gather(*(one(i) for i in items))
        return len(items)

    async def run_actions(self) -> int:
        stores = self.services.stores
        items = await stores.notifications.claim_actions()
        for item in items:
            try:
                status, result = await run_action(self.services, item)
            except Exception as exc:  # noqa: BLE001 - recorded on the action
                log.exception("alert action failed")
                status, result = "failed", {"error": f"{type(exc).__name__}: {exc}"}
            if item["type"] != "rollback" or status != "done":  # a rollback done audited itself
                self.services.audit.record(item["project"], AUDIT_ACTOR, f"alert action {item['type']}",
                                           200 if status == "done" else 409, "alert_action", item["action_id"],
                                           details=str(result.get("error") or ""))
            await stores.notifications.finish_action(item["action_id"], status, result)
            await stores.alerts.record_event(item["project"], f"action_{status}", item["rule_id"],
                                             {"action_id": item["action_id"], "type": item["type"], **result})
        return len(items)

    async def warm_buckets(self, now: int, per_deployment: int = 4) -> None:
        """Summarise closed buckets that changed, a few at a time, so that the evaluation at the end
        of a long window finds its buckets summarised instead of summarising them all at once."""
        closed = now - self.delay_ms
        closed -= closed % self.bucket_ms
        seen = set()
        for m in await self.services.stores.monitors.list(None):
            key = (m["project"], m["deployment"])
            if not m["enabled"] or key in seen:
                continue
            seen.add(key)
            start = closed - m["config"]["window_seconds"] * 1000
            await self.services.stores.predictions.summaries(m["project"], m["deployment"], start, closed,
                                                             self.bucket_ms, _summarise_blob, limit=per_deployment)

    async def sweep_references(self) -> int:
        """Profile the training data of versions registered since the last sweep."""
        from modelyard.store.schema import model_versions as MV

        cursor = self._sweep_cursor

        def read(conn):
            cols = [MV.c.name, MV.c.version, MV.c.creation_time, MV.c.run_id]
            if "project" in MV.c:
                cols.append(MV.c.project)
            return conn.execute(sa.select(*cols).where(MV.c.creation_time > cursor, MV.c.run_id.isnot(None))
                                .order_by(MV.c.creation_time).limit(200)).all()

        rows = await self.services.db.read(read)
        made = 0
        for row in rows:
            project = getattr(row, "project", "default")
            self._sweep_cursor = max(self._sweep_cursor, row.creation_time)
            if await self.services.stores.monitors.has_reference(project, row.name, str(row.version)):
                continue
            try:
                if await reference_from_version(self.services, project, row.name, str(row.version), once=True):
                    made += 1
            except Exception:  # noqa: BLE001 - one bad dataset does not stop the sweep
                log.exception("reference profile for %s/%s failed", row.name, row.version)
        return made

    async def retention(self) -> None:
        cutoff = now_ms() - self.settings.prediction_retention_days * 86_400_000
        await self.services.stores.predictions.drop_before(cutoff)
        await self.services.stores.monitors.drop_series_before(cutoff)
        await self.services.stores.alerts.drop_before(cutoff)
        await self.services.stores.notifications.drop_before(cutoff)
        if self.settings.audit_retention_days > 0:
            await self.services.audit.drop_before(now_ms() - self.settings.audit_retention_days * 86_400_000)
