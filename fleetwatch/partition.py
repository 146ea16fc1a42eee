"""Split a `FleetState` by machine, or merge states of disjoint machines into one.

Machines are independent: each has its own rows in every per-machine array (models, view
statistics, alarm run, last time and values) and its own open episode; only the trees'
structure is shared, and it is the same for every state of one configuration. So a state can
be cut into parts by machine key and the parts put back together in any grouping, and every
machine scores exactly as it would have in the whole (tested). This is what re-partitioning a
sharded deployment rests on: no model is rebuilt, no open episode forgotten.

Counters that belong to no machine (`detector.skipped`, `episodes.suppressed`) are summed by
`merge` and kept whole by the first part of `take` (zero in the others), so the fleet's totals
are unchanged. `extra` entries that map machine keys (`extra["machines"]`, the identities the
pipeline records) are split and merged by key; entries about the whole fleet rather than any machine
(`extra["checks"]`, the state of the pipeline's declared checks, which one shard judges for
all) go to the first part of `take` only; other `extra` values are copied. `merge` keeps the
first state's value of every entry that is not per machine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from fleetwatch.detector import FleetDetector
from fleetwatch.episodes import EpisodeTracker
from fleetwatch.state import FleetState

#: The trees' structure: shared by every machine (not cut or joined).
STRUCTURE = ("split_column", "split_threshold")
#: `extra` keys whose values are dicts keyed by machine.
PER_MACHINE_EXTRA = ("machines",)
#: `extra` keys about the whole fleet: kept by one part only (the first of `take`).
FLEET_WIDE_EXTRA = ("checks",)


def take(state: FleetState, machines: Iterable[str], *, counters: bool = True) -> FleetState:
    """A new state with only `machines` (keys the state knows), in the order given.

    `counters=False` leaves the fleet-wide counters at zero and the fleet-wide `extra` entries
    out (for every part but one).
    """
    keys = [str(key) for key in machines]
    index = {key: row for row, key in enumerate(state.detector.machines)}
    unknown = [key for key in keys if key not in index]
    if unknown:
        raise KeyError(f"machines not in the state: {unknown[:5]}")
    rows = np.array([index[key] for key in keys], dtype=np.intp)
    arrays = {
        name: value if name in STRUCTURE else value[rows]
        for name, value in state.detector.arrays().items()
    }
    meta = dict(state.detector.meta())
    meta["machines"] = keys
    if not counters:
        meta["skipped"] = dict.fromkeys(meta["skipped"], 0)
    detector = FleetDetector.from_state(meta, arrays)
    wanted = set(keys)
    episodes = state.episodes.to_json()
    episodes["open"] = [e for e in episodes["open"] if e["machine"] in wanted]
    episodes["quiet_until"] = {k: v for k, v in episodes["quiet_until"].items() if k in wanted}
    if not counters:
        episodes["suppressed"] = 0
    extra = {
        name: {k: v for k, v in value.items() if k in wanted}
        if name in PER_MACHINE_EXTRA and isinstance(value, dict)
        else value
        for name, value in state.extra.items()
        if counters or name not in FLEET_WIDE_EXTRA
    }
    return FleetState(detector, EpisodeTracker.from_json(episodes), extra)


def merge(states: Sequence[FleetState]) -> FleetState:
    """One state holding every machine of `states` (which must share their configuration and
    hold disjoint machines); machines keep the order of the states given."""
    if not states:
        raise ValueError("nothing to merge")
    first = states[0]
    config = first.detector.config
    for other in states[1:]:
        if other.detector.config != config:
            raise ValueError("cannot merge states of different detector configurations")
    trackers = [state.episodes.to_json() for state in states]
    if any(_settings(t) != _settings(trackers[0]) for t in trackers):
        raise ValueError("cannot merge states with different episode settings")
    keys = [key for state in states for key in state.detector.machines]
    twice = sorted(key for key, count in Counter(keys).items() if count > 1)
    if twice:
        raise ValueError(f"machines in more than one state: {twice[:5]}")
    parts = [state.detector.arrays() for state in states]
    arrays = {
        name: value if name in STRUCTURE else np.concatenate([p[name] for p in parts])
        for name, value in parts[0].items()
    }
    meta = dict(first.detector.meta())
    meta["machines"] = keys
    meta["skipped"] = {
        name: sum(int(s.detector.meta()["skipped"].get(name, 0)) for s in states)
        for name in meta["skipped"]
    }
    detector = FleetDetector.from_state(meta, arrays)
    episodes = dict(trackers[0])
    episodes["open"] = [e for t in trackers for e in t["open"]]
    episodes["quiet_until"] = {k: v for t in trackers for k, v in t["quiet_until"].items()}
    episodes["suppressed"] = sum(int(t.get("suppressed", 0)) for t in trackers)
    extra: dict = {}
    for state in states:
        for name, value in state.extra.items():
            if name in PER_MACHINE_EXTRA and isinstance(value, dict):
                extra.setdefault(name, {}).update(value)
            else:
                extra.setdefault(name, value)
    return FleetState(detector, EpisodeTracker.from_json(episodes), extra)


def _settings(tracker: dict) -> dict:
    return {k: v for k, v in tracker.items() if k not in ("open", "quiet_until", "suppressed")}
