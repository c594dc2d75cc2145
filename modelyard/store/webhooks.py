"""Registry webhooks (MLflow's webhook API) and the record of their deliveries.

Webhooks belong to a project, as the registry does: a project's events reach its webhooks only.

Webhooks are soft-deleted, as MLflow does. A webhook's secret is kept so deliveries can be signed,
and is never returned by the API.
"""
from __future__ import annotations

import uuid

import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.store import search
from modelyard.store._common import now_ms
from modelyard.store.db import Database
from modelyard.store.schema import webhook_deliveries as D
from modelyard.store.schema import webhook_events as E
from modelyard.store.schema import webhooks as W

__all__ = ["WebhookStore"]

_UPDATABLE = ("name", "description", "url", "secret", "status")


class WebhookStore:
    def __init__(self, db: Database):
        self.db = db

    async def create(self, project: str, name: str, url: str, events: list[tuple[str, str]], description: str | None,
                     secret: str | None, status: str) -> dict:
        webhook_id = str(uuid.uuid4())

        def create(conn):
            t = now_ms()
            conn.execute(W.insert().values(webhook_id=webhook_id, project=project, name=name, url=url, description=description,
                                           secret=secret, status=status, creation_timestamp=t,
                                           last_updated_timestamp=t))
            conn.execute(E.insert(), [{"webhook_id": webhook_id, "entity": e, "action": a}
                                      for e, a in dict.fromkeys(events)])
            return _dicts(conn, [_row(conn, project, webhook_id)])[0]

        return await self.db.write(create)

    async def get(self, project: str, webhook_id: str, with_secret: bool = False) -> dict:
        def get(conn):
            return _dicts(conn, [_row(conn, project, webhook_id)], with_secret)[0]

        return await self.db.read(get)

    async def list(self, project: str, max_results: int, page_token: str | None) -> tuple[list[dict], str | None]:
        offset = search.decode_page_token(page_token)

        def run(conn):
            rows = conn.execute(sa.select(W).where(W.c.project == project, W.c.deleted_timestamp.is_(None))
                                .order_by(W.c.creation_timestamp.desc(), W.c.webhook_id)
                                .limit(max_results + 1).offset(offset)).all()
            token = search.encode_page_token(offset + max_results) if len(rows) > max_results else None
            return _dicts(conn, rows[:max_results]), token

        return await self.db.read(run)

    async def update(self, project: str, webhook_id: str, changes: dict, events: list[tuple[str, str]] | None) -> dict:
        def update(conn):
            _row(conn, project, webhook_id)
            values = {k: v for k, v in changes.items() if k in _UPDATABLE}
            values["last_updated_timestamp"] = now_ms()
            conn.execute(W.update().where(W.c.webhook_id == webhook_id).values(values))
            if events is not None:
                conn.execute(E.delete().where(E.c.webhook_id == webhook_id))
                conn.execute(E.insert(), [{"webhook_id": webhook_id, "entity": e, "action": a}
                                          for e, a in dict.fromkeys(events)])
            return _dicts(conn, [_row(conn, project, webhook_id)])[0]

        return await self.db.write(update)

    async def delete(self, project: str, webhook_id: str) -> None:
        def delete(conn):
            _row(conn, project, webhook_id)
            t = now_ms()
            conn.execute(W.update().where(W.c.webhook_id == webhook_id)
                         .values(deleted_timestamp=t, last_updated_timestamp=t))

        await self.db.write(delete)

    async def subscribers(self, project: str, events: list[tuple[str, str]]) -> list[dict]:
        """Active webhooks listening to any of ``events``, with their secrets and the event matched."""

        def read(conn):
            cond = sa.or_(*[(E.c.entity == e) & (E.c.action == a) for e, a in events])
            rows = conn.execute(
                sa.select(W, E.c.entity, E.c.action).join(E, E.c.webhook_id == W.c.webhook_id)
                .where(W.c.project == project, W.c.deleted_timestamp.is_(None), W.c.status == "ACTIVE", cond)).all()
            return [{"webhook_id": r.webhook_id, "url": r.url, "secret": r.secret,
                     "event": (r.entity, r.action)} for r in rows]

        return await self.db.read(read)

    async def record_delivery(self, delivery: dict) -> None:
        """Insert or update one delivery's outcome."""

        def write(conn):
            found = conn.execute(sa.select(D.c.delivery_id).where(D.c.delivery_id == delivery["delivery_id"])).first()
            if found is None:
                conn.execute(D.insert().values(**delivery))
            else:
                conn.execute(D.update().where(D.c.delivery_id == delivery["delivery_id"])
                             .values({k: v for k, v in delivery.items() if k != "delivery_id"}))

        await self.db.write(write)

    async def deliveries(self, project: str, webhook_id: str, max_results: int) -> list[dict]:
        def read(conn):
            _row(conn, project, webhook_id)
            rows = conn.execute(sa.select(D).where(D.c.webhook_id == webhook_id)
                                .order_by(D.c.creation_time.desc()).limit(max_results)).all()
            return [{str(k): v for k, v in r._asdict().items() if v is not None} for r in rows]

        return await self.db.read(read)


def _row(conn, project: str, webhook_id: str):
    row = conn.execute(sa.select(W).where(W.c.webhook_id == webhook_id, W.c.project == project,
                                          W.c.deleted_timestamp.is_(None))).first()
    if row is None:
        raise MlflowError.not_found(f"Webhook with ID {webhook_id} not found.")
    return row


def _dicts(conn, rows, with_secret: bool = False) -> list[dict]:
    ids = [r.webhook_id for r in rows]
    events: dict[str, list] = {}
    if ids:
        for e in conn.execute(sa.select(E).where(E.c.webhook_id.in_(ids)).order_by(E.c.entity, E.c.action)):
            events.setdefault(e.webhook_id, []).append({"entity": e.entity.upper(), "action": e.action.upper()})
    out = []
    for r in rows:
        d = {"webhook_id": r.webhook_id, "name": r.name, "url": r.url, "events": events.get(r.webhook_id, []),
             "status": r.status, "creation_timestamp": r.creation_timestamp,
             "last_updated_timestamp": r.last_updated_timestamp}
        if r.description:
            d["description"] = r.description
        if with_secret and r.secret:
            d["secret"] = r.secret
        out.append(d)
    return out
