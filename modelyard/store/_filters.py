"""Comparisons from a parsed filter, as SQLAlchemy expressions with bound values."""
from __future__ import annotations

from modelyard.errors import MlflowError

__all__ = ["string_op", "numeric_op"]


def string_op(col, op: str, value):
    if op == "=":
        return col == value
    if op == "!=":
        return col != value
    if op == "LIKE":
        return col.like(value)
    if op == "ILIKE":
        return col.ilike(value)
    if op == "NOT LIKE":
        return col.not_like(value)
    if op == "NOT ILIKE":
        return col.not_ilike(value)
    if op == "IN":
        return col.in_(list(value))
    if op == "NOT IN":
        return col.not_in(list(value))
    raise MlflowError.invalid(f"Invalid comparator '{op}'")


def numeric_op(col, op: str, value):
    return {
        "=": col == value, "!=": col != value, "<": col < value,
        "<=": col <= value, ">": col > value, ">=": col >= value,
    }[op]
