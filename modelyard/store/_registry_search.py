"""Registry search: MLflow's filter and order-by grammar for registered models and model versions.

Filters arrive parsed (:mod:`modelyard.store.search`); this module turns them into SQLAlchemy
conditions on the registry tables, with every value bound. Prompts are registered models tagged
``mlflow.prompt.is_prompt=true``: a search returns prompts or models, never both.
"""
from __future__ import annotations

import sqlalchemy as sa

from modelyard.errors import MlflowError
from modelyard.store import search
from modelyard.store._filters import numeric_op, string_op
from modelyard.store.schema import model_version_tags as MVT
from modelyard.store.schema import model_versions as MV
from modelyard.store.schema import registered_model_tags as RMT
from modelyard.store.schema import registered_models as RM

__all__ = [
    "MODELS_SEARCH", "VERSIONS_SEARCH", "PROMPT_TAG", "DEFAULT_VERSION_ORDER", "wants_prompts", "prompt_tag_exists",
    "model_condition", "version_condition", "model_order", "version_order",
]

PROMPT_TAG = "mlflow.prompt.is_prompt"
_MAX_FILTER_INT = 2**63 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1  # model_versions.version

MODELS_SEARCH = search.Entity(
    "registered models",
    attributes={"name": ("string", "name")},
    kinds={"tag": ("=", "!=", "LIKE", "ILIKE")},
    in_attributes=("name",),
)
_MODEL_ORDER_ONLY = {
    "timestamp": "last_updated_time",
    "last_updated_timestamp": "last_updated_time",
    "creation_timestamp": "creation_time",
}

VERSIONS_SEARCH = search.Entity(
    "model versions",
    attributes={
        "name": ("string", "name"),
        "run_id": ("string", "run_id"),
        "source_path": ("string", "source_path"),
        "version_number": ("numeric", "version_number"),
    },
    kinds={"tag": ("=", "!=", "LIKE", "ILIKE")},
    in_attributes=("name", "run_id"),
)
_VERSION_ORDER_ONLY = {"creation_timestamp": "creation_time", "last_updated_timestamp": "last_updated_time"}
_VERSION_FILTER_COLUMNS = {"name": MV.c.name, "run_id": MV.c.run_id, "source_path": MV.c.source}
DEFAULT_VERSION_ORDER = ("last_updated_timestamp DESC", "name ASC", "version_number DESC")


def wants_prompts(comparisons: list[search.Comparison]) -> bool:
    """True when a filter asks for prompts (``tags.mlflow.prompt.is_prompt = 'true'``)."""
    for c in comparisons:
        if c.kind == "tag" and c.key == PROMPT_TAG:
            value = str(c.value).lower()
            return (c.op == "=" and value == "true") or (c.op == "!=" and value == "false")
    return False


def prompt_tag_exists(table):
    """Is the registered model of a row of ``table`` (models or versions) tagged as a prompt?"""
    return sa.select(RMT.c.name).where(RMT.c.project == table.c.project, RMT.c.name == table.c.name,
                                       RMT.c.key == PROMPT_TAG, RMT.c.value == "true").exists()


def model_condition(c: search.Comparison):
    if c.kind == "tag":
        tag = sa.select(RMT.c.name).where(RMT.c.project == RM.c.project, RMT.c.name == RM.c.name, RMT.c.key == c.key)
        if c.op == "!=":
            # On registered models != also matches models without the tag at all.
            return ~tag.where(RMT.c.value == c.value).exists()
        return tag.where(string_op(RMT.c.value, c.op, c.value)).exists()
    return string_op(RM.c.name, c.op, c.value)


def version_condition(c: search.Comparison):
    if c.kind == "tag":
        tag = sa.select(MVT.c.name).where(MVT.c.project == MV.c.project, MVT.c.name == MV.c.name,
                                          MVT.c.version == MV.c.version,
                                          MVT.c.key == c.key)
        if c.op == "!=":
            return tag.where(MVT.c.value != c.value).exists()
        return tag.where(string_op(MVT.c.value, c.op, c.value)).exists()
    if c.key == "version_number":
        if not isinstance(c.value, int) or abs(c.value) > _MAX_FILTER_INT:
            raise MlflowError.invalid(f"Invalid value for numeric attribute 'version_number': {c.value!r}")
        if not _INT32_MIN <= c.value <= _INT32_MAX:
            # PostgreSQL binds the value as the column's 32-bit integer and would fail; no stored
            # version can equal it, and every one lies on the same side of it.
            above = c.value > _INT32_MAX
            holds = {"=": False, "!=": True, "<": above, "<=": above, ">": not above, ">=": not above}[c.op]
            return sa.true() if holds else sa.false()
        return numeric_op(MV.c.version, c.op, c.value)
    return string_op(_VERSION_FILTER_COLUMNS[c.key], c.op, c.value)


def _order_clauses(order_by: list[str], entity: search.Entity, extra: dict[str, str],
                   columns: dict[str, sa.Column]) -> tuple[list, set[str]]:
    """ORDER BY clauses from MLflow's ``"<key> [ASC|DESC]"`` strings; ``columns`` says what may sort."""
    clauses, seen = [], set()
    for clause in order_by:
        o = search.parse_order_by(clause, entity, extra)
        if o.kind != "attribute" or o.key not in columns:
            valid = sorted(k for k in (*entity.attributes, *extra) if (extra.get(k) or k) in columns)
            raise MlflowError.invalid(f"Invalid order by key '{clause}' specified. Valid keys are {valid}")
        if o.key in seen:
            raise MlflowError.invalid(f"`order_by` contains duplicate fields: {order_by}")
        seen.add(o.key)
        col = columns[o.key]
        clauses.append(col.asc() if o.ascending else col.desc())
    return clauses, seen


def model_order(order_by: list[str]) -> list:
    columns = {"name": RM.c.name, "last_updated_time": RM.c.last_updated_time, "creation_time": RM.c.creation_time}
    clauses, seen = _order_clauses(order_by or [], MODELS_SEARCH, _MODEL_ORDER_ONLY, columns)
    if "name" not in seen:
        clauses.append(RM.c.name.asc())
    return clauses


def version_order(order_by: list[str]) -> list:
    columns = {"name": MV.c.name, "version_number": MV.c.version, "creation_time": MV.c.creation_time,
               "last_updated_time": MV.c.last_updated_time}
    clauses, seen = _order_clauses(order_by, VERSIONS_SEARCH, _VERSION_ORDER_ONLY, columns)
    if "name" not in seen:
        clauses.append(MV.c.name.asc())
    if "version_number" not in seen:
        clauses.append(MV.c.version.desc())
    return clauses
