"""What operators decided, applied to machines at one moment: the detector's per-machine rules
(`machines.yaml` thresholds and persistence, plus the raises false alarms earned) and the mutes
in force (the file's maintenance calendar and the tool's mutes).

The pipeline asks this on every run (rules for scoring, mutes for alerting), `influx-magic
status` and the fleet page ask it for people; all three read the same files, so what the page
shows is what the next run does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fleetwatch.feedback import FeedbackSettings, raise_for, rules_with_feedback
from fleetwatch.machine_rules import MachineRule
from influx_magic.operations.machine_names import MachineIdentity
from influx_magic.operations.machines_file import MachinesFile
from influx_magic.operations.operator_store import OperatorState, OperatorStore
from influx_magic.settings import float_setting, path_setting, setting
from magic_common.durations import parse_duration


def feedback_settings(env: Mapping[str, str] | None = None) -> FeedbackSettings:
    """`FALSE_ALARM_STEP`, `FALSE_ALARM_MAX` and `FALSE_ALARM_DECAY`, checked (an error names
    the setting)."""
    try:
        seconds = parse_duration(setting("FALSE_ALARM_DECAY", env))
    except ValueError as error:
        raise ValueError(f"FALSE_ALARM_DECAY: {error}") from None
    step, most = float_setting("FALSE_ALARM_STEP", env), float_setting("FALSE_ALARM_MAX", env)
    try:
        return FeedbackSettings(step=step, most=most, decay_seconds=seconds)
    except ValueError as error:
        raise ValueError(
            f"FALSE_ALARM_STEP / FALSE_ALARM_MAX / FALSE_ALARM_DECAY: {error}"
        ) from None


@dataclass(frozen=True)
class Mute:
    """A mute in force for one machine at one moment: until when and why."""

    until: datetime
    reason: str
    source: str  # "influx-magic mute by ana" or "machines.yaml line 7"


def mutes_at(
    who: MachineIdentity, moment: datetime, state: OperatorState, machines_file: MachinesFile
) -> list[Mute]:
    """Every mute covering `moment` for `who`: the tool's, then the file's windows."""
    found = [
        Mute(datetime.fromisoformat(m.until), m.reason, f"influx-magic mute by {m.who}")
        for m in state.mutes_at(who.unique_id, moment)
    ]
    for window in machines_file.windows_for(who):
        span = window.occurrence(moment)
        if span is not None:
            source = f"{Path(machines_file.source).name} line {window.line}"
            found.append(Mute(span[1], window.reason, source))
    return found


@dataclass(frozen=True)
class OperatorPolicy:
    """The machines file, the operator state and the feedback settings, read once."""

    machines_file: MachinesFile
    state: OperatorState
    feedback: FeedbackSettings

    @classmethod
    def load(cls, state_dir: Path, env: Mapping[str, str] | None = None) -> OperatorPolicy:
        """Read `MACHINES_FILE` and the operator state of `state_dir` (errors name the line)."""
        return cls(
            MachinesFile.load(path_setting("MACHINES_FILE", env)),
            OperatorStore(state_dir).read(),
            feedback_settings(env),
        )

    def rules(
        self, machines: Iterable[MachineIdentity], now: datetime, threshold: float
    ) -> dict[str, MachineRule]:
        """The detector's rules at `now`, by unique_id (machines left out use the defaults)."""
        base = self.machines_file.rules(machines)
        raises = self.state.raises()
        return rules_with_feedback(base, raises, now.timestamp(), threshold, self.feedback)

    def mutes(self, who: MachineIdentity, moment: datetime) -> list[Mute]:
        """Every mute covering `moment` for `who`."""
        return mutes_at(who, moment, self.state, self.machines_file)

    def false_alarm_raise(
        self, who: MachineIdentity, lead: str | None, peak: float, now: datetime, threshold: float
    ) -> tuple[float, float]:
        """(raise, threshold in force) for a false alarm of `who` led by `lead` with `peak`."""
        rule = self.rules([who], now, threshold).get(who.unique_id, MachineRule())
        limit = rule.limit(lead, threshold)
        return raise_for(peak, limit, self.feedback), limit
