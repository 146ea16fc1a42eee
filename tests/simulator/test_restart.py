"""A restarted simulator continues smoothly: its first readings are those of a machine that has
been running (the cycle's phase from the clock, the lagged sensors from a healthy history drawn
from the seed), so a restart is a gap in the data, not a jump."""

from __future__ import annotations

import pytest

from machine_simulator.signals import Fleet

T0 = 1_700_000_000.0


@pytest.mark.parametrize("gap", [12, 60, 120])
def test_the_first_reading_after_a_restart_is_where_a_running_machine_would_be(gap) -> None:
    worst = 0.0
    for seed in (1, 7, 42):
        for start in (T0, T0 + 3333.0):
            running = Fleet(3, seed=seed)
            for k in range(600 + gap):
                running.step(start + k)
            went_on = running.step(start + 600 + gap)
            restarted = Fleet(3, seed=seed).step(start + 600 + gap)
            for a, b in zip(went_on, restarted, strict=True):
                worst = max(worst, abs(a.temperature - b.temperature))
    # Temperature follows load through a 45 s lag: started at its steady state instead, it
    # was up to 2.3 degrees off; now only the unknowable noise of the last minutes differs.
    assert worst < 1.0


def test_a_start_is_the_same_for_the_same_seed_and_time() -> None:
    first = [r.values() for r in Fleet(3, seed=42).step(T0 + 0.5)]
    assert first == [r.values() for r in Fleet(3, seed=42).step(T0 + 0.5)]
    assert first != [r.values() for r in Fleet(3, seed=42).step(T0 + 60.5)]
