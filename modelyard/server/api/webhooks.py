"""Registry webhooks: MLflow's webhook API, and signed deliveries when the registry changes.

The endpoints are MLflow's (``/webhooks`` create and list, ``/webhooks/{id}`` get, update and
delete, ``/webhooks/{id}/test``), so ``MlflowClient().create_webhook(...)`` works unchanged.
Deliveries follow MLflow's scheme: a JSON body ``{entity, action, timestamp, data}`` and the
headers ``X-MLflow-Delivery-Id``, ``X-MLflow-Timestamp`` and, when the webhook has a secret,
``X-MLflow-Signature: v1,<base64 HMAC-SHA256 of "<delivery id>.<timestamp>.<body>">``.

The registry's endpoints are wrapped by :func:`with_events` (in ``server/api/__init__.py``) to call
:func:`fire` after their write has committed. It returns at once:
finding the subscribers and delivering run in the background (retried with backoff on a dropped
connection, 429 and 5xx), and every attempt is recorded (``GET /api/modelyard/v1/webhooks/deliveries``).
Only ``https`` URLs to public addresses are accepted by default, checked again on the connected
socket (:mod:`modelyard.outbound`, shared with the alert channels).
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit

import anyio.to_thread

from modelyard import outbound
from modelyard.errors import MlflowError
from modelyard.server.routing import Context, Endpoint
from modelyard.server.schema import INT64, STRING, Field, Message, Repeated, Schema
from modelyard.store._common import now_ms

__all__ = ["ENDPOINTS", "MODELYARD_ENDPOINTS", "fire", "with_events", "VALID_EVENTS", "sign"]

log = logging.getLogger("modelyard.webhooks")

VALID_EVENTS: dict[str, tuple[str, ...]] = {
    "registered_model": ("created",),
    "model_version": ("created",),
    "model_version_tag": ("set", "deleted"),
    "model_version_alias": ("created", "deleted"),
    "prompt": ("created",),
    "prompt_version": ("created",),
    "prompt_tag": ("set", "deleted"),
    "prompt_version_tag": ("set", "deleted"),
    "prompt_alias": ("created", "deleted"),
    "budget_policy": ("exceeded",),
}
_MODEL_TO_PROMPT = {"registered_model": "prompt", "model_version": "prompt_version",
                    "model_version_tag": "prompt_version_tag", "model_version_alias": "prompt_alias"}
PROMPT_TAG = "mlflow.prompt.is_prompt"
PROMPT_TEXT_TAG = "mlflow.prompt.text"
_NAME = re.compile(r"^(?=.{1,63}$)[a-z0-9]([a-z0-9._-]*[a-z0-9])?$", re.IGNORECASE)
_MAX_RETRIES = 3
_RETRY_STATUS = (429, 500, 502, 503, 504)
_tasks: set[asyncio.Task] = set()

# What a test delivery carries for each event, in the shape of the real one (MLflow sends the same examples).
_EXAMPLES = {
    ("registered_model", "created"): {"name": "example_model", "tags": {"example_key": "example_value"},
                                      "description": "An example registered model"},
    ("model_version", "created"): {"name": "example_model", "version": "1", "source": "models:/123",
                                   "run_id": "abcd1234abcd5678", "tags": {"example_key": "example_value"},
                                   "description": "An example model version"},
    ("model_version_tag", "set"): {"name": "example_model", "version": "1", "key": "example_key",
                                   "value": "example_value"},
    ("model_version_tag", "deleted"): {"name": "example_model", "version": "1", "key": "example_key"},
    ("model_version_alias", "created"): {"name": "example_model", "alias": "example_alias", "version": "1"},
    ("model_version_alias", "deleted"): {"name": "example_model", "alias": "example_alias"},
    ("prompt", "created"): {"name": "example_prompt", "tags": {"example_key": "example_value"},
                            "description": "An example prompt"},
    ("prompt_version", "created"): {"name": "example_prompt", "version": "1", "template": "Hello {{name}}!",
                                    "tags": {"example_key": "example_value"},
                                    "description": "An example prompt version"},
    ("prompt_tag", "set"): {"name": "example_prompt", "key": "example_key", "value": "example_value"},
    ("prompt_tag", "deleted"): {"name": "example_prompt", "key": "example_key"},
    ("prompt_version_tag", "set"): {"name": "example_prompt", "version": "1", "key": "example_key",
                                    "value": "example_value"},
    ("prompt_version_tag", "deleted"): {"name": "example_prompt", "version": "1", "key": "example_key"},
    ("prompt_alias", "created"): {"name": "example_prompt", "alias": "example_alias", "version": "1"},
    ("prompt_alias", "deleted"): {"name": "example_prompt", "alias": "example_alias"},
    ("budget_policy", "exceeded"): {"budget_policy_id": "bp-example", "budget_unit": "USD",
                                    "budget_amount": 100.0, "current_spend": 120.0, "duration_unit": "MONTHS",
                                    "duration_value": 1, "target_scope": "GLOBAL", "workspace": "default",
                                    "window_start": 0},
}


# -- validation ---------------------------------------------------------------------------------------
def _validate_name(name: str) -> None:
    if not _NAME.match(name or ""):
        raise MlflowError.invalid(
            f"Webhook name {name!r} is invalid. It must start and end with a letter or digit, be less than 63 "
            "characters long, and contain only letters, digits, dots (.), underscores (_), and hyphens (-).")


def _events(items: list[dict], required: bool) -> list[tuple[str, str]] | None:
    if not items:
        if required:
            raise MlflowError.invalid(f"Webhook events must be a non-empty list of WebhookEvent objects: {items}.")
        return None
    out = []
    for item in items:
        entity = (item.get("entity") or "").lower()
        action = (item.get("action") or "").lower()
        if entity not in VALID_EVENTS:
            raise MlflowError.invalid(f"Invalid webhook event entity {item.get('entity')!r}. Valid entities are: "
                                      f"{sorted(e.upper() for e in VALID_EVENTS)}")
        if action not in VALID_EVENTS[entity]:
            raise MlflowError.invalid(f"Invalid action '{action}' for entity '{entity}'. Valid actions are: "
                                      f"{sorted(VALID_EVENTS[entity])}")
        out.append((entity, action))
    return out


def _status(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in ("ACTIVE", "DISABLED"):
        raise MlflowError.invalid(f"Invalid webhook status {value!r}: ACTIVE or DISABLED.")
    return value


# -- handlers ---------------------------------------------------------------------------------------
async def create(ctx: Context, a: dict) -> dict:
    settings = ctx.services.settings
    _validate_name(a["name"])
    outbound.check_url(a["url"], settings)
    events = _events(a["events"], required=True)
    await outbound.check_public(urlsplit(a["url"]).hostname, settings)
    webhook = await ctx.services.stores.webhooks.create(
        ctx.project, a["name"], a["url"], events, a["description"] or None, a["secret"] or None, _status(a["status"]) or "ACTIVE")
    return {"webhook": webhook}


async def list_(ctx: Context, a: dict) -> dict:
    max_results = a["max_results"] or 100
    if not 1 <= max_results <= 1000:
        raise MlflowError.invalid("max_results must be between 1 and 1000.")
    found, token = await ctx.services.stores.webhooks.list(ctx.project, max_results, a["page_token"] or None)
    return {"webhooks": found, **({"next_page_token": token} if token else {})}


async def get(ctx: Context, a: dict) -> dict:
    return {"webhook": await ctx.services.stores.webhooks.get(ctx.project, a["webhook_id"])}


async def update(ctx: Context, a: dict) -> dict:
    settings = ctx.services.settings
    changes = {}
    if a["name"]:
        _validate_name(a["name"])
        changes["name"] = a["name"]
    if a["url"]:
        await outbound.check(a["url"], settings)
        changes["url"] = a["url"]
    if a["description"] is not None:
        changes["description"] = a["description"]
    if a["secret"] is not None:
        changes["secret"] = a["secret"] or None
    if a["status"] is not None:
        changes["status"] = _status(a["status"])
    events = _events(a["events"], required=False)
    return {"webhook": await ctx.services.stores.webhooks.update(ctx.project, a["webhook_id"], changes, events)}


async def delete(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.webhooks.delete(ctx.project, a["webhook_id"])
    return {}


async def test(ctx: Context, a: dict) -> dict:
    webhook = await ctx.services.stores.webhooks.get(ctx.project, a["webhook_id"], with_secret=True)
    if a["event"]:
        (event,) = _events([a["event"]], required=True)
    else:
        first = webhook["events"][0]
        event = (first["entity"].lower(), first["action"].lower())
    body = _body(event, _EXAMPLES[event])
    outcome = await _send(ctx.services.settings, webhook["url"], webhook.get("secret"), body, retries=0)
    result = {"success": outcome["ok"]}
    if outcome.get("status") is not None:
        result["response_status"] = outcome["status"]
    if outcome.get("body") is not None:
        result["response_body"] = outcome["body"]
    if outcome.get("error"):
        result["error_message"] = f"Failed to test webhook: {outcome['error']}"
    return {"result": result}


async def deliveries(ctx: Context, a: dict) -> dict:
    max_results = a["max_results"] or 100
    if not 1 <= max_results <= 1000:
        raise MlflowError.invalid("max_results must be between 1 and 1000.")
    found = await ctx.services.stores.webhooks.deliveries(ctx.project, a["webhook_id"], max_results)
    for d in found:
        d["payload"] = json.loads(d["payload"])
    return {"deliveries": found}


# -- firing on registry changes -----------------------------------------------------------------------
def _tag_map(tags: list[dict], drop: tuple[str, ...] = ()) -> dict:
    return {t["key"]: t.get("value") or "" for t in tags or [] if t.get("key") not in drop}


def _on_model_created(a: dict, result: dict):
    tags = a.get("tags") or []
    if _tag_map(tags).get(PROMPT_TAG, "").lower() == "true":
        return ("prompt", "created", {"name": a["name"], "tags": _tag_map(tags, (PROMPT_TAG, "_mlflow_prompt_type")),
                                      "description": a.get("description")}, None)
    return ("registered_model", "created", {"name": a["name"], "tags": _tag_map(tags),
                                            "description": a.get("description")}, None)


def _on_version_created(a: dict, result: dict):
    version = str(result["model_version"]["version"])
    tags = _tag_map(a.get("tags") or [])
    if PROMPT_TEXT_TAG in tags:
        template = tags.pop(PROMPT_TEXT_TAG)
        for internal in (PROMPT_TAG, "_mlflow_prompt_type"):
            tags.pop(internal, None)
        return ("prompt_version", "created", {"name": a["name"], "version": version, "template": template,
                                              "tags": tags, "description": a.get("description") or None}, None)
    return ("model_version", "created", {"name": a["name"], "version": version, "source": a["source"],
                                         "run_id": a.get("run_id") or None, "tags": tags,
                                         "description": a.get("description") or None}, None)


# (method, path) of a registry endpoint -> what happened, from its request and its answer:
# (entity, action, payload, model name if the event becomes a prompt event for a prompt).
_EVENTS = {
    ("POST", "/registered-models/create"): _on_model_created,
    ("POST", "/model-versions/create"): _on_version_created,
    ("POST", "/model-versions/set-tag"): lambda a, r: (
        "model_version_tag", "set", {"name": a["name"], "version": str(a["version"]), "key": a["key"],
                                     "value": a.get("value") or ""}, a["name"]),
    ("DELETE", "/model-versions/delete-tag"): lambda a, r: (
        "model_version_tag", "deleted", {"name": a["name"], "version": str(a["version"]), "key": a["key"]}, a["name"]),
    ("POST", "/registered-models/alias"): lambda a, r: (
        "model_version_alias", "created", {"name": a["name"], "alias": a["alias"], "version": str(a["version"])},
        a["name"]),
    ("DELETE", "/registered-models/alias"): lambda a, r: (
        "model_version_alias", "deleted", {"name": a["name"], "alias": a["alias"]}, a["name"]),
    # Tags on a registered model are an event only for prompts, as in MLflow.
    ("POST", "/registered-models/set-tag"): lambda a, r: (
        None, "set", {"name": a["name"], "key": a["key"], "value": a.get("value") or ""}, a["name"]),
    ("DELETE", "/registered-models/delete-tag"): lambda a, r: (
        None, "deleted", {"name": a["name"], "key": a["key"]}, a["name"]),
}


def with_events(endpoints: list[Endpoint]) -> list[Endpoint]:
    """The registry's endpoints, each that changes something wrapped to :func:`fire` its event
    after it succeeds (so the registry modules need not know about webhooks)."""
    out = []
    for ep in endpoints:
        describe = _EVENTS.get((ep.method, ep.path))
        if describe is None:
            out.append(ep)
            continue
        out.append(dataclasses.replace(ep, handler=_firing(ep.handler, describe)))
    return out


def _firing(handler, describe):
    @functools.wraps(handler)
    async def wrapped(ctx: Context, a: dict):
        result = await handler(ctx, a)
        try:
            entity, action, payload, model_name = describe(a, result)
        except (KeyError, TypeError):  # an answer without what the event needs: nothing to announce
            return result
        fire(ctx.services, ctx.project, entity, action, payload, model_name)
        return result

    return wrapped


def fire(services, project: str, entity: str | None, action: str, payload: dict, model_name: str | None = None) -> None:
    """Deliver a registry event to the project's subscribers in the background; returns at once.

    ``model_name``: the event is about that model's versions, tags or aliases; when the model is a
    prompt (tag ``mlflow.prompt.is_prompt``), the prompt event is sent instead, as MLflow does.
    ``entity`` None: the event exists only for prompts.
    """
    task = asyncio.get_running_loop().create_task(_fire(services, project, entity, action, payload, model_name))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


_PROMPT_ONLY = {"set": "prompt_tag", "deleted": "prompt_tag"}


async def _fire(services, project: str, entity: str | None, action: str, payload: dict, model_name: str | None) -> None:
    try:
        prompt_entity = _MODEL_TO_PROMPT.get(entity) if entity else _PROMPT_ONLY.get(action)
        wanted = ([(entity, action)] if entity else []) + ([(prompt_entity, action)] if prompt_entity and model_name
                                                           else [])
        if not wanted:
            return
        subs = await services.stores.webhooks.subscribers(project, wanted)
        if not subs:
            return
        event = (entity, action)
        if model_name and prompt_entity and await _is_prompt(services, project, model_name):
            event = (prompt_entity, action)
        if event[0] is None:
            return
        subs = [s for s in subs if s["event"] == event]
        body = _body(event, payload)
        await asyncio.gather(*[_deliver(services, s, event, body) for s in subs])
    except Exception:  # noqa: BLE001 - a failed delivery must never reach the registry's caller
        log.exception("webhook delivery for %s.%s failed", entity, action)


async def _is_prompt(services, project: str, name: str) -> bool:
    try:
        model = await services.stores.registry.get_model(project, name)
    except MlflowError:
        return False
    return any(t["key"] == PROMPT_TAG and t["value"].lower() == "true" for t in model.get("tags", []))


def _body(event: tuple[str, str], payload: dict) -> str:
    return json.dumps({"entity": event[0], "action": event[1],
                       "timestamp": datetime.now(timezone.utc).isoformat(), "data": payload})


def sign(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    """MLflow's signature: ``v1,`` + base64 of HMAC-SHA256 over ``<delivery id>.<timestamp>.<body>``."""
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


async def _deliver(services, sub: dict, event: tuple[str, str], body: str) -> None:
    delivery = {"delivery_id": str(uuid.uuid4()), "webhook_id": sub["webhook_id"], "event": ".".join(event),
                "payload": body, "status": "PENDING", "attempts": 0, "creation_time": now_ms()}
    await services.stores.webhooks.record_delivery(delivery)
    outcome = await _send(services.settings, sub["url"], sub["secret"], body, retries=_MAX_RETRIES,
                          delivery_id=delivery["delivery_id"])
    await services.stores.webhooks.record_delivery({
        "delivery_id": delivery["delivery_id"], "status": "DELIVERED" if outcome["ok"] else "FAILED",
        "attempts": outcome["attempts"], "response_status": outcome.get("status"),
        "error": outcome.get("error"), "last_attempt_time": now_ms()})


async def _send(settings, url: str, secret: str | None, body: str, retries: int, delivery_id: str | None = None) -> dict:
    """POST ``body`` with MLflow's headers; retried with backoff (1 s, 2 s, 4 s) on failures worth retrying."""
    delivery_id = delivery_id or str(uuid.uuid4())
    attempt = 0
    while True:
        attempt += 1
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
                   "X-MLflow-Timestamp": timestamp, "User-Agent": "modelyard-webhooks"}
        if secret:
            headers["X-MLflow-Signature"] = sign(secret, delivery_id, timestamp, body)
        try:
            status, text = await anyio.to_thread.run_sync(outbound.post, settings, url, body.encode(), headers)
        except Exception as exc:  # noqa: BLE001 - recorded and maybe retried
            outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "attempts": attempt}
            retryable = not isinstance(exc, outbound.Refused)
        else:
            outcome = {"ok": status < 400, "status": status, "body": text, "attempts": attempt}
            if status >= 400:
                outcome["error"] = f"HTTP {status}"
            retryable = status in _RETRY_STATUS
        if outcome["ok"] or not retryable or attempt > retries:
            return outcome
        await asyncio.sleep(2 ** (attempt - 1))


_EVENT = Message(Field("entity", STRING), Field("action", STRING))
_ID = Field("webhook_id", STRING)  # from the path

ENDPOINTS = [
    Endpoint("POST", "/webhooks", create, Schema(
        Field("name", STRING, required=True), Field("url", STRING, required=True),
        Field("events", Repeated(_EVENT), required=True), Field("description", STRING), Field("secret", STRING),
        Field("status", STRING)), access="manage"),
    Endpoint("GET", "/webhooks", list_, Schema(Field("max_results", INT64), Field("page_token", STRING)),
             access="read"),
    Endpoint("GET", "/webhooks/{webhook_id}", get, Schema(_ID), access="read"),
    Endpoint("PATCH", "/webhooks/{webhook_id}", update, Schema(
        _ID, Field("name", STRING), Field("description", STRING), Field("url", STRING),
        Field("events", Repeated(_EVENT)), Field("secret", STRING), Field("status", STRING)), access="manage"),
    Endpoint("DELETE", "/webhooks/{webhook_id}", delete, Schema(_ID), access="manage"),
    Endpoint("POST", "/webhooks/{webhook_id}/test", test, Schema(_ID, Field("event", _EVENT)), access="manage"),
]

# modelyard's own API: what each delivery did.
MODELYARD_ENDPOINTS = [
    Endpoint("GET", "/webhooks/deliveries", deliveries, Schema(
        Field("webhook_id", STRING, required=True), Field("max_results", INT64)), access="manage"),
]
