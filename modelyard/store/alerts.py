"""Alert rules, alert instances, their groups, silences and the alert history.

:meth:`AlertStore.apply` is where a rule meets new monitor results: in one transaction it moves
each alert instance along (``monitoring/rules.py`` decides how), records the transitions, decides
per notification group whether to notify (a new incident, new alerts after ``group_interval``, a
repeat after ``repeat_interval``, or the resolution), queues the deliveries and the actions. One
transaction means a crash never leaves an alert firing without its notification queued, or
notified twice.
"""
from __future__ import annotations

import datetime as dt
import math
import re
import uuid

import orjson
import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.monitoring import rules as R
from modelyard.store._common import now_ms
from modelyard.store.db import Database
from modelyard.store.notifications import enqueue_sync, queue_action_sync
from modelyard.store.schema import alert_events as E
from modelyard.store.schema import alert_groups as G
from modelyard.store.schema import alert_rules as AR
from modelyard.store.schema import alerts as A
from modelyard.store.schema import notification_channels as C
from modelyard.store.schema import silences as S

__all__ = ["AlertStore", "event_sync"]


def _rule(row) -> dict:
    return {"rule_id": row.rule_id, "name": row.name, **orjson.loads(row.spec), "enabled": bool(row.enabled),
            "created_ms": row.created_ms, "updated_ms": row.updated_ms,
            **({"created_by": row.created_by} if row.created_by else {})}


def _alert(row, rule_name: str | None = None) -> dict:
    d = {"alert_id": row.alert_id, "rule_id": row.rule_id, "labels": orjson.loads(row.labels), "state": row.state,
         "active_at_ms": row.active_at_ms, "last_eval_ms": row.last_eval_ms}
    if rule_name:
        d["rule"] = rule_name
    for k in ("value", "fired_at_ms", "resolved_at_ms"):
        if getattr(row, k) is not None:
            d[k] = getattr(row, k)
    return d


def _silence(row) -> dict:
    now = now_ms()
    state = "active" if row.starts_ms <= now < row.ends_ms else ("pending" if now < row.starts_ms else "expired")
    d = {"silence_id": row.silence_id, "matchers": orjson.loads(row.matchers), "starts_ms": row.starts_ms,
         "ends_ms": row.ends_ms, "state": state, "created_ms": row.created_ms}
    if row.comment:
        d["comment"] = row.comment
    if row.created_by:
        d["created_by"] = row.created_by
    return d


def event_sync(conn, project: str, kind: str, rule_id: str | None = None, alert_id: str | None = None,
               detail: dict | None = None, ts: int | None = None) -> None:
    conn.execute(E.insert().values(event_id=uuid.uuid4().hex, project=project, ts_ms=ts or now_ms(), kind=kind,
                                   rule_id=rule_id, alert_id=alert_id,
                                   detail=orjson.dumps(detail).decode() if detail is not None else None))


class AlertStore:
    def __init__(self, db: Database):
        self.db = db

    # -- rules ---------------------------------------------------------------------------------------
    async def create_rule(self, project: str, name: str, spec: dict, enabled: bool, created_by: str | None) -> dict:
        now = now_ms()
        values = {"rule_id": uuid.uuid4().hex, "project": project, "name": name, "spec": orjson.dumps(spec).decode(),
                  "enabled": enabled, "created_ms": now, "updated_ms": now, "created_by": created_by}

        def write(conn):
            if conn.execute(sa.select(AR.c.rule_id).where(AR.c.project == project, AR.c.name == name)).first():
                raise MlflowError.exists(f"Alert rule '{name}' already exists.")
            conn.execute(AR.insert().values(**values))
            event_sync(conn, project, "rule_created", values["rule_id"], detail={"name": name, "by": created_by})
            return _rule(conn.execute(sa.select(AR).where(AR.c.rule_id == values["rule_id"])).one())

        return await self.db.write(write)

    async def update_rule(self, project: str, name: str, spec: dict | None, enabled: bool | None, by: str | None) -> dict:
        def write(conn):
            row = conn.execute(sa.select(AR).where(AR.c.project == project, AR.c.name == name)).first()
            if row is None:
                raise MlflowError.not_found(f"Alert rule '{name}' not found.")
            values = {"updated_ms": now_ms()}
            if spec is not None:
                values["spec"] = orjson.dumps(spec).decode()
            if enabled is not None:
                values["enabled"] = enabled
            conn.execute(AR.update().where(AR.c.rule_id == row.rule_id).values(**values))
            event_sync(conn, project, "rule_updated", row.rule_id, detail={"name": name, "by": by})
            return _rule(conn.execute(sa.select(AR).where(AR.c.rule_id == row.rule_id)).one())

        return await self.db.write(write)

    async def get_rule(self, project: str, name: str) -> dict:
        def read(conn):
            row = conn.execute(sa.select(AR).where(AR.c.project == project, AR.c.name == name)).first()
            if row is None:
                raise MlflowError.not_found(f"Alert rule '{name}' not found.")
            return _rule(row)

        return await self.db.read(read)

    async def list_rules(self, project: str) -> list[dict]:
        def read(conn):
            return [_rule(r) for r in conn.execute(sa.select(AR).where(AR.c.project == project).order_by(AR.c.name))]

        return await self.db.read(read)

    async def delete_rule(self, project: str, name: str, by: str | None) -> None:
        def write(conn):
            row = conn.execute(sa.select(AR.c.rule_id).where(AR.c.project == project, AR.c.name == name)).first()
            if row is None:
                raise MlflowError.not_found(f"Alert rule '{name}' not found.")
            conn.execute(A.delete().where(A.c.rule_id == row.rule_id, A.c.state.in_(("pending", "firing"))))
            conn.execute(G.delete().where(G.c.rule_id == row.rule_id))
            conn.execute(AR.delete().where(AR.c.rule_id == row.rule_id))
            event_sync(conn, project, "rule_deleted", row.rule_id, detail={"name": name, "by": by})

        await self.db.write(write)

    async def rules_for_monitor(self, project: str, monitor: str) -> list[dict]:
        """Enabled rules whose expression could select this monitor's series."""
        rules = await self.list_rules(project)
        out = []
        for rule in rules:
            if not rule["enabled"]:
                continue
            expr = R.parse_expr(rule["expr"])
            if R.matches({"monitor": monitor}, [m for m in expr.matchers if m[0] == "monitor"]):
                out.append(rule)
        return out

    # -- evaluation ----------------------------------------------------------------------------------
    async def apply(self, project: str, rule: dict, monitor: str, samples: list[tuple[dict, float]], now: int) -> dict:
        """Move the rule's alert instances for this monitor's new results; see the module docstring.
        ``samples`` are (labels, value) of the series the expression selects. Returns a summary."""
        expr = R.parse_expr(rule["expr"])
        for_ms = int(rule.get("for_seconds", 0) * 1000)
        keep_ms = int(rule.get("keep_firing_for_seconds", 0) * 1000)
        extra = {k: str(v) for k, v in (rule.get("labels") or {}).items()}
        group_by = rule.get("group_by") or ["alertname", "deployment"]

        def write(conn):
            rule_id = rule["rule_id"]
            current = {}
            for labels, value in samples:
                full = {**labels, **extra, "alertname": rule["name"], "severity": rule.get("severity", "warning")}
                current[R.fingerprint(full)] = (full, value, expr.holds(value))
            open_rows = conn.execute(sa.select(A).where(A.c.rule_id == rule_id, A.c.state.in_(("pending", "firing")))).all()
            open_alerts = {r.fingerprint: r for r in open_rows if orjson.loads(r.labels).get("monitor") == monitor}
            silences = [orjson.loads(s.matchers) for s in conn.execute(
                sa.select(S.c.matchers).where(S.c.project == project, S.c.starts_ms <= now, S.c.ends_ms > now))]
            changed_groups: set[str] = set()
            summary = {"pending": 0, "firing": 0, "resolved": 0}
            for fp in set(current) | set(open_alerts):
                labels, value, holds = current.get(fp, (None, None, False))
                row = open_alerts.get(fp)
                before = None if row is None else {
                    "state": row.state, "active_at_ms": row.active_at_ms, "fired_at_ms": row.fired_at_ms,
                    "resolved_at_ms": row.resolved_at_ms, "last_true_ms": row.last_true_ms, "value": row.value}
                after, event = R.transition(before, holds, value, now, for_ms, keep_ms)
                if labels is None and row is not None:
                    labels = orjson.loads(row.labels)
                if row is None and after is not None:
                    alert_id = uuid.uuid4().hex
                    conn.execute(A.insert().values(
                        alert_id=alert_id, project=project, rule_id=rule_id, fingerprint=fp,
                        labels=orjson.dumps(labels).decode(), state=after["state"], value=_num(after["value"]),
                        active_at_ms=after["active_at_ms"], fired_at_ms=after["fired_at_ms"],
                        last_true_ms=after["last_true_ms"], last_eval_ms=now))
                elif row is not None:
                    alert_id = row.alert_id
                    if after is None:  # a pending alert whose condition went away: gone, not resolved
                        conn.execute(A.delete().where(A.c.alert_id == alert_id))
                    else:
                        conn.execute(A.update().where(A.c.alert_id == alert_id).values(
                            state=after["state"], value=_num(after["value"]), fired_at_ms=after["fired_at_ms"],
                            resolved_at_ms=after["resolved_at_ms"], last_true_ms=after["last_true_ms"],
                            last_eval_ms=now))
                else:
                    continue
                if event:
                    event_sync(conn, project, event, rule_id, alert_id, {"labels": labels, "value": _num(value)}, now)
                    if event in summary:
                        summary[event] += 1
                changed_groups.add(R.group_key(labels, group_by)[0])
            # Groups already firing are looked at too: repeat intervals run on without changes.
            for g in conn.execute(sa.select(G.c.group_key).where(G.c.rule_id == rule_id, G.c.state == "firing")):
                changed_groups.add(g.group_key)
            summary["notifications"] = self._notify_groups(conn, project, rule, changed_groups, group_by, silences, now)
            return summary

        return await self.db.write(write)

    def _notify_groups(self, conn, project, rule, keys, group_by, silences, now) -> int:
        rule_id = rule["rule_id"]
        group_ms = int(rule.get("group_interval_seconds", R.DEFAULT_GROUP_INTERVAL) * 1000)
        repeat_ms = int(rule.get("repeat_interval_seconds", R.DEFAULT_REPEAT_INTERVAL) * 1000)
        # Open alerts, and those resolved lately (a resolution notice lists them); not all history.
        rows = conn.execute(sa.select(A).where(A.c.rule_id == rule_id, sa.or_(
            A.c.state.in_(("pending", "firing")), A.c.resolved_at_ms >= now - 86_400_000))).all()
        sent = 0
        for key in keys:
            members = [r for r in rows if R.group_key(orjson.loads(r.labels), group_by)[0] == key]
            firing = [r for r in members if r.state == "firing"
                      and not any(R.matches(orjson.loads(r.labels), [tuple(m) for m in s]) for s in silences)]
            group = conn.execute(sa.select(G).where(G.c.rule_id == rule_id, G.c.group_key == key)).first()
            labels = R.group_key(orjson.loads(members[0].labels), group_by)[1] if members else (
                orjson.loads(group.labels) if group else {})
            kind = None
            if firing:
                ids = sorted(r.alert_id for r in firing)
                notified = set(orjson.loads(group.notified_alerts)) if group and group.notified_alerts else set()
                if group is None or group.state != "firing":
                    kind = "firing"
                elif set(ids) - notified and now - (group.notified_ms or 0) >= group_ms:
                    kind = "firing"
                elif now - (group.notified_ms or 0) >= repeat_ms:
                    kind = "firing"
                new_incident = group is None or group.state != "firing"
                if kind:
                    payload_alerts = firing
                    self._upsert_group(conn, project, rule_id, key, labels, "firing", now, ids)
                else:
                    continue
            else:
                if group is None or group.state != "firing":
                    continue
                resolved_ids = set(orjson.loads(group.notified_alerts or "[]"))
                payload_alerts = [r for r in members if r.alert_id in resolved_ids]
                self._upsert_group(conn, project, rule_id, key, labels, "resolved", now, [])
                new_incident = False
                if not rule.get("send_resolved", True):
                    event_sync(conn, project, "group_resolved", rule_id, detail={"group": key}, ts=now)
                    continue
                kind = "resolved"
            payload = _payload(rule, key, labels, kind, payload_alerts, now)
            for channel in rule.get("channels") or []:
                target = conn.execute(sa.select(C).where(C.c.project == project, C.c.name == channel)).first()
                if target is None:
                    event_sync(conn, project, "notification_skipped", rule_id,
                               detail={"group": key, "channel": channel, "reason": "no such channel"}, ts=now)
                    continue
                enqueue_sync(conn, project, channel, {"type": target.type, "config": orjson.loads(target.config)},
                             kind, payload, rule_id, key, now)
                sent += 1
            event_sync(conn, project, f"group_{kind}", rule_id, detail={"group": key, "alerts": len(payload_alerts),
                                                                        "channels": rule.get("channels") or []}, ts=now)
            if kind == "firing" and new_incident:
                for action in rule.get("actions") or []:
                    queue_action_sync(conn, project, rule_id, key, action, payload, now)
        return sent

    @staticmethod
    def _upsert_group(conn, project, rule_id, key, labels, state, now, ids):
        values = {"labels": orjson.dumps(labels).decode(), "state": state, "notified_ms": now,
                  "notified_alerts": orjson.dumps(ids).decode() if state == "firing" else None}
        if conn.execute(G.update().where(G.c.rule_id == rule_id, G.c.group_key == key).values(**values)).rowcount == 0:
            conn.execute(G.insert().values(rule_id=rule_id, group_key=key, project=project, **values))

    # -- alerts and history --------------------------------------------------------------------------
    async def list_alerts(self, project: str, states: list[str] | None, rule: str | None, limit: int) -> list[dict]:
        def read(conn):
            q = sa.select(A, AR.c.name).join(AR, AR.c.rule_id == A.c.rule_id).where(A.c.project == project)
            if states:
                q = q.where(A.c.state.in_(states))
            if rule:
                q = q.where(AR.c.name == rule)
            return [_alert(r, r.name) for r in conn.execute(q.order_by(A.c.active_at_ms.desc()).limit(limit))]

        return await self.db.read(read)

    async def events(self, project: str, kinds: list[str] | None, rule: str | None, limit: int,
                     before_ms: int | None) -> list[dict]:
        def read(conn):
            q = sa.select(E).where(E.c.project == project)
            if kinds:
                q = q.where(E.c.kind.in_(kinds))
            if rule:
                rid = conn.execute(sa.select(AR.c.rule_id).where(AR.c.project == project, AR.c.name == rule)).scalar()
                q = q.where(E.c.rule_id == rid)
            if before_ms is not None:
                q = q.where(E.c.ts_ms < before_ms)
            out = []
            for r in conn.execute(q.order_by(E.c.ts_ms.desc(), E.c.event_id).limit(limit)):
                d = {"event_id": r.event_id, "ts_ms": r.ts_ms, "kind": r.kind}
                for k in ("rule_id", "alert_id"):
                    if getattr(r, k):
                        d[k] = getattr(r, k)
                if r.detail:
                    d["detail"] = orjson.loads(r.detail)
                out.append(d)
            return out

        return await self.db.read(read)

    async def record_event(self, project: str, kind: str, rule_id: str | None = None, detail: dict | None = None) -> None:
        await self.db.write(lambda conn: event_sync(conn, project, kind, rule_id, None, detail))

    async def drop_before(self, cutoff_ms: int) -> None:
        """Forget resolved alerts, history and expired silences older than the retention period."""

        def write(conn):
            conn.execute(A.delete().where(A.c.state == "resolved", A.c.resolved_at_ms < cutoff_ms))
            conn.execute(E.delete().where(E.c.ts_ms < cutoff_ms))
            conn.execute(S.delete().where(S.c.ends_ms < cutoff_ms))

        await self.db.write(write)

    # -- silences ------------------------------------------------------------------------------------
    async def create_silence(self, project: str, matchers: list, starts_ms: int, ends_ms: int, comment: str | None,
                             by: str | None) -> dict:
        values = {"silence_id": uuid.uuid4().hex, "project": project, "matchers": orjson.dumps(matchers).decode(),
                  "starts_ms": starts_ms, "ends_ms": ends_ms, "comment": comment, "created_by": by,
                  "created_ms": now_ms()}

        def write(conn):
            conn.execute(S.insert().values(**values))
            event_sync(conn, project, "silence_created", detail={"silence_id": values["silence_id"],
                                                                  "matchers": matchers, "by": by})
            return _silence(conn.execute(sa.select(S).where(S.c.silence_id == values["silence_id"])).one())

        return await self.db.write(write)

    async def list_silences(self, project: str) -> list[dict]:
        def read(conn):
            return [_silence(r) for r in conn.execute(
                sa.select(S).where(S.c.project == project).order_by(S.c.created_ms.desc()))]

        return await self.db.read(read)

    async def expire_silence(self, project: str, silence_id: str, by: str | None) -> None:
        def write(conn):
            now = now_ms()
            res = conn.execute(S.update().where(S.c.project == project, S.c.silence_id == silence_id).values(
                ends_ms=sa.func.min(S.c.ends_ms, now) if self.db.is_sqlite else sa.func.least(S.c.ends_ms, now)))
            if not res.rowcount:
                raise MlflowError.not_found(f"Silence '{silence_id}' not found.")
            event_sync(conn, project, "silence_expired", detail={"silence_id": silence_id, "by": by})

        await self.db.write(write)


def _num(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def _payload(rule: dict, key: str, group_labels: dict, status: str, rows, now: int) -> dict:
    """Alertmanager's webhook body, so receivers written for Alertmanager read ours too."""
    alerts = []
    for r in rows:
        labels = orjson.loads(r.labels)
        alerts.append({
            "status": "firing" if status == "firing" else "resolved", "labels": labels,
            "annotations": _annotations(rule, labels, r.value), "startsAt": _iso(r.fired_at_ms or r.active_at_ms),
            "endsAt": _iso(r.resolved_at_ms or now) if status == "resolved" else "0001-01-01T00:00:00Z",
            "value": _num(r.value), "fingerprint": r.fingerprint,
        })
    common = {}
    if alerts:
        first = alerts[0]["labels"]
        common = {k: v for k, v in first.items() if all(a["labels"].get(k) == v for a in alerts)}
    return {"version": "4", "status": status, "groupKey": f"{rule['name']}:{key}", "groupLabels": group_labels,
            "commonLabels": common, "commonAnnotations": rule.get("annotations") or {}, "alerts": alerts,
            "rule": rule["name"], "severity": rule.get("severity", "warning"), "truncatedAlerts": 0}


def _annotations(rule: dict, labels: dict, value) -> dict:
    """Annotations with ``{{ $labels.x }}`` and ``{{ $value }}`` filled in, as Prometheus templates them."""
    def fill(text: str) -> str:
        text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: str(labels.get(m.group(1), "")), text)
        return re.sub(r"\{\{\s*\$value\s*\}\}", lambda m: f"{value:.4g}" if isinstance(value, float) else str(value), text)

    return {k: fill(str(v)) for k, v in (rule.get("annotations") or {}).items()}


def _iso(ms: int | None) -> str:
    if ms is None:
        return "0001-01-01T00:00:00Z"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
