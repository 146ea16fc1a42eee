"""Slow, obviously-correct references the fleetwatch tests compare against.

River itself for the trees, and plain per-point loops for the rules the detector vectorizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from river.anomaly import HalfSpaceTrees

from fleetwatch.episodes import NO_TIME, AlarmRule


def river_model(
    n_trees: int, height: int, window_size: int, seed: int, limits: Mapping | None = None
) -> HalfSpaceTrees:
    return HalfSpaceTrees(
        n_trees=n_trees, height=height, window_size=window_size, seed=seed, limits=limits
    )


def river_scores(
    model: HalfSpaceTrees, X: np.ndarray, order: str = "score_then_learn", names=None
) -> np.ndarray:
    """River's scores for the rows of X, fed as dicts `{f0: ..., f1: ...}` (or `names`)."""
    names = names or [f"f{j}" for j in range(X.shape[1])]
    scores = np.empty(len(X))
    for i, row in enumerate(X.tolist()):
        x = dict(zip(names, row, strict=True))
        if order == "score_then_learn":
            scores[i] = model.score_one(x)
            model.learn_one(x)
        else:
            model.learn_one(x)
            scores[i] = model.score_one(x)
    return scores


def stream(n: int, d: int, seed: int, *, shifts: int = 3) -> np.ndarray:
    """A "real-ish" stream in [0, 1]: a slow cycle per feature, noise, a few level shifts
    and spikes, and some values outside [0, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    X = 0.5 + 0.2 * np.sin(2 * np.pi * t / (97 + 13 * np.arange(d))) + rng.normal(0, 0.03, (n, d))
    for start in rng.integers(0, n, shifts):
        X[start : start + n // 10] += rng.choice([-0.3, 0.3], d)
    spikes = rng.integers(0, n, max(1, n // 50))
    X[spikes] += rng.normal(0, 0.6, (len(spikes), d))
    return X


class NaiveAlarm:
    """`AlarmRule` applied point by point, as its documentation reads."""

    def __init__(self, rule: AlarmRule) -> None:
        self.rule = rule
        self.run = self.quiet = 0
        self.open = False
        self.last_above = NO_TIME

    def step(self, t: int, above: bool) -> dict[str, bool]:
        rule = self.rule
        gap = (
            self.open
            and rule.quiet_ns is not None
            and self.last_above != NO_TIME
            and t - self.last_above >= rule.quiet_ns
        )
        if gap:
            self.open = False
        self.run = self.run + 1 if above else 0
        self.quiet = 0 if above else self.quiet + 1
        if above:
            self.last_above = t
        start = end = False
        if self.open:
            inside = True
            if self.quiet >= rule.quiet_points:
                self.open, end = False, True
        elif self.run >= rule.persistence:
            self.open = start = inside = True
        else:
            inside = False
        return {
            "in_episode": inside,
            "episode_start": start,
            "episode_end": end,
            "gap_closed": gap,
            "is_anomaly": above and inside,
        }


def naive_detector(
    frames: Iterable[pd.DataFrame], config, key: str = "unique_id", time: str = "time"
) -> pd.DataFrame:
    """The detector's rules with a River model per machine, one point at a time.

    Physical-limit scaling only; frames must have no NaN, no stale or duplicate points.
    """
    features: Sequence[str] = config.features
    models: dict[str, HalfSpaceTrees] = {}
    alarms: dict[str, NaiveAlarm] = {}
    out = []
    for frame in frames:
        frame = frame.copy()
        stamps = pd.to_datetime(frame[time], utc=True)
        frame["_t"] = stamps.dt.tz_localize(None).to_numpy("datetime64[ns]").astype(np.int64)
        frame = frame.sort_values([key, "_t"], kind="stable")
        records = []
        for _, row in frame.iterrows():
            machine = str(row[key])
            model = models.setdefault(
                machine,
                river_model(config.n_trees, config.height, config.window_size, config.seed),
            )
            alarm = alarms.setdefault(machine, NaiveAlarm(config.rule))
            x = {
                f: (float(row[f]) - config.limits[f][0])
                / (config.limits[f][1] - config.limits[f][0])
                for f in features
            }
            warm = not model._first_window
            score = model.score_one(x)
            flags = alarm.step(int(row["_t"]), warm and score > config.threshold)
            learned = config.learn_anomalies or not flags["in_episode"]
            if learned:
                model.learn_one(x)
            records.append({"score": float(score), "learned": learned, **flags})
        out.append(pd.DataFrame(records, index=frame.index).reindex(frame.index))
    return pd.concat(out)
