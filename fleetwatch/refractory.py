"""One early detection per event: evidence counts as news only beyond what was just seen.

An event (a jump, a burst, a new level) produces surprising readings for a while; each is
evidence of the *same* event, and alerting on every one of them floods the user (and NAB
counts every one after the first as a false positive). Like a neuron's refractory period, a
machine remembers the largest surprise it saw recently, decaying with a half-life of
`half_life` readings, and a reading's news is what it adds beyond that memory:

    news_t = max(0, S_t - M_(t-1)),   M_t = max(M_(t-1) * d, S_t),   d = 2 ** (-1 / half_life)

The first reading of an event keeps its full surprise; the ones after it count only if they
are more surprising than the event so far; a new event after a few half-lives is news again.
(The same suppression as the "anomaly likelihood" smoothing of Ahmad et al., "Unsupervised
real-time anomaly detection for streaming data", Neurocomputing 262, 2017, made explicit.)

The memory after each reading follows from a running maximum in log space,
`log M_i = i log d + max(log M_carried + log d, max_(j<=i) (log S_j - j log d))`, so a batch
of readings is processed at once (`discount`), with the memory carried per machine.

>>> refractory = Refractory(half_life=2.0)
>>> refractory.add_models(1)
>>> news, after = refractory.discount(np.zeros(6, np.intp), np.array([0, 0]),
...                                   np.array([9.0, 9.0, 8.0, 12.0, 0.0, 9.0]))
>>> news.round(2).tolist()  # the repeats are not news; the bigger one is, by what it adds
[9.0, 0.0, 0.0, 4.0, 0.0, 0.51]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fleetwatch.scaling import segmented_running_max

__all__ = ["Refractory"]


class Refractory:
    """Per machine: the decaying memory of recent surprise (module doc)."""

    STATE = ("memory",)

    def __init__(self, half_life: float = 20.0) -> None:
        if not half_life > 0:
            raise ValueError(f"half_life must be > 0, got {half_life}")
        self.half_life = float(half_life)
        self.log_decay = -np.log(2.0) / self.half_life
        self.memory = np.zeros(0)  # the memory after each machine's last reading

    def add_models(self, count: int) -> None:
        self.memory = np.r_[self.memory, np.zeros(count)]

    def discount(
        self, rows: np.ndarray, starts: np.ndarray, surprise: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """News per reading (grouped by machine, group g from `starts[g]` in time order, the
        machine of each reading in `rows`), and the memory after each reading. Does not
        change the carried memory: `commit` the memory after the last reading kept."""
        n = len(surprise)
        local = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        with np.errstate(divide="ignore"):
            log_s = np.where(surprise > 0, np.log(np.maximum(surprise, 1e-300)), np.nan)
            carried = self.memory[rows[starts]]
            carry = np.where(
                carried > 0, np.log(np.maximum(carried, 1e-300)) + self.log_decay, np.nan
            )
        weighted = log_s - local * self.log_decay
        before, _ = segmented_running_max(weighted, starts, carry)
        # memory before reading i: (i - 1) log d + max over what came before it
        log_before = (local - 1) * self.log_decay + before
        memory_before = np.where(np.isnan(log_before), 0.0, np.exp(log_before))
        news = surprise - memory_before
        news = np.where(news > 1e-9 * surprise, news, 0.0)  # a repeat is 0, not a rounding error
        after = np.maximum(memory_before * np.exp(self.log_decay), surprise)
        return news, after

    def commit(self, machines: np.ndarray, after: np.ndarray) -> None:
        """Keep `after` (the memory after each machine's last kept reading)."""
        self.memory[machines] = after

    def state(self) -> dict[str, np.ndarray]:
        return {"memory": self.memory}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.memory = np.asarray(arrays["memory"], np.float64).copy()
