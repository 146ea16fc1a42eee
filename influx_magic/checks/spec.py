"""What a declared check is: one frozen dataclass per kind, durations and machine selection.

The checks file (`influx_magic.checks.checkfile`) builds these; the evaluators
(`influx_magic.checks.kinds`) read them. A check has a `name` (unique in the file: it marks the
check's episodes and messages), a `kind`, its settings, and the line it starts on in the file
(for messages that point at it).

>>> parse_duration("90s"), parse_duration("2m"), parse_duration("1h30m"), parse_duration("7d")
(90.0, 120.0, 5400.0, 604800.0)
>>> format_duration(5400.0), format_duration(604800.0), format_duration(45.0)
('1h30m', '7d', '45s')
>>> Selection(machines=("machine[12]",), providers=("Tanaka*",)).matches("machine2", "Tanaka Seiki")
True
>>> Selection(machines=("machine[12]",)).matches("machine3", "Tanaka Seiki")
False
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import ClassVar, Literal

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|min|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds in a duration like `30s`, `2m`, `1h30m`, `7d` (units ms, s, m or min, h, d, w).

    Raises ValueError naming the accepted forms.
    """
    compact = str(text).strip().replace(" ", "")
    parts = _PART.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise ValueError(
            f"{text!r} is not a duration: write a number with a unit, e.g. 30s, 2m, 1h30m, 7d"
        )
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """The shortest of the forms `parse_duration` reads (whole seconds)."""
    remaining = round(seconds)
    if remaining == 0:
        return "0s"
    text = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size:
            text += f"{remaining // size}{unit}"
            remaining %= size
    return text


@dataclass(frozen=True)
class Selection:
    """Which machines a check covers: glob patterns on machineID and on provider (both must
    match one of their patterns; `*` is everything). Case-sensitive, as tags are."""

    machines: tuple[str, ...] = ("*",)
    providers: tuple[str, ...] = ("*",)

    def matches(self, machine_id: str, provider: str | None) -> bool:
        return any(fnmatch.fnmatchcase(machine_id, p) for p in self.machines) and any(
            fnmatch.fnmatchcase(provider or "", p) for p in self.providers
        )

    def describe(self) -> str:
        """Empty for every machine, else e.g. ' on machines machine1, machine2'."""
        parts = []
        if self.machines != ("*",):
            parts.append("machines " + ", ".join(self.machines))
        if self.providers != ("*",):
            parts.append("providers " + ", ".join(self.providers))
        return (" on " + " and ".join(parts)) if parts else ""


@dataclass(frozen=True)
class Check:
    """What every kind has: the name, where it is declared, and an optional description."""

    kind: ClassVar[str]
    name: str
    line: int
    description: str


@dataclass(frozen=True)
class LimitCheck(Check):
    """`sensor` above (or below) `value` for at least `duration` seconds, per machine: every
    reading of the sensor in that time is beyond the value (a gap in the data does not break
    the streak; a reading back within the limit ends it, and the finding with it)."""

    kind: ClassVar[str] = "limit"
    sensor: str
    direction: Literal["above", "below"]
    value: float
    duration: float
    selection: Selection

    def describe(self) -> str:
        held = f" for {format_duration(self.duration)}" if self.duration else ""
        return f"{self.sensor} {self.direction} {self.value:g}{held}{self.selection.describe()}"


@dataclass(frozen=True)
class NoDataCheck(Check):
    """A machine that sent readings before and none for `duration` seconds. A machine is known
    once any of its rows was seen (on the first evaluation: within `seen_within` seconds);
    one that never sent anything is not missing."""

    kind: ClassVar[str] = "no_data"
    duration: float
    seen_within: float
    selection: Selection

    def describe(self) -> str:
        return f"no data for {format_duration(self.duration)}{self.selection.describe()}"


@dataclass(frozen=True)
class WindowTest(Check):
    """The mean of `sensor` over the last `window` seconds against the same window
    `control_offset` seconds earlier: z = (mean(window) - mean(control)) / std(control);
    a finding when z > k (`direction` above), z < -k (below) or |z| > k (both). Windows with
    fewer than `min_points` readings are not judged."""

    kind: ClassVar[str] = "window_test"
    sensor: str
    window: float
    control_offset: float
    k: float
    direction: Literal["above", "below", "both"]
    min_points: int
    selection: Selection

    def describe(self) -> str:
        side = {"above": "above", "below": "below", "both": "away from"}[self.direction]
        return (
            f"mean {self.sensor} over {format_duration(self.window)} more than {self.k:g} "
            f"standard deviations {side} the same window {format_duration(self.control_offset)} "
            f"earlier{self.selection.describe()}"
        )


@dataclass(frozen=True)
class SqlCheck(Check):
    """A query returning the offending rows (`machineID`, `time`, `value`; `provider` when
    it has one) over the last `window` seconds. `$since` and `$until` are bound to that
    window; `params` are bound by name. A machine with rows has a finding; one without, none."""

    kind: ClassVar[str] = "sql"
    query: str
    params: tuple[tuple[str, str | int | float | bool], ...]
    window: float
    selection: Selection

    def describe(self) -> str:
        return f"SQL check over {format_duration(self.window)}{self.selection.describe()}"


KINDS: dict[str, type[Check]] = {
    "limit": LimitCheck,
    "no_data": NoDataCheck,
    "window_test": WindowTest,
    "sql": SqlCheck,
}
