"""Per-machine alarm rules: one machine's threshold and persistence, and raised thresholds for
anomalies led by one sensor.

The detector's configuration holds one threshold and one persistence for every machine it
scores; an operator sometimes needs another for one machine (a noisier plant, a machine whose
benign pattern was marked a false alarm). A `MachineRule` says what changes for one machine;
`FleetDetector.score_frame(frame, rules={unique_id: MachineRule})` applies it where points are
flagged. Scores do not change (they stay comparable across machines and runs): only which
points count as above the threshold, and how many in a row open an episode.

A point's *lead feature* is the sensor that deviates most at that point (largest |dev|, see
`FleetDetector`): `feature_thresholds` apply to points led by that sensor, so a raised
threshold for "vibration" quiets a benign vibration pattern while an overload (led by load)
meets the machine's usual threshold.

Rules are not part of the detector's state: the caller passes them on every call (the product
reads them from its settings file and operator feedback on each run).

>>> rule = MachineRule(threshold=0.82, feature_thresholds={"vibration": 0.84})
>>> rule.limit("vibration", 0.8), rule.limit("load", 0.8), MachineRule().limit("load", 0.8)
(0.84, 0.82, 0.8)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MachineRule", "RuleTable"]


def _check_threshold(value: float, what: str) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {value:g}")
    return value


@dataclass(frozen=True)
class MachineRule:
    """What one machine's alarm uses instead of the configuration's (None: the configuration's).

    `feature_thresholds` are thresholds for points led by a feature; a point meets the larger
    of the machine's threshold and its lead feature's.
    """

    threshold: float | None = None
    persistence: int | None = None
    feature_thresholds: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.threshold is not None:
            object.__setattr__(self, "threshold", _check_threshold(self.threshold, "threshold"))
        if self.persistence is not None:
            if isinstance(self.persistence, bool) or int(self.persistence) != self.persistence:
                raise ValueError(f"persistence must be a whole number, got {self.persistence!r}")
            if self.persistence < 1:
                raise ValueError(f"persistence must be >= 1, got {self.persistence}")
            object.__setattr__(self, "persistence", int(self.persistence))
        checked = {
            str(name): _check_threshold(value, f"threshold for {name}")
            for name, value in self.feature_thresholds.items()
        }
        object.__setattr__(self, "feature_thresholds", checked)

    def limit(self, lead: str | None, base: float) -> float:
        """The threshold a point led by `lead` must pass, given the configuration's `base`."""
        machine = base if self.threshold is None else self.threshold
        return max(machine, self.feature_thresholds.get(lead, machine)) if lead else machine

    @property
    def is_default(self) -> bool:
        return self.threshold is None and self.persistence is None and not self.feature_thresholds


class RuleTable:
    """The rules as arrays over the detector's machine rows, for vectorised flagging.

    `limits(rows, lead)` is each point's threshold, `persistence(rows)` each machine's count.
    """

    def __init__(
        self,
        rules: Mapping[str, MachineRule] | None,
        keys: Sequence[str],
        features: Sequence[str],
        threshold: float,
        persistence: int,
    ) -> None:
        n = len(keys)
        self.machine_limit = np.full(n, threshold)
        self.feature_limit = np.full((n, len(features)), threshold)
        self.persist = np.full(n, persistence, np.int64)
        position = {key: row for row, key in enumerate(keys)}
        for key, rule in (rules or {}).items():
            row = position.get(key)
            if row is None:
                continue  # a machine this detector has not seen: nothing to flag yet
            machine = threshold if rule.threshold is None else rule.threshold
            self.machine_limit[row] = machine
            self.feature_limit[row] = machine
            for j, name in enumerate(features):
                if name in rule.feature_thresholds:
                    self.feature_limit[row, j] = max(machine, rule.feature_thresholds[name])
            if rule.persistence is not None:
                self.persist[row] = rule.persistence

    def limits(self, rows: np.ndarray, lead: np.ndarray) -> np.ndarray:
        """Each point's threshold: its machine's, or its lead feature's (`lead` -1: none)."""
        limit = self.machine_limit[rows]
        led = lead >= 0
        limit[led] = self.feature_limit[rows[led], lead[led]]
        return limit

    def persistence(self, rows: np.ndarray) -> np.ndarray:
        return self.persist[rows]


def lead_features(deviations: np.ndarray) -> np.ndarray:
    """Per point, the index of the feature with the largest |deviation| (-1 when none is known).

    >>> lead_features(np.array([[0.5, -3.0], [np.nan, np.nan], [2.0, np.nan]])).tolist()
    [1, -1, 0]
    """
    magnitude = np.abs(deviations)
    known = ~np.isnan(magnitude).all(axis=1)
    lead = np.full(len(deviations), -1, np.int64)
    if known.any():
        lead[known] = np.nanargmax(magnitude[known], axis=1)
    return lead
