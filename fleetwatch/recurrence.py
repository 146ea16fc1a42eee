"""Recurring surprise: what a machine showed at this time on earlier days is not news.

Many machines do something unusual at the same time every day: a nightly backup spikes the
CPU at 03:00, a batch job loads a line at shift change, a cron job writes a burst of requests.
The first time it is news; the tenth time it is the machine's routine. The daily profile
(`fleetwatch.seasonal`) learns a routine that shapes the level of a series, but a short burst
moves the level for a few readings only and is not learned there, and the trees' window (250
readings, 21 hours at 5-minute steps) never holds a day of history. So the surprise of a daily
burst stays high, day after day (NAB's `ec2_cpu_utilization_24ae8d` alerted on its 03:00
spike every day).

Per machine, the day is cut into `bins` phases by the reading's UTC time of day, and each
phase remembers the largest surprise seen in it on earlier days, halved (times `decay`) for
every day since. A reading's *recurring surprise* is the largest such memory over its phase
and the `NEIGHBOURS` phases either side (a job does not start to the second); the refractory
period (`fleetwatch.refractory`) counts as news only what a reading adds beyond both its
recent memory and this one. Readings of the same day never discount each other here (that is
the refractory period's part), so the first day keeps all its news and an event on a new day
at a new time of day is news in full. It is the same idea as the seasonal naive forecast
("the same time yesterday"; Hyndman and Athanasopoulos, *Forecasting: Principles and
Practice*, 3rd ed., 2021, sec. 5.2), applied to the surprise rather than the value.

Batches may span days (an evaluation reads a whole file at once): readings are taken a day
at a time, so a reading sees every earlier day's readings of its own batch too, and any split
of the stream gives the same result.

>>> import pandas as pd
>>> times = pd.to_datetime(["2024-01-01 03:00", "2024-01-01 09:00", "2024-01-02 03:05",
...                         "2024-01-02 09:40", "2024-01-03 03:00"]).asi8
>>> recurrence = DailyRecurrence(bins=288, decay=0.5)
>>> recurrence.add_models(1)
>>> rows, surprise = np.zeros(5, np.intp), np.array([12.0, 9.0, 10.0, 9.0, 3.0])
>>> recurrence.baseline(rows, times, surprise).tolist()  # 03:05 recalls 03:00; 09:40 is new
[0.0, 0.0, 12.0, 0.0, 10.0]
>>> recurrence.learn(rows[:2], times[:2], surprise[:2])  # kept: the first day, then
>>> recurrence.learn(rows[2:], times[2:], surprise[2:])  # the next two in one batch
>>> recurrence.baseline(rows[:1], times[:1] + 3 * DAY_NS, surprise[:1]).tolist()
[5.0]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fleetwatch.seasonal import DAY_NS

__all__ = ["NEIGHBOURS", "DailyRecurrence"]

#: Phases either side of a reading's own whose memory it is compared with.
NEIGHBOURS = 1
#: The day of a phase never visited (its memory is 0 on any real day).
NEVER = np.iinfo(np.int32).min
#: The memory's arrays (earlier, today, day; module doc), the state's or a scratch copy.
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


class DailyRecurrence:
    """Per machine and phase of the day: the surprise seen there on earlier days (module doc)."""

    STATE = ("earlier", "today", "day")

    def __init__(self, bins: int = 288, decay: float = 0.5) -> None:
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.bins = int(bins)
        self.decay = float(decay)
        # decay ** age by age in days; beyond the table a memory is 0 (below 1e-300 of itself)
        self._powers = self.decay ** np.arange(np.ceil(-300 / np.log10(self.decay)) + 2)
        self._powers[-1] = 0.0
        # Per machine and phase: the memory from the days before `day` (as of `day`), the
        # largest surprise on `day` itself, and `day` (days since the epoch, UTC).
        self.earlier = np.zeros((0, self.bins), np.float32)
        self.today = np.zeros((0, self.bins), np.float32)
        self.day = np.zeros((0, self.bins), np.int32)

    def add_models(self, count: int) -> None:
        self.earlier = np.concatenate([self.earlier, np.zeros((count, self.bins), np.float32)])
        self.today = np.concatenate([self.today, np.zeros((count, self.bins), np.float32)])
        self.day = np.concatenate([self.day, np.full((count, self.bins), NEVER, np.int32)])

    def baseline(self, rows: np.ndarray, times: np.ndarray, surprise: np.ndarray) -> np.ndarray:
        """Per reading (machine `rows`, epoch nanoseconds `times`, in time order per machine,
        with its `surprise`): its recurring surprise (module doc). The batch's earlier days
        count with their surprise; the state is not changed (`learn` the readings kept)."""
        return self._walk(rows, times, surprise, keep=False)

    def learn(self, rows: np.ndarray, times: np.ndarray, surprise: np.ndarray) -> None:
        """Remember the readings' surprise (the readings kept, in time order per machine)."""
        self._walk(rows, times, surprise, keep=True)

    def _walk(
        self, rows: np.ndarray, times: np.ndarray, surprise: np.ndarray, keep: bool
    ) -> np.ndarray:
        """A day at a time: each reading's memory of the earlier days (unless `keep`), then
        the day's surprise folded in (into the state with `keep`, else into a scratch copy
        when a later day of the batch needs it)."""
        rows, times = np.asarray(rows, np.intp), np.asarray(times, np.int64)
        surprise = np.asarray(surprise, float)
        floor = np.zeros(len(rows))
        days = times // DAY_NS
        phase = ((times % DAY_NS) * self.bins // DAY_NS).astype(np.intp)
        unique_days = np.unique(days)
        arrays: Arrays = (self.earlier, self.today, self.day)
        local = rows
        if not keep and len(unique_days) > 1:
            machines, local = np.unique(rows, return_inverse=True)
            arrays = (self.earlier[machines], self.today[machines], self.day[machines])
        for d in unique_days:
            at = np.flatnonzero(days == d)
            r, p = local[at], phase[at]
            if not keep:
                for shift in range(-NEIGHBOURS, NEIGHBOURS + 1):
                    memory = self._memory(arrays, r, (p + shift) % self.bins, d)
                    floor[at] = np.maximum(floor[at], memory)
            if keep or d != unique_days[-1]:
                self._fold(arrays, r, p, d, surprise[at])
        return floor

    def _memory(self, arrays: Arrays, r: np.ndarray, p: np.ndarray, d: int) -> np.ndarray:
        """The memory of phases `p` of machines `r` (rows of `arrays`) from before day `d`."""
        earlier, today, day = (a[r, p] for a in arrays)
        age = np.clip(d - day.astype(np.int64), 0, len(self._powers) - 1)
        carried = np.maximum(earlier * self._powers[age], today * self._powers[age - 1])
        return np.where(age == 0, earlier, carried)

    def _fold(
        self, arrays: Arrays, r: np.ndarray, p: np.ndarray, d: int, surprise: np.ndarray
    ) -> None:
        """Add day `d`'s readings (machines `r`, phases `p`) to the memory in `arrays`."""
        earlier, today, day = arrays
        first = np.unique((r * self.bins + p)[day[r, p] < d])  # phases new on day d
        if len(first):
            fr, fp = np.divmod(first, self.bins)
            earlier[fr, fp] = self._memory(arrays, fr, fp, d)
            today[fr, fp] = 0.0
            day[fr, fp] = d
        np.maximum.at(today, (r, p), surprise.astype(np.float32))

    def state(self) -> dict[str, np.ndarray]:
        return {"earlier": self.earlier, "today": self.today, "day": self.day}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        shapes = {np.shape(arrays[name]) for name in self.STATE}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[1] != self.bins:
            raise ValueError(f"recurrence arrays must all be (machines, {self.bins})")
        self.earlier = np.asarray(arrays["earlier"], np.float32).copy()
        self.today = np.asarray(arrays["today"], np.float32).copy()
        self.day = np.asarray(arrays["day"], np.int32).copy()
