"""MLflow's search grammar: filters, order-by clauses and page tokens.

A filter is comparisons joined by ``AND``: ``<identifier> <comparator> <value>``. Identifiers are
``type.key`` (``metrics.acc``, ``params.`lr```, ``tags."a b"``) or a bare attribute. The parser
returns :class:`Comparison` objects; each store turns them into SQLAlchemy expressions with bound
parameters, so a filter value never reaches SQL as text. What the grammar or the entity rejects is
a 400 INVALID_PARAMETER_VALUE.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from modelyard.errors import MlflowError

__all__ = [
    "Comparison", "Entity", "OrderBy", "parse_filter", "parse_order_by",
    "encode_page_token", "decode_page_token", "decode_keyed_page_token",
]

STRING_OPS = ("=", "!=", "LIKE", "ILIKE")
NUMERIC_OPS = ("=", "!=", "<", "<=", ">", ">=")

_KIND_ALIASES = {
    "metric": "metric", "metrics": "metric",
    "param": "param", "params": "param", "parameter": "param", "parameters": "param",
    "tag": "tag", "tags": "tag",
    "attribute": "attribute", "attributes": "attribute", "attr": "attribute", "run": "attribute",
    "dataset": "dataset", "datasets": "dataset",
}


@dataclass(frozen=True)
class Comparison:
    kind: str  # metric, param, tag, attribute, dataset
    key: str
    op: str  # = != < <= > >= LIKE ILIKE IN NOT IN IS NULL IS NOT NULL
    value: Any


@dataclass(frozen=True)
class OrderBy:
    kind: str
    key: str
    ascending: bool


@dataclass(frozen=True)
class Entity:
    """What one search API accepts.

    ``attributes`` maps an attribute name (and its aliases) to ("string" | "numeric", canonical
    name); ``kinds`` lists the allowed key types with their comparators.
    """

    name: str
    attributes: dict[str, tuple[str, str]]
    kinds: dict[str, tuple[str, ...]] = field(default_factory=dict)
    in_attributes: tuple[str, ...] = ()  # attributes that accept IN / NOT IN
    string_attr_ops: tuple[str, ...] = STRING_OPS
    default_kind: str = "attribute"


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<squote>'(?:[^']|'')*')
  | (?P<dquote>"(?:[^"]|"")*")
  | (?P<btick>`[^`]*`)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))
  | (?P<word>[A-Za-z_][\w:/\-]*)
  | (?P<dot>\.)
    """,
    re.VERBOSE,
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise _invalid(f"Invalid character {text[pos]!r} at position {pos} in filter {text!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind != "ws":
            out.append((kind, m.group()))
    return out


def _invalid(message: str) -> MlflowError:
    return MlflowError.invalid(message)


def _unquote(kind: str, text: str) -> str:
    if kind == "squote":
        return text[1:-1].replace("''", "'")
    if kind == "dquote":
        return text[1:-1].replace('""', '"')
    if kind == "btick":
        return text[1:-1]
    return text


class _Parser:
    def __init__(self, text: str, entity: Entity):
        self.text = text
        self.entity = entity
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise _invalid(f"Invalid filter {self.text!r}: unexpected end")
        self.i += 1
        return tok

    def word_is(self, tok, *words) -> bool:
        return tok is not None and tok[0] == "word" and tok[1].upper() in words

    def parse_identifier(self) -> tuple[str, str]:
        kind, text = self.take()
        if kind == "word" and self.peek() is not None and self.peek()[0] == "dot":
            prefix = text
            self.take()
            kind2, text2 = self.take()
            if kind2 in ("btick", "dquote"):
                key = _unquote(kind2, text2)
            elif kind2 == "word":
                key = text2
                # unquoted keys may contain dots: tags.mlflow.source.name
                while self.peek() is not None and self.peek()[0] == "dot":
                    self.take()
                    k3, t3 = self.take()
                    if k3 not in ("word", "number"):
                        raise _invalid(f"Invalid identifier in filter {self.text!r}")
                    key += "." + t3
            else:
                raise _invalid(f"Invalid identifier {prefix}.{text2} in filter {self.text!r}")
            kind_name = _KIND_ALIASES.get(prefix.lower())
            if kind_name is None:
                raise _invalid(
                    f"Invalid entity type '{prefix}'. Valid values are "
                    f"{sorted(set(self.entity.kinds) | {'attribute'})}"
                )
            return kind_name, key
        if kind in ("word", "btick", "dquote"):
            return self.entity.default_kind, _unquote(kind, text)
        raise _invalid(f"Invalid clause(s) in filter string: {self.text!r}")

    def parse_comparator(self) -> str:
        tok = self.take()
        if tok[0] == "op":
            return "!=" if tok[1] == "<>" else tok[1]
        word = tok[1].upper() if tok[0] == "word" else None
        if word in ("LIKE", "ILIKE", "IN"):
            return word
        if word == "NOT":
            nxt = self.take()
            if self.word_is(nxt, "IN"):
                return "NOT IN"
            if self.word_is(nxt, "LIKE", "ILIKE"):
                return "NOT " + nxt[1].upper()
        if word == "IS":
            nxt = self.take()
            if self.word_is(nxt, "NULL"):
                return "IS NULL"
            if self.word_is(nxt, "NOT") and self.word_is(self.take(), "NULL"):
                return "IS NOT NULL"
        raise _invalid(f"Invalid comparator in filter {self.text!r}")

    def parse_value(self) -> Any:
        kind, text = self.take()
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind in ("squote", "dquote"):
            return _unquote(kind, text)
        if kind == "lparen":
            items = []
            while True:
                k, t = self.take()
                if k not in ("squote", "dquote", "number"):
                    raise _invalid(f"Invalid list in filter {self.text!r}: values must be quoted strings")
                items.append(_unquote(k, t))
                k, t = self.take()
                if k == "rparen":
                    return tuple(items)
                if k != "comma":
                    raise _invalid(f"Invalid list in filter {self.text!r}")
        raise _invalid(f"Invalid value {text!r} in filter {self.text!r}: strings must be quoted")

    def parse(self) -> list[Comparison]:
        out = []
        while True:
            kind, key = self.parse_identifier()
            op = self.parse_comparator()
            value = None if op in ("IS NULL", "IS NOT NULL") else self.parse_value()
            out.append(self.check(kind, key, op, value))
            nxt = self.peek()
            if nxt is None:
                return out
            if not self.word_is(nxt, "AND"):
                raise _invalid(f"Invalid clause(s) in filter string: {self.text!r}. Only AND is supported.")
            self.take()

    def check(self, kind: str, key: str, op: str, value: Any) -> Comparison:
        e = self.entity
        if kind == "attribute":
            spec = e.attributes.get(key) or e.attributes.get(key.lower())
            if spec is None:
                raise _invalid(
                    f"Invalid attribute key '{key}' specified. Valid keys are '{sorted(set(v[1] for v in e.attributes.values()))}'"
                )
            typ, canonical = spec
            if typ == "numeric":
                ops = NUMERIC_OPS
                if op not in ops or not isinstance(value, (int, float)):
                    raise _invalid(
                        f"Invalid comparator '{op}' or value {value!r} for numeric attribute '{canonical}'"
                    )
            else:
                ops = e.string_attr_ops + (("IN", "NOT IN") if canonical in e.in_attributes else ())
                if op not in ops:
                    raise _invalid(f"Invalid comparator '{op}' not one of '{list(ops)}' for attribute '{canonical}'")
                if op in ("IN", "NOT IN"):
                    if not isinstance(value, tuple):
                        raise _invalid(f"Expected a list of quoted strings for '{op}' on '{canonical}'")
                elif not isinstance(value, str):
                    raise _invalid(f"Expected a quoted string value for attribute '{canonical}', got {value!r}")
            return Comparison("attribute", canonical, op, value)
        ops = e.kinds.get(kind)
        if ops is None:
            raise _invalid(f"Invalid entity type '{kind}' for {e.name} search")
        if op not in ops:
            raise _invalid(f"Invalid comparator '{op}' not one of '{list(ops)}' for {kind} '{key}'")
        if kind == "metric":
            if not isinstance(value, (int, float)):
                raise _invalid(f"Expected numeric value type for metric '{key}', got {value!r}")
            return Comparison(kind, key, op, float(value))
        if kind == "dataset":
            if key not in ("name", "digest", "context"):
                raise _invalid(f"Invalid dataset key '{key}'. Valid keys are ['context', 'digest', 'name']")
        if op in ("IN", "NOT IN"):
            if not isinstance(value, tuple):
                raise _invalid(f"Expected a list of quoted strings for '{op}'")
        elif op not in ("IS NULL", "IS NOT NULL") and not isinstance(value, str):
            raise _invalid(f"Expected a quoted string value for {kind} '{key}', got {value!r}")
        return Comparison(kind, key, op, value)


def parse_filter(text: str | None, entity: Entity) -> list[Comparison]:
    if text is None or not text.strip():
        return []
    return _Parser(text, entity).parse()


def parse_order_by(clause: str, entity: Entity, extra_attributes: dict[str, str] | None = None) -> OrderBy:
    """``"metrics.acc DESC"`` -> OrderBy. ``extra_attributes`` names sortable-only attributes."""
    parser = _Parser(clause, entity)
    if not parser.tokens:
        raise _invalid(f"Invalid order_by clause '{clause}'")
    kind, key = parser.parse_identifier()
    ascending = True
    nxt = parser.peek()
    if nxt is not None:
        if parser.word_is(nxt, "ASC", "DESC"):
            ascending = nxt[1].upper() == "ASC"
            parser.take()
        if parser.peek() is not None:
            raise _invalid(f"Invalid order_by clause '{clause}'. Could not be parsed.")
    if kind == "attribute":
        spec = entity.attributes.get(key) or entity.attributes.get(key.lower())
        if spec is not None:
            key = spec[1]
        elif extra_attributes and key in extra_attributes:
            key = extra_attributes[key]
        else:
            raise _invalid(f"Invalid order_by clause '{clause}'. Unknown attribute '{key}'.")
    elif kind not in entity.kinds:
        raise _invalid(f"Invalid order_by entity type '{kind}' in '{clause}'")
    return OrderBy(kind, key, ascending)


def encode_page_token(offset: int, after: list | None = None) -> str:
    """An opaque token: the offset of the next page and, where a store pages by key, the sort key
    of the last row given (so the next page starts with an index seek, not a skip)."""
    data = {"offset": offset} if after is None else {"offset": offset, "after": after}
    return base64.b64encode(orjson.dumps(data)).decode()


def decode_page_token(token: str | None) -> int:
    return decode_keyed_page_token(token)[0]


def decode_keyed_page_token(token: str | None) -> tuple[int, list | None]:
    if not token:
        return 0, None
    try:
        data = orjson.loads(base64.b64decode(token, validate=True))
        offset = data["offset"]
        after = data.get("after")
    except Exception:  # noqa: BLE001 - any malformed token is the client's mistake
        raise _invalid(f"Invalid page token, could not base64-decode: {token!r}") from None
    # The upper bound keeps OFFSET (and OFFSET + LIMIT) inside a signed 64-bit integer.
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= 2**62:
        raise _invalid(f"Invalid page token: {token!r}")
    if after is not None and not (isinstance(after, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 2**63 for v in after)):
        raise _invalid(f"Invalid page token: {token!r}")
    return offset, after
