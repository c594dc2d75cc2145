"""Alert rules, alerts, silences and the alert history (``/api/modelyard/v1/alert-rules/...``, ...).

A rule::

    {"name": "fraud-drift", "expr": "drift_detected{monitor=\\"fraud\\"} > 0", "for_seconds": 600,
     "keep_firing_for_seconds": 0, "severity": "critical", "labels": {"team": "risk"},
     "annotations": {"summary": "{{ $labels.feature }} drifted"}, "channels": ["oncall"],
     "group_by": ["alertname", "deployment"], "group_interval_seconds": 300,
     "repeat_interval_seconds": 14400, "send_resolved": true,
     "actions": [{"type": "rollback", "alias": "prod"}, {"type": "webhook", "url": "https://ci/retrain"}]}
"""
from __future__ import annotations

import time

from modelyard import outbound
from modelyard.errors import MlflowError
from modelyard.monitoring import rules as R
from modelyard.monitoring.actions import protected_aliases, validate_action
from modelyard.server.api.monitors import validate_name
from modelyard.server.routing import Context, Endpoint
from modelyard.server.schema import ANY, BOOL, DOUBLE, INT64, STRING, Field, Repeated, Schema

__all__ = ["ENDPOINTS"]

_SEVERITIES = ("info", "warning", "critical")
MAX_RESULTS = 1000


def _seconds(value, name: str, default: float) -> float:
    if value is None:
        return default
    if value < 0:
        raise MlflowError.invalid(f"'{name}' is a number of seconds >= 0.")
    return value


def _str_map(value, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise MlflowError.invalid(f"'{name}' is an object of strings.")
    return value


async def _spec(ctx: Context, a: dict, old: dict | None = None) -> dict:
    """The stored form of a rule from the request (on update, unspecified fields keep their value)."""
    old = old or {}

    def pick(key, default=None):
        return a[key] if a.get(key) is not None else old.get(key, default)

    expr = pick("expr")
    if not expr:
        raise MlflowError.invalid("An alert rule needs 'expr', e.g. drift_detected{monitor=\"m\"} > 0.")
    try:
        R.parse_expr(expr)
    except R.RuleError as exc:
        raise MlflowError.invalid(str(exc)) from None
    severity = pick("severity", "warning")
    if severity not in _SEVERITIES:
        raise MlflowError.invalid(f"'severity' is one of: {', '.join(_SEVERITIES)}.")
    spec = {
        "expr": expr, "severity": severity,
        "for_seconds": _seconds(pick("for_seconds"), "for_seconds", 0),
        "keep_firing_for_seconds": _seconds(pick("keep_firing_for_seconds"), "keep_firing_for_seconds", 0),
        "group_interval_seconds": _seconds(pick("group_interval_seconds"), "group_interval_seconds",
                                           R.DEFAULT_GROUP_INTERVAL),
        "repeat_interval_seconds": _seconds(pick("repeat_interval_seconds"), "repeat_interval_seconds",
                                            R.DEFAULT_REPEAT_INTERVAL),
        "send_resolved": pick("send_resolved", True),
        "labels": _str_map(pick("labels"), "labels"),
        "annotations": _str_map(pick("annotations"), "annotations"),
        "channels": list(a["channels"]) if a.get("channels") else old.get("channels", []),
        "group_by": list(a["group_by"]) if a.get("group_by") else old.get("group_by", ["alertname", "deployment"]),
    }
    raw_actions = a["actions"] if a.get("actions") is not None else old.get("actions", [])
    if not isinstance(raw_actions, list):
        raise MlflowError.invalid("'actions' is a list of action objects.")
    actions = []
    for i, action in enumerate(raw_actions):
        try:
            actions.append(validate_action(action))
        except ValueError as exc:
            raise MlflowError.invalid(f"actions[{i}]: {exc}") from None
        if actions[-1]["type"] == "webhook":
            await outbound.check(actions[-1]["url"], ctx.services.settings)
    protected = await protected_aliases(ctx.services, ctx.project)
    for action in actions:
        if action["type"] == "rollback" and action.get("allow_protected"):
            # Moving a protected alias is a maintainer's decision; the rule records that one made it.
            ctx.require("manage", f"a rollback action on protected alias '{action.get('alias', '*')}'")
        elif action["type"] == "rollback" and action.get("alias") in protected:
            raise MlflowError.invalid(
                f"Alias '{action['alias']}' is protected in this project: a maintainer can allow the rollback "
                "with \"allow_protected\": true.")
    spec["actions"] = actions
    for name in spec["channels"]:
        await ctx.services.stores.notifications.get_channel(ctx.project, name)
    return spec


def _who(ctx: Context) -> str | None:
    return ctx.principal.username if ctx.principal else None


async def create_rule(ctx: Context, a: dict) -> dict:
    validate_name(a["name"])
    spec = await _spec(ctx, a)
    rule = await ctx.services.stores.alerts.create_rule(ctx.project, a["name"], spec, a["enabled"] is not False,
                                                        _who(ctx))
    return {"rule": rule}


async def update_rule(ctx: Context, a: dict) -> dict:
    store = ctx.services.stores.alerts
    old = await store.get_rule(ctx.project, a["name"])
    spec = await _spec(ctx, a, old)
    return {"rule": await store.update_rule(ctx.project, a["name"], spec, a["enabled"], _who(ctx))}


async def get_rule(ctx: Context, a: dict) -> dict:
    return {"rule": await ctx.services.stores.alerts.get_rule(ctx.project, a["name"])}


async def list_rules(ctx: Context, a: dict) -> dict:
    return {"rules": await ctx.services.stores.alerts.list_rules(ctx.project)}


async def delete_rule(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.alerts.delete_rule(ctx.project, a["name"], _who(ctx))
    return {}


def _limit(a: dict, default: int = 100) -> int:
    limit = a["max_results"] or default
    if not 1 <= limit <= MAX_RESULTS:
        raise MlflowError.invalid(f"'max_results' is between 1 and {MAX_RESULTS}.")
    return limit


async def list_alerts(ctx: Context, a: dict) -> dict:
    states = a["state"]
    for s in states:
        if s not in ("pending", "firing", "resolved"):
            raise MlflowError.invalid("'state' is pending, firing or resolved.")
    return {"alerts": await ctx.services.stores.alerts.list_alerts(ctx.project, states, a["rule"], _limit(a))}


async def history(ctx: Context, a: dict) -> dict:
    """Alert transitions, notifications and actions, newest first (the alerting audit trail)."""
    return {"events": await ctx.services.stores.alerts.events(ctx.project, a["kind"], a["rule"], _limit(a),
                                                               a["before_ms"])}


async def create_silence(ctx: Context, a: dict) -> dict:
    matchers = a["matchers"]
    if not isinstance(matchers, list) or not matchers:
        raise MlflowError.invalid("'matchers' is a non-empty list of {name, value, op} (op: =, !=, =~, !~).")
    parsed = []
    for m in matchers:
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not isinstance(m.get("value"), str):
            raise MlflowError.invalid("Each matcher is {name, value, op}.")
        parsed.append([m["name"], m.get("op", "="), m["value"]])
    try:
        R.validate_matchers(parsed)
    except R.RuleError as exc:
        raise MlflowError.invalid(str(exc)) from None
    now = int(time.time() * 1000)
    starts = a["starts_ms"] if a["starts_ms"] is not None else now
    if a["ends_ms"] is not None:
        ends = a["ends_ms"]
    elif a["duration_seconds"] is not None:
        ends = starts + int(a["duration_seconds"] * 1000)
    else:
        raise MlflowError.invalid("A silence needs 'ends_ms' or 'duration_seconds'.")
    if ends <= starts:
        raise MlflowError.invalid("A silence must end after it starts.")
    silence = await ctx.services.stores.alerts.create_silence(ctx.project, parsed, starts, ends, a["comment"], _who(ctx))
    return {"silence": silence}


async def list_silences(ctx: Context, a: dict) -> dict:
    return {"silences": await ctx.services.stores.alerts.list_silences(ctx.project)}


async def expire_silence(ctx: Context, a: dict) -> dict:
    await ctx.services.stores.alerts.expire_silence(ctx.project, a["silence_id"], _who(ctx))
    return {}


_RULE_FIELDS = (
    Field("expr", STRING), Field("for_seconds", DOUBLE), Field("keep_firing_for_seconds", DOUBLE),
    Field("severity", STRING), Field("labels", ANY), Field("annotations", ANY), Field("channels", Repeated(STRING)),
    Field("group_by", Repeated(STRING)), Field("group_interval_seconds", DOUBLE),
    Field("repeat_interval_seconds", DOUBLE), Field("send_resolved", BOOL), Field("actions", ANY),
    Field("enabled", BOOL),
)
_NAME = Field("name", STRING, required=True)
_LIST = (Field("max_results", INT64), Field("rule", STRING))

ENDPOINTS = [
    Endpoint("POST", "/alert-rules/create", create_rule, Schema(_NAME, *_RULE_FIELDS), access="write"),
    Endpoint("POST", "/alert-rules/update", update_rule, Schema(_NAME, *_RULE_FIELDS), access="write"),
    Endpoint("GET", "/alert-rules/get", get_rule, Schema(_NAME), access="read"),
    Endpoint("GET", "/alert-rules/list", list_rules, Schema(), access="read"),
    Endpoint("DELETE", "/alert-rules/delete", delete_rule, Schema(_NAME), access="delete"),
    Endpoint("GET", "/alerts/list", list_alerts, Schema(Field("state", Repeated(STRING)), *_LIST), access="read"),
    Endpoint("GET", "/alerts/history", history, Schema(Field("kind", Repeated(STRING)), Field("before_ms", INT64),
                                                       *_LIST), access="read"),
    Endpoint("POST", "/silences/create", create_silence, Schema(
        Field("matchers", ANY, required=True), Field("starts_ms", INT64), Field("ends_ms", INT64),
        Field("duration_seconds", DOUBLE), Field("comment", STRING)), access="write"),
    Endpoint("GET", "/silences/list", list_silences, Schema(), access="read"),
    Endpoint("POST", "/silences/expire", expire_silence, Schema(Field("silence_id", STRING, required=True)),
             access="write"),
]
