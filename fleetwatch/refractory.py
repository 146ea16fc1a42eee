"""One early detection per event: evidence counts as news only beyond what was just seen.

An event (a jump, a burst, a new level) produces surprising readings for a while; each is
evidence of the *same* event, and alerting on every one of them floods the user (and NAB
counts every one after the first as a false positive). Like a neuron's refractory period, a
machine remembers the largest surprise it saw recently, decaying with a half-life of
`half_life` readings, and a reading's news is what it adds beyond that memory:

    news_t = max(0, S_t - M_(t-1)),   M_t = max(M_(t-1) * d, S_t),   d = 2 ** (-1 / half_life)

The first reading of an event keeps its full surprise; the ones after it count only if they
are more surprising than the event so far; a new event after a few half-lives is news again.

After a gap in a machine's data (a restart) its first `GAP_HOLD` readings are not news: a
machine that stopped comes back cooler and its sensors catch up with the load within a few
seconds, every reading a step or a level the machine has not just shown. Their surprise still
enters the memory, so what follows counts only beyond that warm-up.
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

__all__ = ["GAP_HOLD", "Refractory"]

#: Readings after a gap whose surprise is held back from the news (a restart's warm-up: the
#: fast sensors' lags, a few seconds, three times over).
GAP_HOLD = 10


class Refractory:
    """Per machine: the decaying memory of recent surprise (module doc)."""

    STATE = ("memory", "hold")

    def __init__(self, half_life: float = 20.0) -> None:
        if not half_life > 0:
            raise ValueError(f"half_life must be > 0, got {half_life}")
        self.half_life = float(half_life)
        self.log_decay = -np.log(2.0) / self.half_life
        self.memory = np.zeros(0)  # the memory after each machine's last reading
        self.hold = np.zeros(0, np.int64)  # readings still held back after a gap

    def add_models(self, count: int) -> None:
        self.memory = np.r_[self.memory, np.zeros(count)]
        self.hold = np.r_[self.hold, np.zeros(count, np.int64)]

    def discount(
        self,
        rows: np.ndarray,
        starts: np.ndarray,
        surprise: np.ndarray,
        after_gap: np.ndarray | None = None,
        floor: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """News per reading (grouped by machine, group g from `starts[g]` in time order, the
        machine of each reading in `rows`), and the state after each reading (memory, readings
        still held: `commit` it for the last reading kept; the carried state is unchanged).
        `after_gap` marks readings that follow a gap: they and the next `GAP_HOLD - 1` are no
        news (module doc). `floor` is a memory from elsewhere that a reading's news must also
        exceed (`fleetwatch.recurrence`: what the machine showed at this time on earlier days)."""
        n = len(surprise)
        sizes = np.diff(np.r_[starts, n])
        local = np.arange(n) - np.repeat(starts, sizes)
        gap = np.zeros(n, bool) if after_gap is None else np.asarray(after_gap, bool)
        # Readings held before each one: GAP_HOLD from its group's last gap, or the carried
        # count, less the readings since.
        group = np.repeat(np.arange(len(starts)), sizes) * (n + 1)
        last_gap = np.maximum.accumulate(group + np.where(gap, local + 1, 0)) - group - 1
        carried = np.repeat(self.hold[rows[starts]], sizes)
        held = np.where(last_gap >= 0, GAP_HOLD - (local - last_gap), carried - local)
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
        news = surprise - (memory_before if floor is None else np.maximum(memory_before, floor))
        news = np.where(news > 1e-9 * surprise, news, 0.0)  # a repeat is 0, not a rounding error
        news = np.where(held > 0, 0.0, news)
        after = np.maximum(memory_before * np.exp(self.log_decay), surprise)
        return news, np.column_stack([after, np.maximum(held - 1, 0)])

    def commit(self, machines: np.ndarray, after: np.ndarray) -> None:
        """Keep `after` (the state after each machine's last kept reading, from `discount`)."""
        self.memory[machines] = after[:, 0]
        self.hold[machines] = after[:, 1].astype(np.int64)

    def state(self) -> dict[str, np.ndarray]:
        return {"memory": self.memory, "hold": self.hold}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.memory = np.asarray(arrays["memory"], np.float64).copy()
        self.hold = np.asarray(arrays["hold"], np.int64).copy()
        if self.hold.shape != self.memory.shape:
            raise ValueError("refractory hold and memory disagree on the number of machines")
