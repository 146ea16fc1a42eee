"""YAML that remembers where each value was written, so a bad value's error names its line.

PyYAML's `safe_load` returns plain dicts and lists and forgets the lines; its composer knows
them. `load_located` composes the document and turns every node into a `Located` value (the
Python value and its 1-based line and column), constructing scalars with PyYAML's safe rules
(so `95` is an int, `true` a bool, `2m` a string). It also rejects what `safe_load` silently
accepts: a key written twice (the second would win) and aliases (a value written once and used
in several places has no single line to point at).

>>> doc = load_located("checks:\\n  - name: hot\\n    above: 95\\n")
>>> entry = doc.value["checks"].value[0]
>>> entry.value["above"].value, entry.value["above"].line
(95, 3)
>>> load_located("a: 1\\na: 2\\n")
Traceback (most recent call last):
...
influx_magic.checks.located_yaml.YamlError: line 2, column 1: the key 'a' is written twice (first on line 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


class YamlError(ValueError):
    """The text is not YAML we accept; the message starts with the line (and column)."""

    def __init__(self, line: int, column: int | None, message: str) -> None:
        where = f"line {line}" + (f", column {column}" if column else "")
        super().__init__(f"{where}: {message}")
        self.line = line
        self.column = column
        self.reason = message


@dataclass(frozen=True)
class Located:
    """A YAML value with where it was written: `value` is a scalar (str, int, float, bool,
    None), a `dict[str, Located]` or a `list[Located]`; `line` and `column` count from 1.
    `key_line` is the line of the key a mapping value belongs to (None for list items)."""

    value: Any
    line: int
    column: int
    key_line: int | None = None
    raw: str | None = None  # a scalar as written (`off` stays "off" where text is expected)

    def plain(self) -> Any:
        """The value with every `Located` inside unwrapped (for storing or printing)."""
        if isinstance(self.value, dict):
            return {key: item.plain() for key, item in self.value.items()}
        if isinstance(self.value, list):
            return [item.plain() for item in self.value]
        return self.value


def load_located(text: str) -> Located:
    """The document in `text` as `Located` values; an empty document is an empty mapping."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                mark = event.start_mark
                raise YamlError(mark.line + 1, mark.column + 1, "aliases (*name) are not supported")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        reason = " ".join(str(part) for part in (error.context, error.problem) if part)
        if mark is None:
            raise YamlError(1, None, reason or str(error)) from None
        raise YamlError(mark.line + 1, mark.column + 1, reason) from None
    except yaml.YAMLError as error:  # e.g. a byte that is not allowed in YAML
        raise YamlError(1, None, str(error).strip()) from None
    if node is None:
        return Located({}, 1, 1)
    return _convert(node, SafeConstructor())


def _convert(node: Node, constructor: SafeConstructor) -> Located:
    line, column = node.start_mark.line + 1, node.start_mark.column + 1
    if isinstance(node, ScalarNode):
        try:
            value = constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as error:
            raise YamlError(line, column, str(error.problem)) from None
        return Located(value, line, column, raw=node.value)
    if isinstance(node, SequenceNode):
        return Located([_convert(item, constructor) for item in node.value], line, column)
    if isinstance(node, MappingNode):
        items: dict[str, Located] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlError(
                    key_line, key_node.start_mark.column + 1, "keys must be plain names"
                )
            key = str(constructor.construct_object(key_node))
            if key in items:
                raise YamlError(
                    key_line,
                    key_node.start_mark.column + 1,
                    f"the key {key!r} is written twice (first on line {items[key].key_line})",
                )
            child = _convert(value_node, constructor)
            items[key] = Located(child.value, child.line, child.column, key_line, child.raw)
        return Located(items, line, column)
    raise YamlError(line, column, f"unsupported YAML node {type(node).__name__}")
