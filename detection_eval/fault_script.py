"""The scripted fault schedule the simulator evaluation replays, the same for a given seed.

Each machine first runs healthy for a warm-up (a detector must learn normal before it can judge
it, and the pipeline's detector learns online), then cycles through the requested fault kinds
with healthy gaps between them. Machine k starts at the k-th kind, so even a short run with as
many machines as kinds injects every kind once. Every fault is followed by at least the shortest
gap before the run ends, so recovery is observed too.

>>> faults = scripted_faults(["m1", "m2"], 0.0, 7200.0, ("overload", "drift"), seed=1)
>>> [(f.machine_id, f.kind) for f in faults][:2]
[('m1', 'overload'), ('m2', 'drift')]
>>> all(f.start >= DEFAULT_WARMUP_S and f.end - f.start >= DEFAULT_FAULT_S[0] for f in faults)
True
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from detection_eval.episode_matching import Fault

DEFAULT_WARMUP_S = 1800.0
DEFAULT_FAULT_S = (180.0, 360.0)
DEFAULT_GAP_S = (600.0, 1200.0)


def scripted_faults(
    machine_ids: Sequence[str],
    start: float,
    duration: float,
    kinds: Sequence[str],
    seed: int,
    warmup: float = DEFAULT_WARMUP_S,
    fault_length: tuple[float, float] = DEFAULT_FAULT_S,
    gap: tuple[float, float] = DEFAULT_GAP_S,
) -> list[Fault]:
    """Faults per machine: warm-up, then kinds in rotation separated by healthy gaps."""
    if not kinds:
        raise ValueError("at least one fault kind is needed")
    rng = random.Random(f"fault-script:{seed}")
    end = start + duration
    faults = []
    for index, machine_id in enumerate(machine_ids):
        t = start + warmup + rng.uniform(0.0, gap[0] / 2)
        step = index
        while True:
            length = rng.uniform(*fault_length)
            if t + length + gap[0] > end:
                break
            faults.append(Fault(machine_id, kinds[step % len(kinds)], t, t + length))
            step += 1
            t += length + rng.uniform(*gap)
    if not faults:
        needed = (warmup + gap[0] / 2 + fault_length[1] + gap[0]) / 60
        raise ValueError(f"the run is too short for any fault: give at least {needed:.0f} minutes")
    return sorted(faults, key=lambda f: (f.start, f.machine_id))
