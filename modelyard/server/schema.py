"""Declarative request schemas: one per endpoint, validated at the edge.

A schema lists the fields an endpoint reads, with their type, whether they are required and the
names the client may spell them with (``run_id`` / ``run_uuid``). Parsing yields a plain dict of
Python values or raises an :class:`MlflowError` whose message follows MLflow's wording, which
upstream client tests match on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson

from modelyard.errors import MlflowError

__all__ = [
    "BOOL", "DOUBLE", "INT64", "STRING", "ANY", "Field", "Message", "Repeated", "Schema",
    "invalid_value", "missing_value",
]

_SEE_DOCS = " See the API docs for more information about request parameters."
INT64_MAX = 2**63 - 1


def _dump(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return repr(value)


def invalid_value(path: str, value: Any, message: str | None = None) -> str:
    text = f"Invalid value {_dump(value)} for parameter '{path}' supplied"
    return f"{text}: {message}" if message else f"{text}."


def missing_value(path: str) -> str:
    return f"Missing value for required parameter '{path}'."


def _type_error(path: str, value: Any) -> MlflowError:
    return MlflowError.invalid(
        invalid_value(path, value, f" Hint: Value was of type '{type(value).__name__}'.") + _SEE_DOCS
    )


@dataclass(frozen=True)
class Scalar:
    """A proto scalar type: how to accept it from JSON and from a query string."""

    name: str
    from_json: Callable[[str, Any], Any]
    from_query: Callable[[str, str], Any]


def _json_string(path, v):
    if type(v) is str:
        return v
    raise _type_error(path, v)


def _json_int(path, v):
    if type(v) is int and -INT64_MAX - 1 <= v <= INT64_MAX:
        return v
    if isinstance(v, bool):
        raise _type_error(path, v)
    if isinstance(v, int):
        if -INT64_MAX - 1 <= v <= INT64_MAX:
            return v
        raise _type_error(path, v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):  # proto3 JSON spells int64 as a string; the client may too.
        try:
            return int(v)
        except ValueError:
            pass
    raise _type_error(path, v)


def _json_double(path, v):
    if type(v) is float:
        return v
    if isinstance(v, bool):
        raise _type_error(path, v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):  # proto3 JSON spells NaN and infinities as strings.
        special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        if v in special:
            return special[v]
        try:
            return float(v)
        except ValueError:
            pass
    raise _type_error(path, v)


def _json_bool(path, v):
    if isinstance(v, bool):
        return v
    raise _type_error(path, v)


def _query_int(path, v):
    try:
        number = int(v)
    except ValueError:
        raise _type_error(path, v) from None
    if not -INT64_MAX - 1 <= number <= INT64_MAX:
        raise _type_error(path, v)
    return number


def _query_double(path, v):
    try:
        return float(v)
    except ValueError:
        raise _type_error(path, v) from None


def _query_bool(path, v):
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    raise _type_error(path, v)


STRING = Scalar("string", _json_string, lambda p, v: v)
INT64 = Scalar("int64", _json_int, _query_int)
DOUBLE = Scalar("double", _json_double, _query_double)
BOOL = Scalar("bool", _json_bool, _query_bool)
ANY = Scalar("any", lambda p, v: v, lambda p, v: v)


@dataclass(frozen=True)
class Repeated:
    item: Any  # Scalar or Message


@dataclass(frozen=True)
class Field:
    name: str
    type: Any = STRING
    required: bool = False
    aliases: tuple[str, ...] = ()
    default: Any = None
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Message:
    """A nested object (a metric inside log-batch, a tag inside create)."""

    fields: tuple[Field, ...]

    def __init__(self, *fields: Field):
        object.__setattr__(self, "fields", fields)

    def parse(self, data: Any, path: str) -> dict:
        if type(data) is not dict:
            raise _type_error(path or "body", data)
        out = {}
        # The hot path (a log-batch carries 1000 metrics): plain scalars are converted inline;
        # anything else, and every error, goes through _parse_value.
        for f in self.fields:
            value = data.get(f.name)
            if value is None and f.aliases:
                for alias in f.aliases:
                    value = data.get(alias)
                    if value is not None:
                        break
            t = f.type
            if value is not None and type(t) is Scalar and f.choices is None and not (f.required and value == ""):
                out[f.name] = t.from_json(f.name if not path else path + "." + f.name, value)
            else:
                out[f.name] = _parse_value(f, value, path + "." + f.name if path else f.name)
        return out


def _parse_value(f: Field, value: Any, path: str):
    if value is None:
        if f.required:
            raise MlflowError.invalid(missing_value(path) + _SEE_DOCS)
        return [] if isinstance(f.type, Repeated) and f.default is None else f.default
    t = f.type
    if isinstance(t, Repeated):
        if not isinstance(value, list):
            raise _type_error(path, value)
        item = t.item
        if isinstance(item, Message):
            return [item.parse(v, path) for v in value]
        return [item.from_json(path, v) for v in value]
    if isinstance(t, Message):
        return t.parse(value, path)
    parsed = t.from_json(path, value)
    if f.required and t is STRING and parsed == "":
        raise MlflowError.invalid(missing_value(path) + _SEE_DOCS)
    if f.choices is not None and parsed not in f.choices:
        raise MlflowError.invalid(invalid_value(path, value) + _SEE_DOCS)
    return parsed


@dataclass(frozen=True)
class Schema:
    """The request of one endpoint. ``parse_json`` for bodies, ``parse_query`` for GET."""

    fields: tuple[Field, ...] = field(default_factory=tuple)

    def __init__(self, *fields: Field):
        object.__setattr__(self, "fields", fields)

    def parse_json(self, data: Any) -> dict:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise MlflowError.invalid("Request body must be a JSON object.")
        return Message(*self.fields).parse(data, "")

    def parse_query(self, query) -> dict:
        """``query`` is a Starlette ``QueryParams`` (a multi-dict)."""
        out = {}
        for f in self.fields:
            names = (f.name, *f.aliases)
            t = f.type
            if isinstance(t, Repeated):
                values = []
                for n in names:
                    values = query.getlist(n)
                    if values:
                        break
                if isinstance(t.item, Message):
                    # Nested messages cannot be spelled in a query string; accept JSON text.
                    try:
                        values = [orjson.loads(v) for v in values]
                    except orjson.JSONDecodeError:
                        raise _type_error(f.name, values) from None
                    out[f.name] = _parse_value(f, values or None, f.name)
                else:
                    out[f.name] = [t.item.from_query(f.name, v) for v in values]
                    if f.required and not values:
                        raise MlflowError.invalid(missing_value(f.name) + _SEE_DOCS)
                continue
            value = None
            for n in names:
                value = query.get(n)
                if value is not None:
                    break
            if value is None:
                out[f.name] = _parse_value(f, None, f.name)
                continue
            parsed = t.from_query(f.name, value)
            if f.required and t is STRING and parsed == "":
                raise MlflowError.invalid(missing_value(f.name) + _SEE_DOCS)
            if f.choices is not None and parsed not in f.choices:
                raise MlflowError.invalid(invalid_value(f.name, value) + _SEE_DOCS)
            out[f.name] = parsed
        return out
