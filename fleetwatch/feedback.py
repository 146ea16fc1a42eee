"""What an operator's "false alarm" does to a machine's alarm: a bounded, decaying raise.

When someone marks an episode as a false alarm, the pattern that led it should stop alerting
on that machine, while a real fault of another kind still alerts. So a false alarm raises the
threshold of that machine *for points led by the episode's lead feature* (the sensor that
deviated most at its peak, see `fleetwatch.machine_rules`):

* to just above the episode's peak score: the excess of the peak over the threshold in force,
  plus a tenth (`OVERSHOOT`), so the same pattern at the same strength stays below;
* by at most `step` per false alarm, and all raises of one machine and feature together by
  at most `most`: feedback can make a machine quieter, never deaf;
* each raise fades linearly back to nothing over `decay_seconds` (default 7 days): a pattern
  that was benign last month is judged afresh.

Everything is a pure function of the raises recorded and the time asked about, so the product
(which stores the raises) and the evaluation (which replays them) agree.

>>> settings = FeedbackSettings(step=0.05, decay_seconds=100.0)
>>> amount = raise_for(peak_score=0.839, limit=0.8, settings=settings)
>>> round(amount, 4)
0.0429
>>> marks = [FalseAlarmRaise("m1", "vibration", amount, at=0.0)]
>>> rules = rules_with_feedback({}, marks, now=50.0, threshold=0.8, settings=settings)
>>> round(rules["m1"].feature_thresholds["vibration"], 4)
0.8215
>>> rules_with_feedback({}, marks, now=100.0, threshold=0.8, settings=settings)
{}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fleetwatch.machine_rules import MachineRule

__all__ = ["FalseAlarmRaise", "FeedbackSettings", "raise_for", "rules_with_feedback"]

OVERSHOOT = 1.1  # the raise covers the peak's excess over the threshold and a tenth more
HIGHEST = 0.99  # no raise takes a threshold beyond this (a score of 1 must still alert)


@dataclass(frozen=True)
class FeedbackSettings:
    """How far one false alarm raises a threshold (`step`), all of them together (`most`), and
    how long a raise takes to fade (`decay_seconds`)."""

    step: float = 0.05
    most: float = 0.15
    decay_seconds: float = 7 * 86400.0

    def __post_init__(self) -> None:
        if not 0.0 < self.step <= self.most < 1.0:
            raise ValueError(f"need 0 < step <= most < 1, got step {self.step}, most {self.most}")
        if not self.decay_seconds > 0:
            raise ValueError(f"decay_seconds must be > 0, got {self.decay_seconds}")


@dataclass(frozen=True)
class FalseAlarmRaise:
    """One false alarm's raise: `amount` on `machine`'s threshold for points led by `feature`
    (None: every point of the machine), given at `at` (epoch seconds)."""

    machine: str
    feature: str | None
    amount: float
    at: float

    def left(self, now: float, settings: FeedbackSettings) -> float:
        """What remains of the raise at `now` (linear fade; nothing before it was given)."""
        age = now - self.at
        if age < 0:
            return 0.0
        return self.amount * max(0.0, 1.0 - age / settings.decay_seconds)


def raise_for(peak_score: float, limit: float, settings: FeedbackSettings) -> float:
    """The raise a false alarm with `peak_score` earns when its pattern's threshold is `limit`
    now: the peak's excess plus a tenth, at most `settings.step` (0 when the peak is already
    below the threshold)."""
    excess = float(peak_score) - float(limit)
    if not excess > 0:
        return 0.0
    return min(settings.step, excess * OVERSHOOT)


def raised(
    raises: Iterable[FalseAlarmRaise],
    machine: str,
    feature: str | None,
    now: float,
    settings: FeedbackSettings,
) -> float:
    """The total raise in force for `machine` and `feature` at `now`, capped at `most`."""
    total = sum(
        r.left(now, settings) for r in raises if r.machine == machine and r.feature == feature
    )
    return min(settings.most, total)


def rules_with_feedback(
    rules: Mapping[str, MachineRule],
    raises: Iterable[FalseAlarmRaise],
    now: float,
    threshold: float,
    settings: FeedbackSettings,
) -> dict[str, MachineRule]:
    """`rules` (per machine; `threshold` is the configuration's) with the raises in force at
    `now` added: a machine-wide raise lifts the machine's threshold, a feature's raise sets a
    threshold for points led by that feature. Machines without a rule or a raise are left out.
    """
    raises = list(raises)
    out = {machine: rule for machine, rule in rules.items() if not rule.is_default}
    for machine in sorted({r.machine for r in raises}):
        base = rules.get(machine, MachineRule())
        machine_threshold = threshold if base.threshold is None else base.threshold
        lifted = raised(raises, machine, None, now, settings)
        new_threshold = min(HIGHEST, machine_threshold + lifted) if lifted > 0 else None
        features = dict(base.feature_thresholds)
        for feature in sorted({r.feature for r in raises if r.machine == machine and r.feature}):
            amount = raised(raises, machine, feature, now, settings)
            if amount > 0:
                start = max(machine_threshold, features.get(feature, machine_threshold))
                features[feature] = min(HIGHEST, start + lifted + amount)
        rule = MachineRule(
            threshold=new_threshold if new_threshold is not None else base.threshold,
            persistence=base.persistence,
            feature_thresholds=features,
        )
        if rule.is_default:
            out.pop(machine, None)
        else:
            out[machine] = rule
    return out
