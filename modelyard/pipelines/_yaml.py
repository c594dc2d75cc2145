"""YAML that remembers where each value came from.

A spec error must name the line of the bad key, so the file is composed into PyYAML's node tree
(which carries marks) and turned into dicts, lists and scalars that keep their line numbers:
:class:`YMap` knows the line of each key, :class:`YList` the line of each item.
"""
from __future__ import annotations

from typing import Any

import yaml

__all__ = ["YMap", "YList", "load", "line_of", "YamlError"]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(ValueError):
    def __init__(self, message: str, line: int | None):
        super().__init__(message)
        self.message = message
        self.line = line


class YMap(dict):
    """A mapping with ``line`` (where it starts) and ``key_lines`` (where each key is)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.line = 0
        self.key_lines: dict = {}

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class YList(list):
    """A sequence with ``line`` and ``item_lines``."""

    def __init__(self, *args):
        super().__init__(*args)
        self.line = 0
        self.item_lines: list = []

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


def line_of(value: Any, default: int = 0) -> int:
    return getattr(value, "line", default) or default


def load(text: str) -> Any:
    """Parse one YAML document; mappings and sequences come back as :class:`YMap`/:class:`YList`."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlError(f"invalid YAML: {exc.problem or exc.context}", mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"invalid YAML: {exc}", None) from None
    if node is None:
        return None
    return _build(node, yaml.SafeLoader(""), {})


def _build(node: yaml.Node, constructor: yaml.SafeLoader, anchors: dict) -> Any:
    if id(node) in anchors:  # an alias: the same node again
        return anchors[id(node)]
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = YMap()
        out.line, out.key_lines = line, {}
        anchors[id(node)] = out
        for key_node, value_node in _merged(node):
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                raise YamlError("mapping keys must be scalars", key_node.start_mark.line + 1)
            key = str(key) if not isinstance(key, str) else key
            if key in out.key_lines and not getattr(key_node, "_merged", False):
                raise YamlError(f"duplicate key '{key}'", key_node.start_mark.line + 1)
            out[key] = _build(value_node, constructor, anchors)
            out.key_lines[key] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        out = YList()
        out.line, out.item_lines = line, []
        anchors[id(node)] = out
        for item in node.value:
            out.append(_build(item, constructor, anchors))
            out.item_lines.append(item.start_mark.line + 1)
        return out
    return constructor.construct_object(node, deep=True)


def _merged(node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
    """The pairs of a mapping with ``<<: *anchor`` merge keys expanded (explicit keys win)."""
    pairs, merged = [], []
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for src in sources:
                if isinstance(src, yaml.MappingNode):
                    merged.extend(_merged(src))
        else:
            pairs.append((key_node, value_node))
    explicit = {k.value for k, _ in pairs if isinstance(k, yaml.ScalarNode)}
    out = []
    for k, v in merged:
        if isinstance(k, yaml.ScalarNode) and k.value not in explicit:
            k._merged = True  # noqa: SLF001 - a merged key may repeat an earlier merged one
            out.append((k, v))
    return out + pairs
