"""`influx-magic/machines.yaml`: per-machine settings, versioned with the Mage project.

Each entry picks machines by `machine` (a machineID or unique_id, exactly), by `provider` (a
glob on the provider's name, `Tanaka*`), or by both, and sets any of:

- `threshold`: the score a point must pass on these machines (the pipeline's is 0.8);
- `persistence`: how many points in a row open an episode (the pipeline's is 3);
- `mute`: planned mute windows (a maintenance calendar): one-off (`from`, `until`: ISO dates
  and times) or weekly (`every: [mon, thu]` with `from`/`until` as `HH:MM`, crossing midnight
  when `until` is earlier), each with an optional `timezone` (default UTC) and `reason`.

Entries picking by provider apply first, then those naming the machine; a later entry wins
for the same setting; mute windows of every matching entry add up (and add to mutes given with
`influx-magic mute`). Sensor lists are not per machine: every machine of one pipeline shares
its detector's features.

The file is read on every pipeline run (a change applies from the next run). A mistake is an
error naming the file and line, so a typo never silently applies the defaults:

>>> MachinesFile.parse("machines:\\n  - machine: m2\\n    threshold: high\\n", "machines.yaml")
Traceback (most recent call last):
...
influx_magic.operations.machines_file.MachinesFileError: machines.yaml, line 3: threshold must be a number in [0, 1), got 'high'
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from fleetwatch.machine_rules import MachineRule
from influx_magic.operations.machine_names import MachineIdentity

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ENTRY_KEYS = ("machine", "provider", "threshold", "persistence", "mute")
ONE_OFF_KEYS = ("from", "until", "timezone", "reason")
WEEKLY_KEYS = ("every", *ONE_OFF_KEYS)
UTC_ZONE = ZoneInfo("UTC")


class MachinesFileError(ValueError):
    """The file cannot be used; the message names the file, the line and what to change."""


@dataclass(frozen=True)
class MuteWindow:
    """A planned mute: one-off (`start`..`end`) or weekly (`days` at `start_time`..`end_time`
    in `zone`). `line` is where the file defines it."""

    line: int
    reason: str
    zone: ZoneInfo
    start: datetime | None = None
    end: datetime | None = None
    days: frozenset[int] = frozenset()
    start_time: time | None = None
    end_time: time | None = None

    def occurrence(self, moment: datetime) -> tuple[datetime, datetime] | None:
        """The window (start, end) covering `moment` (aware), or None."""
        if self.start is not None and self.end is not None:
            return (self.start, self.end) if self.start <= moment < self.end else None
        assert self.start_time is not None and self.end_time is not None
        local = moment.astimezone(self.zone)
        for back in (0, 1):  # an overnight window may have started the day before
            day = local.date() - timedelta(days=back)
            if day.weekday() not in self.days:
                continue
            begin = datetime.combine(day, self.start_time, self.zone)
            finish = datetime.combine(day, self.end_time, self.zone)
            if finish <= begin:
                finish += timedelta(days=1)
            if begin <= local < finish:
                return begin.astimezone(UTC), finish.astimezone(UTC)
        return None

    def describe(self) -> str:
        if self.start is not None and self.end is not None:
            return f"{self.start.isoformat()} to {self.end.isoformat()}"
        days = ",".join(DAYS[d] for d in sorted(self.days))
        return f"every {days} {self.start_time:%H:%M}-{self.end_time:%H:%M} {self.zone.key}"


@dataclass(frozen=True)
class MachineEntry:
    """One entry of the file: which machines, and what it sets for them."""

    line: int
    machine: str | None = None
    provider: str | None = None
    threshold: float | None = None
    persistence: int | None = None
    mute: tuple[MuteWindow, ...] = ()

    def matches(self, who: MachineIdentity) -> bool:
        if self.machine is not None and self.machine not in (who.machine_id, who.unique_id):
            return False
        return self.provider is None or fnmatch.fnmatchcase(who.provider, self.provider)


@dataclass(frozen=True)
class MachinesFile:
    """The parsed file (no entries when it does not exist)."""

    source: str
    entries: tuple[MachineEntry, ...] = ()

    @classmethod
    def load(cls, path: Path) -> MachinesFile:
        """Read and check `path`; a missing file means no per-machine settings. Messages name
        it relative to the working directory when it lies below it."""
        shown = str(path)
        with contextlib.suppress(ValueError):
            shown = str(Path(path).resolve().relative_to(Path.cwd().resolve()))
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(shown)
        except OSError as error:
            raise MachinesFileError(f"{shown}: cannot read it: {error}") from None
        return cls.parse(text, shown)

    @classmethod
    def parse(cls, text: str, source: str) -> MachinesFile:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error)
            raise MachinesFileError(f"{source}{where}: not valid YAML: {problem}") from None
        return cls(source, tuple(_Reader(source).file(root)))

    def matching(self, who: MachineIdentity) -> list[MachineEntry]:
        """The entries that apply to `who`, in the order they apply (provider globs first)."""
        found = [e for e in self.entries if e.matches(who)]
        return [e for e in found if e.machine is None] + [e for e in found if e.machine]

    def rule_for(self, who: MachineIdentity) -> MachineRule:
        threshold = persistence = None
        for entry in self.matching(who):
            threshold = entry.threshold if entry.threshold is not None else threshold
            persistence = entry.persistence if entry.persistence is not None else persistence
        return MachineRule(threshold=threshold, persistence=persistence)

    def rules(self, machines: Iterable[MachineIdentity]) -> dict[str, MachineRule]:
        """The rules of the machines the file changes, by unique_id."""
        out = {}
        for who in machines:
            rule = self.rule_for(who)
            if not rule.is_default:
                out[who.unique_id] = rule
        return out

    def windows_for(self, who: MachineIdentity) -> list[MuteWindow]:
        return [w for entry in self.matching(who) for w in entry.mute]

    def overrides(self, who: MachineIdentity) -> list[str]:
        """What the file sets for `who`, for people: `threshold 0.85 (line 4)`."""
        said = []
        for entry in self.matching(who):
            if entry.threshold is not None:
                said.append(f"threshold {entry.threshold:g} (line {entry.line})")
            if entry.persistence is not None:
                said.append(f"persistence {entry.persistence} (line {entry.line})")
        return said


class _Reader:
    """Walks the composed YAML nodes, so every error can name its line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: yaml.Node, message: str) -> MachinesFileError:
        return MachinesFileError(f"{self.source}, line {node.start_mark.line + 1}: {message}")

    def value(self, node: yaml.Node) -> object:
        try:
            return SafeConstructor().construct_object(node, deep=True)
        except ConstructorError as error:
            raise self.fail(node, str(error.problem)) from None

    def mapping(self, node: yaml.Node, what: str, keys: tuple[str, ...]) -> dict:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping of {', '.join(keys)}")
        found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if key == "features":
                raise self.fail(
                    key_node,
                    "features cannot be set per machine: every machine of a pipeline shares "
                    "its detector's sensors (set them in the pipeline's runtime variables)",
                )
            if key not in keys:
                raise self.fail(key_node, f"unknown key {key!r} in {what}; use {', '.join(keys)}")
            if key in found:
                raise self.fail(key_node, f"{key} is given twice in {what}")
            found[str(key)] = (key_node, value_node)
        return found

    def file(self, root: yaml.Node | None) -> Iterable[MachineEntry]:
        if root is None:
            return []
        top = self.mapping(root, "the file", ("machines",))
        if "machines" not in top:
            return []
        node = top["machines"][1]
        if isinstance(node, yaml.ScalarNode) and self.value(node) is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, "machines must be a list of entries (each starting with '- ')")
        return [self.entry(item) for item in node.value]

    def entry(self, node: yaml.Node) -> MachineEntry:
        line = node.start_mark.line + 1
        fields = self.mapping(node, "an entry", ENTRY_KEYS)
        names = {}
        for key in ("machine", "provider"):
            if key in fields:
                names[key] = self.text(fields[key][1], key)
        if not names:
            raise self.fail(node, "an entry needs machine (a machineID or unique_id) or provider")
        threshold = persistence = None
        if "threshold" in fields:
            value_node = fields["threshold"][1]
            threshold = self.value(value_node)
            if isinstance(threshold, bool) or not isinstance(threshold, int | float):
                raise self.fail(
                    value_node, f"threshold must be a number in [0, 1), got {value_node.value!r}"
                )
            if not 0.0 <= threshold < 1.0:
                raise self.fail(value_node, f"threshold must be in [0, 1), got {threshold:g}")
            threshold = float(threshold)
        if "persistence" in fields:
            value_node = fields["persistence"][1]
            persistence = self.value(value_node)
            if isinstance(persistence, bool) or not isinstance(persistence, int) or persistence < 1:
                raise self.fail(
                    value_node, f"persistence must be a whole number >= 1, got {value_node.value!r}"
                )
        windows: tuple[MuteWindow, ...] = ()
        if "mute" in fields:
            windows = self.windows(fields["mute"][1])
        return MachineEntry(
            line, threshold=threshold, persistence=persistence, mute=windows, **names
        )

    def text(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or not str(node.value).strip():
            raise self.fail(node, f"{what} must be a name")
        return str(node.value)  # as written: `machine: 007` stays "007"

    def windows(self, node: yaml.Node) -> tuple[MuteWindow, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, "mute must be a list of windows (each starting with '- ')")
        return tuple(self.window(item) for item in node.value)

    def window(self, node: yaml.Node) -> MuteWindow:
        line = node.start_mark.line + 1
        weekly = isinstance(node, yaml.MappingNode) and any(
            self.value(k) == "every" for k, _ in node.value
        )
        fields = self.mapping(node, "a mute window", WEEKLY_KEYS if weekly else ONE_OFF_KEYS)
        for key in ("from", "until"):
            if key not in fields:
                raise self.fail(node, f"a mute window needs {key}")
        zone = UTC_ZONE
        if "timezone" in fields:
            zone_node = fields["timezone"][1]
            try:
                zone = ZoneInfo(str(zone_node.value))
            except (ZoneInfoNotFoundError, ValueError):
                raise self.fail(
                    zone_node, f"unknown timezone {zone_node.value!r} (e.g. UTC, Europe/Berlin)"
                ) from None
        reason = str(fields["reason"][1].value) if "reason" in fields else "planned"
        start_node, end_node = fields["from"][1], fields["until"][1]
        if weekly:
            days = self.days(fields["every"][1])
            start_time = self.time_of_day(start_node, "from")
            end_time = self.time_of_day(end_node, "until")
            if start_time == end_time:
                raise self.fail(start_node, "from and until are the same time of day")
            return MuteWindow(line, reason, zone, None, None, days, start_time, end_time)
        start = self.moment(start_node, "from", zone)
        end = self.moment(end_node, "until", zone)
        if end <= start:
            raise self.fail(end_node, f"until ({end.isoformat()}) is not after from")
        return MuteWindow(line, reason, zone, start, end)

    def days(self, node: yaml.Node) -> frozenset[int]:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        days = set()
        for item in items:
            name = str(getattr(item, "value", "")).strip().lower()[:3]
            if not isinstance(item, yaml.ScalarNode) or name not in DAYS:
                raise self.fail(item, f"every takes days: {', '.join(DAYS)}, got {item.value!r}")
            days.add(DAYS.index(name))
        if not days:
            raise self.fail(node, "every needs at least one day")
        return frozenset(days)

    def time_of_day(self, node: yaml.Node, what: str) -> time:
        raw = str(node.value).strip()  # the text as written: YAML would read 10:30 as 630
        try:
            return time.fromisoformat(raw)
        except ValueError:
            raise self.fail(node, f"{what} must be a time of day like 06:00, got {raw!r}") from None

    def moment(self, node: yaml.Node, what: str, zone: ZoneInfo) -> datetime:
        raw = str(node.value).strip()
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise self.fail(
                node, f"{what} must be a date and time like 2025-06-02T06:00:00+02:00, got {raw!r}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return moment.astimezone(UTC)
