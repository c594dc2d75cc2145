"""Gate conditions: ``metrics.f1 >= champion.metrics.f1 + 0.01``.

A condition is a Python-like expression over numbers, parsed with :mod:`ast` and evaluated by
walking a short list of allowed node types (no calls, no attribute access beyond the names below),
so a spec file can never run code through a gate.

Names: ``metrics.<key>`` (this pipeline run's metrics), ``champion.metrics.<key>`` (the metrics
of the model version the champion alias points to), ``params.<key>``; ``metrics["val-f1"]``
for keys that are not identifiers. Operators: comparisons (chained too), ``+ - * /``, unary
minus, ``and``, ``or``, ``not``, ``abs(x)``, ``min(...)``, ``max(...)``.
"""
from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Condition", "ConditionError", "Unknown", "parse"]

_ROOTS = ("metrics", "champion", "params")
_FUNCS: dict[str, Callable] = {"abs": abs, "min": min, "max": max}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_CMP = {ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}
_SYMBOL = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!="}


class ConditionError(ValueError):
    """The condition does not parse, or names something that cannot be looked up."""


class Unknown(Exception):
    """A name in the condition has no value (a metric never logged, no champion)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class Condition:
    text: str
    tree: ast.Expression
    names: tuple[str, ...]

    @property
    def uses_champion(self) -> bool:
        return any(n.startswith("champion.") for n in self.names)

    def evaluate(self, lookup: Callable[[str], float]) -> tuple[bool, str]:
        """Evaluate with ``lookup(name) -> number``; returns (passed, the condition with values filled in).

        Raises :class:`Unknown` when ``lookup`` has no value for a name.
        """
        values: dict[str, float] = {}

        def value_of(name: str) -> float:
            if name not in values:
                values[name] = lookup(name)
            return values[name]

        passed = bool(_eval(self.tree.body, value_of))
        shown = ", ".join(f"{n} = {_fmt(v)}" for n, v in values.items())
        return passed, f"{self.text}  ({shown})" if shown else self.text


def parse(text: str) -> Condition:
    """Parse and check a condition; raises :class:`ConditionError` with what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ConditionError("a condition must be a non-empty string")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConditionError(f"cannot parse condition {text!r}: {exc.msg}") from None
    names: list[str] = []
    _check(tree.body, names, text)
    return Condition(text.strip(), tree, tuple(dict.fromkeys(names)))


def _name(node: ast.AST, text: str) -> str | None:
    """``metrics.f1`` / ``champion.metrics["val-f1"]`` as a dotted name, or None if not a name."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, str):
            parts.append(node.slice.value)
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            break
        else:
            return None
    parts.reverse()
    return ".".join(parts)


def _check(node: ast.AST, names: list[str], text: str) -> None:
    if isinstance(node, (ast.Attribute, ast.Subscript, ast.Name)):
        name = _name(node, text)
        if name is None:
            raise ConditionError(f"unsupported expression in condition {text!r}")
        root = name.split(".", 1)[0]
        if root not in _ROOTS:
            raise ConditionError(f"unknown name '{name}' in condition {text!r}: names start with "
                                 "metrics., champion.metrics. or params.")
        if root == "champion" and not name.startswith("champion.metrics."):
            raise ConditionError(f"unknown name '{name}' in condition {text!r}: use champion.metrics.<key>")
        if name.count(".") < 1 or name.endswith("."):
            raise ConditionError(f"'{name}' in condition {text!r} needs a key, as in metrics.f1")
        names.append(name)
        return
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ConditionError(f"only numbers may appear as constants in condition {text!r}")
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        _check(node.left, names, text)
        _check(node.right, names, text)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        _check(node.operand, names, text)
        return
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            _check(v, names, text)
        return
    if isinstance(node, ast.Compare) and all(type(op) in _CMP for op in node.ops):
        _check(node.left, names, text)
        for c in node.comparators:
            _check(c, names, text)
        return
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS \
            and not node.keywords and node.args:
        for a in node.args:
            _check(a, names, text)
        return
    raise ConditionError(f"unsupported expression in condition {text!r}")


def _eval(node: ast.AST, value_of: Callable[[str], float]) -> Any:
    if isinstance(node, (ast.Attribute, ast.Subscript, ast.Name)):
        return value_of(_name(node, ""))
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp):
        return _BIN[type(node.op)](_eval(node.left, value_of), _eval(node.right, value_of))
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, value_of)
        return -v if isinstance(node.op, ast.USub) else (+v if isinstance(node.op, ast.UAdd) else not v)
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_eval(v, value_of) for v in node.values)
        return any(_eval(v, value_of) for v in node.values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, value_of)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, value_of)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Call):
        return _FUNCS[node.func.id](*[_eval(a, value_of) for a in node.args])
    raise ConditionError("unsupported expression")  # _check rules this out


def _fmt(v: float) -> str:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return f"{v:.6g}" if isinstance(v, float) else str(v)
