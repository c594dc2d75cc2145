"""Notification channels, the delivery queue and the action log.

A delivery is queued in the same transaction that decides to notify, with a copy of its channel's
target, and sent by the scheduler: claimed with a conditional UPDATE (so one server process sends
it), retried with exponential backoff on failure, and kept with its attempts and last error.
Actions queued on firing (roll an alias back, call a webhook) are claimed and recorded the same way.
"""
from __future__ import annotations

import uuid

import orjson
import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.store._common import now_ms
from modelyard.store.db import Database
from modelyard.store.schema import alert_actions as ACT
from modelyard.store.schema import notification_channels as C
from modelyard.store.schema import notification_deliveries as D

__all__ = ["NotificationStore", "enqueue_sync", "queue_action_sync", "MAX_ATTEMPTS", "backoff_ms"]

MAX_ATTEMPTS = 8
_CLAIM_MS = 60_000  # a claimed delivery is hidden this long; a process that died mid-send is retried after


def backoff_ms(attempts: int) -> int:
    """1 s, 2 s, 4 s, ... capped at 5 minutes."""
    return min(1000 * 2 ** max(attempts - 1, 0), 300_000)


def enqueue_sync(conn, project: str, channel: str | None, target: dict, kind: str, payload: dict,
                 rule_id: str | None, group_key: str | None, now: int | None = None) -> str:
    delivery_id = uuid.uuid4().hex
    now = now or now_ms()
    conn.execute(D.insert().values(
        delivery_id=delivery_id, project=project, channel=channel, target=orjson.dumps(target).decode(),
        rule_id=rule_id, group_key=group_key, kind=kind, payload=orjson.dumps(payload).decode(), status="pending",
        attempts=0, next_attempt_ms=now, created_ms=now))
    return delivery_id


def queue_action_sync(conn, project: str, rule_id: str | None, group_key: str | None, action: dict,
                      payload: dict, now: int | None = None) -> str:
    action_id = uuid.uuid4().hex
    conn.execute(ACT.insert().values(
        action_id=action_id, project=project, rule_id=rule_id, group_key=group_key, type=action.get("type", "?"),
        params=orjson.dumps({"action": action, "alert": payload}).decode(), status="pending",
        created_ms=now or now_ms()))
    return action_id


def _channel(row) -> dict:
    return {"channel_id": row.channel_id, "name": row.name, "type": row.type, "config": _redacted(orjson.loads(row.config)),
            "created_ms": row.created_ms}


def _redacted(config: dict) -> dict:
    """Passwords and secret headers are write-only: listings show that they are set, not what they are."""
    out = dict(config)
    if "password" in out:
        out["password"] = "***"
    if isinstance(out.get("headers"), dict):
        out["headers"] = {k: ("***" if k.lower() in ("authorization", "x-api-key") else v) for k, v in out["headers"].items()}
    return out


def _delivery(row) -> dict:
    d = {"delivery_id": row.delivery_id, "kind": row.kind, "status": row.status, "attempts": row.attempts,
         "created_ms": row.created_ms, "target_type": orjson.loads(row.target).get("type")}
    for k in ("channel", "rule_id", "group_key", "last_error", "sent_ms"):
        if getattr(row, k) is not None:
            d[k] = getattr(row, k)
    if row.status == "pending":
        d["next_attempt_ms"] = row.next_attempt_ms
    return d


class NotificationStore:
    def __init__(self, db: Database):
        self.db = db

    # -- channels ------------------------------------------------------------------------------------
    async def create_channel(self, project: str, name: str, type_: str, config: dict) -> dict:
        values = {"channel_id": uuid.uuid4().hex, "project": project, "name": name, "type": type_,
                  "config": orjson.dumps(config).decode(), "created_ms": now_ms()}

        def write(conn):
            if conn.execute(sa.select(C.c.channel_id).where(C.c.project == project, C.c.name == name)).first():
                raise MlflowError.exists(f"Notification channel '{name}' already exists.")
            conn.execute(C.insert().values(**values))
            return _channel(conn.execute(sa.select(C).where(C.c.channel_id == values["channel_id"])).one())

        return await self.db.write(write)

    async def get_channel(self, project: str, name: str, secrets: bool = False) -> dict:
        def read(conn):
            row = conn.execute(sa.select(C).where(C.c.project == project, C.c.name == name)).first()
            if row is None:
                raise MlflowError.not_found(f"Notification channel '{name}' not found.")
            d = _channel(row)
            if secrets:
                d["config"] = orjson.loads(row.config)
            return d

        return await self.db.read(read)

    async def list_channels(self, project: str) -> list[dict]:
        def read(conn):
            return [_channel(r) for r in conn.execute(sa.select(C).where(C.c.project == project).order_by(C.c.name))]

        return await self.db.read(read)

    async def delete_channel(self, project: str, name: str) -> None:
        def write(conn):
            if not conn.execute(C.delete().where(C.c.project == project, C.c.name == name)).rowcount:
                raise MlflowError.not_found(f"Notification channel '{name}' not found.")

        await self.db.write(write)

    # -- deliveries ----------------------------------------------------------------------------------
    async def enqueue(self, project: str, channel: str | None, target: dict, kind: str, payload: dict) -> str:
        return await self.db.write(lambda conn: enqueue_sync(conn, project, channel, target, kind, payload, None, None))

    async def claim_deliveries(self, now: int, limit: int = 20) -> list[dict]:
        """Claim due deliveries for this process: each row is moved out of sight for a minute with a
        conditional UPDATE, so a delivery is sent by one process at a time."""

        def write(conn):
            rows = conn.execute(sa.select(D).where(D.c.status == "pending", D.c.next_attempt_ms <= now)
                                .order_by(D.c.next_attempt_ms).limit(limit)).all()
            out = []
            for r in rows:
                res = conn.execute(D.update().where(D.c.delivery_id == r.delivery_id, D.c.status == "pending",
                                                    D.c.next_attempt_ms == r.next_attempt_ms)
                                   .values(next_attempt_ms=now + _CLAIM_MS))
                if res.rowcount == 1:
                    out.append({"delivery_id": r.delivery_id, "project": r.project, "channel": r.channel,
                                "target": orjson.loads(r.target), "kind": r.kind, "payload": orjson.loads(r.payload),
                                "attempts": r.attempts, "rule_id": r.rule_id, "group_key": r.group_key})
            return out

        return await self.db.write(write)

    async def finish_delivery(self, delivery_id: str, ok: bool, error: str | None, now: int) -> dict:
        def write(conn):
            row = conn.execute(sa.select(D).where(D.c.delivery_id == delivery_id)).one()
            attempts = row.attempts + 1
            if ok:
                values = {"status": "sent", "attempts": attempts, "sent_ms": now, "last_error": None}
            elif attempts >= MAX_ATTEMPTS:
                values = {"status": "failed", "attempts": attempts, "last_error": error}
            else:
                values = {"attempts": attempts, "last_error": error, "next_attempt_ms": now + backoff_ms(attempts)}
            conn.execute(D.update().where(D.c.delivery_id == delivery_id).values(**values))
            return {**values, "project": row.project, "rule_id": row.rule_id, "channel": row.channel, "kind": row.kind}

        return await self.db.write(write)

    async def list_deliveries(self, project: str, status: str | None, channel: str | None, limit: int) -> list[dict]:
        def read(conn):
            q = sa.select(D).where(D.c.project == project)
            if status:
                q = q.where(D.c.status == status)
            if channel:
                q = q.where(D.c.channel == channel)
            return [_delivery(r) for r in conn.execute(q.order_by(D.c.created_ms.desc()).limit(limit))]

        return await self.db.read(read)

    async def drop_before(self, cutoff_ms: int) -> None:
        """Forget finished deliveries and actions older than the retention period."""

        def write(conn):
            conn.execute(D.delete().where(D.c.status != "pending", D.c.created_ms < cutoff_ms))
            conn.execute(ACT.delete().where(ACT.c.status.notin_(("pending", "running")), ACT.c.created_ms < cutoff_ms))

        await self.db.write(write)

    # -- actions -------------------------------------------------------------------------------------
    async def claim_actions(self, limit: int = 10) -> list[dict]:
        def write(conn):
            rows = conn.execute(sa.select(ACT).where(ACT.c.status == "pending").order_by(ACT.c.created_ms)
                                .limit(limit)).all()
            out = []
            for r in rows:
                if conn.execute(ACT.update().where(ACT.c.action_id == r.action_id, ACT.c.status == "pending")
                                .values(status="running")).rowcount == 1:
                    params = orjson.loads(r.params)
                    out.append({"action_id": r.action_id, "project": r.project, "rule_id": r.rule_id,
                                "group_key": r.group_key, "type": r.type, "action": params["action"],
                                "alert": params["alert"]})
            return out

        return await self.db.write(write)

    async def finish_action(self, action_id: str, status: str, result: dict) -> None:
        def write(conn):
            conn.execute(ACT.update().where(ACT.c.action_id == action_id).values(
                status=status, result=orjson.dumps(result).decode()))

        await self.db.write(write)

    async def list_actions(self, project: str, limit: int) -> list[dict]:
        def read(conn):
            out = []
            for r in conn.execute(sa.select(ACT).where(ACT.c.project == project)
                                  .order_by(ACT.c.created_ms.desc()).limit(limit)):
                params = orjson.loads(r.params)
                d = {"action_id": r.action_id, "type": r.type, "status": r.status, "created_ms": r.created_ms,
                     "params": params["action"]}
                for k in ("rule_id", "group_key"):
                    if getattr(r, k):
                        d[k] = getattr(r, k)
                if r.result:
                    d["result"] = orjson.loads(r.result)
                out.append(d)
            return out

        return await self.db.read(read)
