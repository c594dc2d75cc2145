"""Alert rules in the Prometheus style: an expression over monitor series, a ``for`` duration,
labels and annotations; alert instances that go pending, firing and resolved; silences; groups.

An expression is a selector and a comparison::

    drift_detected{monitor="fraud", feature=~"num_.*"} > 0
    accuracy{deployment="fraud"} < 0.9
    latency_p99_seconds > 0.25

Every series the selector matches is an alert instance of its own (one per feature, say), with the
series' labels (``monitor``, ``deployment``, ``feature``) plus the rule's. Instances are grouped
for notification by ``group_by`` labels, so one incident pages once however many features drift.

This module is pure: it decides transitions; ``store/alerts.py`` persists them.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

__all__ = [
    "Expr", "parse_expr", "matches", "fingerprint", "group_key", "transition", "RuleError",
    "DEFAULT_GROUP_INTERVAL", "DEFAULT_REPEAT_INTERVAL", "validate_matchers",
]

DEFAULT_GROUP_INTERVAL = 300
DEFAULT_REPEAT_INTERVAL = 4 * 3600

_OPS = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
        "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\{(.*)\})?\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_MATCH_OPS = ("=", "!=", "=~", "!~")


class RuleError(ValueError):
    """A rule or silence that cannot be used; the message says why."""


@dataclass(frozen=True)
class Expr:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]
    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        return not math.isnan(value) and _OPS[self.op](value, self.threshold)

    def selects(self, metric: str, labels: dict) -> bool:
        return metric == self.metric and matches(labels, self.matchers)

    def label(self, name: str) -> str | None:
        """The value an equality matcher pins ``name`` to, if any."""
        for n, op, v in self.matchers:
            if n == name and op == "=":
                return v
        return None


def parse_expr(text: str) -> Expr:
    m = _EXPR.match(text or "")
    if not m:
        raise RuleError(f"Cannot parse alert expression {text!r}: expected 'metric{{label=\"value\", ...}} OP number' "
                        f"with OP one of {', '.join(_OPS)}.")
    metric, _, body, op, number = m.groups()
    try:
        threshold = float(number)
    except ValueError:
        raise RuleError(f"Alert expression {text!r}: {number!r} is not a number.") from None
    matchers = []
    body = body or ""
    pos = 0
    while pos < len(body.strip()) and body[pos:].strip():
        mm = _MATCHER.match(body, pos)
        if not mm:
            raise RuleError(f"Alert expression {text!r}: cannot parse the label matchers {{{body}}}.")
        name, mop, value, _ = mm.groups()
        value = value.replace('\\"', '"').replace("\\\\", "\\")
        matchers.append((name, mop, value))
        pos = mm.end()
    validate_matchers(matchers)
    return Expr(metric, tuple(matchers), op, threshold)


def validate_matchers(matchers) -> None:
    for name, op, value in matchers:
        if op not in _MATCH_OPS:
            raise RuleError(f"Matcher operator {op!r} is not one of {', '.join(_MATCH_OPS)}.")
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise RuleError(f"Matcher {name}{op}{value!r}: bad regular expression ({exc}).") from None


def matches(labels: dict, matchers) -> bool:
    """Prometheus label matching: a missing label is the empty string; regexes are anchored."""
    for name, op, value in matchers:
        have = str(labels.get(name, ""))
        if op == "=" and have != value:
            return False
        if op == "!=" and have == value:
            return False
        if op == "=~" and not re.fullmatch(value, have):
            return False
        if op == "!~" and re.fullmatch(value, have):
            return False
    return True


def fingerprint(labels: dict) -> str:
    text = "\x1f".join(f"{k}\x1e{labels[k]}" for k in sorted(labels))
    return hashlib.sha1(text.encode()).hexdigest()[:32]


def group_key(labels: dict, group_by: list[str]) -> tuple[str, dict]:
    picked = {k: str(labels.get(k, "")) for k in group_by}
    return ",".join(f"{k}={picked[k]}" for k in group_by) or "all", picked


def transition(alert: dict | None, holds: bool, value: float | None, now: int, for_ms: int,
               keep_firing_ms: int) -> tuple[dict | None, str | None]:
    """The next state of one alert instance. ``alert`` is None or {state, active_at_ms, fired_at_ms,
    last_true_ms, ...}. Returns (new alert or None when it goes away, event name or None)."""
    if alert is None:
        if not holds:
            return None, None
        new = {"state": "pending", "active_at_ms": now, "fired_at_ms": None, "resolved_at_ms": None,
               "last_true_ms": now, "value": value}
        if for_ms <= 0:
            new.update(state="firing", fired_at_ms=now)
            return new, "firing"
        return new, "pending"
    alert = dict(alert, value=value if value is not None else alert.get("value"))
    if alert["state"] == "pending":
        if not holds:
            return None, "inactive"
        alert["last_true_ms"] = now
        if now - alert["active_at_ms"] >= for_ms:
            alert.update(state="firing", fired_at_ms=now)
            return alert, "firing"
        return alert, None
    if alert["state"] == "firing":
        if holds:
            alert["last_true_ms"] = now
            return alert, None
        if keep_firing_ms > 0 and now - (alert.get("last_true_ms") or now) < keep_firing_ms:
            return alert, None
        alert.update(state="resolved", resolved_at_ms=now)
        return alert, "resolved"
    return alert, None
