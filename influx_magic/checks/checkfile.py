"""The checks file (`CHECKS_FILE`, default `influx-magic/checks.yaml`): read and validated.

Every mistake is a `ChecksFileError` whose message starts with the file and the line, e.g.

    influx-magic/checks.yaml line 12: check 'overheating' (limit): 'above' must be a number, got 'hot'

so a user fixes it without guessing. The file is read whole before any check runs: one bad
check stops them all (and the run, loudly) rather than leaving the fleet silently unchecked.
A missing file means no checks; an empty file or `checks: []` too.

Layout (see the README's checks guide for every key):

    version: 1
    checks:
      - name: overload            # unique; marks the check's episodes and messages
        kind: limit               # limit | no_data | window_test | sql
        sensor: load
        above: 150                # or below:
        for: 30s
        machines: "*"             # glob(s) on machineID; providers: glob(s) on provider

>>> checks = parse_checks("checks:\\n  - {name: hot, kind: limit, sensor: temperature, above: 95, for: 2m}\\n")
>>> checks[0].describe()
'temperature above 95 for 2m'
>>> parse_checks("checks:\\n  - name: hot\\n    kind: limit\\n    sensor: temperature\\n    abov: 95\\n")
Traceback (most recent call last):
...
influx_magic.checks.checkfile.ChecksFileError: checks.yaml line 5: check 'hot' (limit): unknown key 'abov' (did you mean 'above'?)
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from influx_magic.checks.located_yaml import Located, YamlError, load_located
from influx_magic.checks.spec import (
    KINDS,
    Check,
    LimitCheck,
    NoDataCheck,
    Selection,
    SqlCheck,
    WindowTest,
    parse_duration,
)

FORMAT_VERSION = 1
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PLACEHOLDER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
BOUND_BY_THE_CHECK = ("since", "until")
COMMON_KEYS = ("name", "kind", "description", "enabled")
SELECTION_KEYS = ("machines", "providers")
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "limit": ("sensor", "above", "below", "for", *SELECTION_KEYS),
    "no_data": ("for", "seen_within", *SELECTION_KEYS),
    "window_test": (
        "sensor",
        "window",
        "control_offset",
        "k",
        "direction",
        "min_points",
        *SELECTION_KEYS,
    ),
    "sql": ("query", "params", "window", *SELECTION_KEYS),
}
DEFAULTS = {
    "seen_within": "1d",
    "control_offset": "7d",
    "k": 3.0,
    "direction": "both",
    "min_points": 10,
    "sql_window": "5m",
}


class ChecksFileError(ValueError):
    """The checks file cannot be used; the message names the file and the line."""


def load_checks(path: Path, shown_as: str | None = None) -> list[Check]:
    """The enabled checks declared in `path` (none when the file does not exist).

    `shown_as` is how errors name the file (default: the path as given).
    """
    label = shown_as or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise ChecksFileError(f"{label}: cannot read the checks file: {error}") from None
    return parse_checks(text, label)


def parse_checks(text: str, label: str = "checks.yaml") -> list[Check]:
    """The enabled checks declared in `text` (see the module doc); `label` names the file."""
    try:
        document = load_located(text)
    except YamlError as error:
        raise ChecksFileError(f"{label} {error}") from None
    reader = _Reader(label)
    top = reader.mapping(document, "the checks file")
    reader.only_keys(top, ("version", "checks"), "the checks file")
    if "version" in top and top["version"].value != FORMAT_VERSION:
        reader.fail(top["version"].line, f"'version' must be {FORMAT_VERSION}")
    entries = top.get("checks")
    if entries is None or entries.value is None:
        return []
    if not isinstance(entries.value, list):
        reader.fail(entries.line, "'checks' must be a list of checks (each starting with '- ')")
    checks: list[Check] = []
    names: dict[str, int] = {}
    for entry in entries.value:
        check = reader.check(entry)
        if check is None:
            continue
        if check.name in names:
            reader.fail(
                check.line,
                f"check name {check.name!r} is used twice (first on line {names[check.name]})",
            )
        names[check.name] = check.line
        checks.append(check)
    return checks


class _Reader:
    """Validation helpers that raise `ChecksFileError` with the file, line and check."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.where = ""

    def fail(self, line: int, message: str) -> None:
        raise ChecksFileError(f"{self.label} line {line}: {self.where}{message}")

    def mapping(self, node: Located, what: str) -> dict[str, Located]:
        if not isinstance(node.value, dict):
            self.fail(node.line, f"{what} must be a mapping of 'key: value' lines")
        return node.value

    def only_keys(self, items: dict[str, Located], allowed: tuple[str, ...], what: str) -> None:
        for key, item in items.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = (
                    f" (did you mean {close[0]!r}?)"
                    if close
                    else f"; {what} takes {', '.join(allowed)}"
                )
                self.fail(item.key_line or item.line, f"unknown key {key!r}{hint}")

    def check(self, entry: Located) -> Check | None:
        self.where = ""
        items = self.mapping(entry, "each check")
        name = self.text(items, "name", entry, required=True)
        if not NAME.match(name):
            self.fail(
                items["name"].line,
                f"check name {name!r} must be letters, digits, '_', '.' or '-' (at most 64), "
                "starting with a letter or digit",
            )
        self.where = f"check {name!r}: "
        kind = self.text(items, "kind", entry, required=True)
        if kind not in KINDS:
            self.fail(items["kind"].line, f"'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
        self.where = f"check {name!r} ({kind}): "
        self.only_keys(items, (*COMMON_KEYS, *KIND_KEYS[kind]), f"a {kind} check")
        enabled = self.get(items, "enabled", True, self._bool)
        description = self.text(items, "description", entry) or ""
        builder: Callable[..., Check] = getattr(self, f"_{kind}")
        check = builder(items, entry, name, description)
        return check if enabled else None

    # -- one builder per kind ------------------------------------------------------------

    def _limit(
        self, items: dict[str, Located], entry: Located, name: str, description: str
    ) -> Check:
        sides = [side for side in ("above", "below") if side in items]
        if len(sides) != 1:
            line = items[sides[1]].key_line if len(sides) == 2 else entry.line
            self.fail(line or entry.line, "give exactly one of 'above' or 'below'")
        direction = sides[0]
        return LimitCheck(
            name=name,
            line=entry.line,
            description=description,
            sensor=self.text(items, "sensor", entry, required=True),
            direction=direction,  # type: ignore[arg-type]
            value=self.get(items, direction, None, self._number),
            duration=self.get(items, "for", "0s", self._duration(minimum=0.0)),
            selection=self.selection(items),
        )

    def _no_data(
        self, items: dict[str, Located], entry: Located, name: str, description: str
    ) -> Check:
        self.require(items, "for", entry)
        duration = self.get(items, "for", None, self._duration(minimum=1.0))
        seen_within = self.get(
            items, "seen_within", DEFAULTS["seen_within"], self._duration(minimum=1.0)
        )
        if seen_within < duration:
            self.fail(items["seen_within"].line, "'seen_within' must be at least 'for'")
        return NoDataCheck(
            name=name,
            line=entry.line,
            description=description,
            duration=duration,
            seen_within=seen_within,
            selection=self.selection(items),
        )

    def _window_test(
        self, items: dict[str, Located], entry: Located, name: str, description: str
    ) -> Check:
        self.require(items, "window", entry)
        window = self.get(items, "window", None, self._duration(minimum=1.0))
        offset = self.get(
            items, "control_offset", DEFAULTS["control_offset"], self._duration(minimum=1.0)
        )
        if offset < window:
            self.fail(
                items["control_offset"].line,
                "'control_offset' must be at least 'window' (the control window would overlap it)",
            )
        k = self.get(items, "k", DEFAULTS["k"], self._number)
        if not k > 0:
            self.fail(items["k"].line, f"'k' must be > 0, got {k:g}")
        direction = self.get(
            items, "direction", DEFAULTS["direction"], self._choice("above", "below", "both")
        )
        min_points = self.get(items, "min_points", DEFAULTS["min_points"], self._integer)
        if min_points < 2:
            self.fail(
                items["min_points"].line,
                "'min_points' must be at least 2 (a standard deviation needs two)",
            )
        return WindowTest(
            name=name,
            line=entry.line,
            description=description,
            sensor=self.text(items, "sensor", entry, required=True),
            window=window,
            control_offset=offset,
            k=k,
            direction=direction,
            min_points=min_points,
            selection=self.selection(items),
        )

    def _sql(self, items: dict[str, Located], entry: Located, name: str, description: str) -> Check:
        query = self.text(items, "query", entry, required=True).strip()
        line = items["query"].line
        bare = _without_literals(query)
        if not re.match(r"(?is)^\s*(select|with)\b", bare):
            self.fail(line, "'query' must be one SELECT (or WITH ... SELECT) statement")
        if ";" in bare.rstrip().rstrip(";"):
            self.fail(line, "'query' must be one statement (no ';' between statements)")
        params = self._params(items)
        used = set(PLACEHOLDER.findall(bare))
        for placeholder in sorted(used - set(params) - set(BOUND_BY_THE_CHECK)):
            self.fail(line, f"the query uses ${placeholder} but 'params' does not give it")
        for unused in sorted(set(params) - used):
            self.fail(
                items["params"].value[unused].key_line or line,
                f"params.{unused} is not used by the query (no ${unused} in it)",
            )
        return SqlCheck(
            name=name,
            line=entry.line,
            description=description,
            query=query.rstrip().rstrip(";").rstrip(),
            params=tuple(sorted(params.items())),
            window=self.get(items, "window", DEFAULTS["sql_window"], self._duration(minimum=1.0)),
            selection=self.selection(items),
        )

    def _params(self, items: dict[str, Located]) -> dict[str, str | int | float | bool]:
        if "params" not in items or items["params"].value is None:
            return {}
        node = items["params"]
        params: dict[str, str | int | float | bool] = {}
        for key, item in self.mapping(node, "'params'").items():
            line = item.key_line or item.line
            if not PARAM.match(key):
                self.fail(
                    line, f"parameter name {key!r} must be letters, digits and '_' (as in ${key})"
                )
            if key in BOUND_BY_THE_CHECK:
                self.fail(
                    line, f"${key} is bound by the check itself (the window); choose another name"
                )
            value = item.value
            if isinstance(value, float) and not math.isfinite(value):
                self.fail(item.line, f"params.{key} must be finite")
            if not isinstance(value, str | int | float | bool):
                self.fail(
                    item.line,
                    f"params.{key} must be a string, number or true/false, got {_shown(value)}",
                )
            params[key] = value
        return params

    # -- values --------------------------------------------------------------------------

    def require(self, items: dict[str, Located], key: str, entry: Located) -> None:
        if key not in items or items[key].value in (None, ""):
            self.fail(entry.line, f"needs {key!r}")

    def text(
        self, items: dict[str, Located], key: str, entry: Located, *, required: bool = False
    ) -> str:
        if required:
            self.require(items, key, entry)
        if key not in items or items[key].value is None:
            return ""
        value = items[key].value
        if isinstance(value, bool | int | float) and items[key].raw is not None:
            return items[key].raw  # YAML reads `name: off` as false; here it is the text "off"
        if not isinstance(value, str):
            self.fail(items[key].line, f"{key!r} must be text, got {_shown(value)}")
        return value

    def get(
        self, items: dict[str, Located], key: str, default: Any, convert: Callable[[Any], Any]
    ) -> Any:
        if key not in items or items[key].value is None:
            if default is None:
                self.fail(items[key].line if key in items else 0, f"needs {key!r}")
            value, line = default, None
        else:
            value, line = items[key].value, items[key].line
        try:
            return convert(value)
        except ValueError as error:
            self.fail(line or 0, f"{key!r} {error}")

    def selection(self, items: dict[str, Located]) -> Selection:
        patterns = {}
        for key in SELECTION_KEYS:
            node = items.get(key)
            if node is None or node.value is None:
                patterns[key] = ("*",)
                continue
            values = node.value if isinstance(node.value, list) else [node]
            found = []
            for item in values:
                if not isinstance(item.value, str | int) or not str(item.value).strip():
                    self.fail(
                        item.line,
                        f'{key!r} must be a glob pattern or a list of them, e.g. "machine*"',
                    )
                found.append(str(item.value).strip())
            if not found:
                self.fail(node.line, f"{key!r} lists no pattern (leave it out for every machine)")
            patterns[key] = tuple(found)
        return Selection(machines=patterns["machines"], providers=patterns["providers"])

    @staticmethod
    def _number(value: Any) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"must be a number, got {_shown(value)}")
        return float(value)

    @staticmethod
    def _integer(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, got {_shown(value)}")
        return value

    @staticmethod
    def _bool(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {_shown(value)}")
        return value

    @staticmethod
    def _duration(minimum: float) -> Callable[[Any], float]:
        def convert(value: Any) -> float:
            if not isinstance(value, str):
                raise ValueError(
                    f"must be a duration with a unit, e.g. 30s, 2m, 1h, 7d; got {_shown(value)}"
                )
            seconds = parse_duration(value)
            if seconds < minimum:
                raise ValueError(f"must be at least {minimum:g}s, got {value!r}")
            return seconds

        return convert

    @staticmethod
    def _choice(*options: str) -> Callable[[Any], str]:
        def convert(value: Any) -> str:
            if value not in options:
                raise ValueError(f"must be one of {', '.join(options)}, got {_shown(value)}")
            return value

        return convert


def _shown(value: Any) -> str:
    if isinstance(value, Located):
        value = value.plain()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _without_literals(query: str) -> str:
    """The query with its '...' strings, "..." identifiers and comments blanked, so a `$`, `;`
    or keyword inside them is not taken for SQL.

    >>> print(_without_literals("SELECT 'a;$b' AS \\"x$y\\" /* $c */ FROM t"))
    SELECT '' AS ""   FROM t
    """
    return re.sub(
        r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", _blank, query, flags=re.S
    )


def _blank(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.startswith("'"):
        return "''"
    if text.startswith('"'):
        return '""'
    return " "
