"""The fleet's signal model: healthy telemetry, injectable faults, ground truth. No I/O, no clock.

The MQTT publisher, the web page and the evaluation all drive the same `Fleet`; time is always
passed in (`fleet.step(t)` with epoch seconds), so evaluation can run hours of fleet time in
seconds and a replay with the same seed and times yields the same readings, value for value.

A healthy machine follows a production cycle: load is two slow sinusoids (a work cycle of
1.5-2.5 min and a shift-scale swell) plus autocorrelated process noise and sensor noise.
Temperature, power and vibration follow load through first-order lags (45 s, 2 s, 4 s) with
their own noise, so the four sensors are correlated but not copies of each other. Healthy
ranges: load ~45-105, temperature ~33-42, power ~180-235, vibration ~65-97. A machine's first
reading is that of a machine that has been running: the cycle's phase comes from the clock and
the lagged sensors from a few minutes of healthy history drawn from the seed and the start
time, so a simulator restarted after a pause continues smoothly (a gap in the data, not a jump).

Faults (one at a time per machine; defaults in `FaultParams`, from the product issue):
- `overload`: load +20 every 5 s up to 200 and held (the upstream fault);
- `spike`: bursts where load and power jump to 2.5x for 5-10 s (at least 5 readings),
  the first at once, then every 30-60 s;
- `bearing`: vibration rises to 2x its healthy level over 60 s and stays; load unchanged;
- `drift`: temperature rises 1 degree per 10 s, up to +25;
- `stuck`: temperature freezes at its last value while load keeps moving.

Noise and fault randomness come from separate streams per machine, so a faulty machine's
noise is the same as it would have been healthy: evaluation can compare the two.

Two healthy variations for offline scenarios, both off by default:
- `ShiftPattern`: a daily production pattern, the load high by day and low by night with
  linear ramps between (by the UTC time of day of `t`);
- `Outage`: a machine stops (no readings), cools down towards idle, and restarts at a level
  moved by `level_shift`: a data gap followed by a jump, what a restart can look like.

>>> fleet = Fleet(machines=2, seed=42)
>>> [r.machine_id for r in fleet.step(1_700_000_000.0)]
['machine1', 'machine2']
>>> event = fleet.set_fault("machine2", "overload", True, at=1_700_000_000.5)
>>> (event.kind, event.active, event.time_ms)
('overload', True, 1700000000500)
>>> later = [fleet.step(1_700_000_001.0 + k) for k in range(60)][-1]
>>> later[1].load, later[1].fault
(200.0, 'overload')
>>> fleet.set_fault("machine2", "overload", True, at=1_700_000_061.5) is None  # already on
True
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from machine_simulator.identity import machine_identity

FAULT_KINDS: tuple[str, ...] = ("overload", "spike", "bearing", "drift", "stuck")
#: Seconds of healthy running a machine's state is derived from when it starts (`_settle`):
#: several times the slowest lag (temperature, 45 s), so a restart continues smoothly.
SETTLE_SECONDS = 300
FIELDS: tuple[str, ...] = ("temperature", "load", "power", "vibration")
#: The unit each field is published in (the payload carries bare numbers).
UNITS: dict[str, str] = {"temperature": "°C", "load": "%", "power": "W", "vibration": "Hz"}


class UnknownFaultKind(ValueError):
    """A fault kind that is not in FAULT_KINDS."""


class UnknownMachine(KeyError):
    """A machine id that is not in the fleet."""


@dataclass(frozen=True)
class FaultParams:
    """How strong and how fast each fault kind is. Times in seconds."""

    overload_step: float = 20.0
    overload_every: float = 5.0
    overload_max: float = 200.0
    spike_factor: float = 2.5
    spike_gap: tuple[float, float] = (30.0, 60.0)
    spike_duration: tuple[float, float] = (5.0, 10.0)
    spike_min_readings: int = 5
    bearing_factor: float = 2.0
    bearing_ramp: float = 60.0
    drift_per_second: float = 0.1
    drift_max: float = 25.0


@dataclass(frozen=True)
class Reading:
    """One machine's sensor values at one instant, plus the fault active then (ground truth)."""

    machine_id: str
    provider: str
    barcode: str
    time: float
    temperature: float
    load: float
    power: float
    vibration: float
    fault: str | None = None

    @property
    def time_ms(self) -> int:
        """The timestamp as published: integer epoch milliseconds."""
        return round(self.time * 1000)

    def values(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in FIELDS}


@dataclass(frozen=True)
class FaultEvent:
    """A fault starting (`active=True`) or ending on one machine: the ground-truth log entry."""

    machine_id: str
    kind: str
    active: bool
    time: float

    @property
    def time_ms(self) -> int:
        return round(self.time * 1000)

    def to_json(self) -> dict[str, object]:
        return {
            "machineID": self.machine_id,
            "kind": self.kind,
            "active": self.active,
            "time": self.time_ms,
        }


@dataclass(frozen=True)
class FaultWindow:
    """A planned fault: `kind` on `machine_id` from `start` until `end` (None = to the end)."""

    machine_id: str
    kind: str
    start: float
    end: float | None = None


class FaultSchedule:
    """Planned faults for offline runs; `Fleet.step` applies them when their time comes.

    Windows on the same machine must not overlap (a machine has one fault at a time).

    >>> schedule = FaultSchedule([FaultWindow("machine1", "drift", 10.0, 20.0)])
    >>> [(e.time, e.active) for e in schedule.events()]
    [(10.0, True), (20.0, False)]
    >>> FaultSchedule([FaultWindow("machine1", "drift", 10, 30), FaultWindow("machine1", "stuck", 20)])
    Traceback (most recent call last):
    ...
    ValueError: fault windows overlap on machine1: drift from 10 and stuck from 20
    """

    def __init__(self, windows: Iterable[FaultWindow] = ()) -> None:
        self.windows: tuple[FaultWindow, ...] = tuple(sorted(windows, key=lambda w: w.start))
        last: dict[str, FaultWindow] = {}
        for window in self.windows:
            check_kind(window.kind)
            if window.end is not None and window.end <= window.start:
                raise ValueError(f"fault window ends before it starts: {window}")
            previous = last.get(window.machine_id)
            if previous is not None and (previous.end is None or previous.end > window.start):
                raise ValueError(
                    f"fault windows overlap on {window.machine_id}: {previous.kind} from "
                    f"{previous.start:g} and {window.kind} from {window.start:g}"
                )
            last[window.machine_id] = window

    def events(self) -> list[FaultEvent]:
        """Every start and end, in time order (an end before a start at the same instant)."""
        events = []
        for w in self.windows:
            events.append(FaultEvent(w.machine_id, w.kind, True, w.start))
            if w.end is not None:
                events.append(FaultEvent(w.machine_id, w.kind, False, w.end))
        return sorted(events, key=lambda e: (e.time, e.active))

    @classmethod
    def random(
        cls,
        machine_ids: Sequence[str],
        start: float,
        end: float,
        *,
        seed: int = 0,
        kinds: Sequence[str] = FAULT_KINDS,
        gap: tuple[float, float] = (600.0, 1800.0),
        duration: tuple[float, float] = (120.0, 600.0),
    ) -> FaultSchedule:
        """Faults at random on every machine: healthy gaps and fault durations drawn uniformly.

        >>> s = FaultSchedule.random(["machine1", "machine2"], 0.0, 7200.0, seed=1)
        >>> all(0 <= w.start < w.end <= 7200 for w in s.windows) and len(s.windows) > 2
        True
        """
        for kind in kinds:
            check_kind(kind)
        rng = random.Random(f"schedule:{seed}")
        windows = []
        for machine_id in machine_ids:
            t = start + rng.uniform(*gap)
            while t < end:
                stop = min(end, t + rng.uniform(*duration))
                windows.append(FaultWindow(machine_id, rng.choice(list(kinds)), t, stop))
                t = stop + rng.uniform(*gap)
        return cls(windows)


@dataclass(frozen=True)
class ShiftPattern:
    """Load high by day, low by night: the healthy load is scaled by `factor(t)`, 1 during the
    day shift (`day_start`..`day_end`, seconds after midnight UTC), `night` between shifts,
    with linear ramps of `ramp` seconds centred on the shift changes.

    >>> pattern = ShiftPattern()
    >>> [round(pattern.factor(h * 3600.0), 2) for h in (0, 6, 12, 22, 23)]
    [0.4, 0.7, 1.0, 0.7, 0.4]
    """

    day_start: float = 6 * 3600.0
    day_end: float = 22 * 3600.0
    night: float = 0.4
    ramp: float = 1800.0

    def factor(self, t: float) -> float:
        s = t % 86400.0
        up = (s - self.day_start) / self.ramp + 0.5
        down = (self.day_end - s) / self.ramp + 0.5
        level = min(1.0, max(0.0, min(up, down)))
        return self.night + (1.0 - self.night) * level


@dataclass(frozen=True)
class Outage:
    """`machine_id` stops at `start` (no readings while stopped: a data gap) and restarts at
    `end` with its work level `level_shift` load units from the machine's own (not from the
    level before: restarts do not add up). While stopped, load
    is 0 and temperature, power and vibration fall towards idle through their lags, so the
    first readings after the restart jump: a cooler machine warming up again."""

    machine_id: str
    start: float
    end: float
    level_shift: float = 0.0

    def __post_init__(self) -> None:
        if not self.end > self.start:
            raise ValueError(f"an outage must end after it starts: {self}")


def check_kind(kind: str) -> str:
    if kind not in FAULT_KINDS:
        raise UnknownFaultKind(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
    return kind


def _lag(state: float, target: float, dt: float, tau: float) -> float:
    """First-order lag toward `target`, exact for any step length (the clock is not fixed)."""
    return target + (state - target) * math.exp(-dt / tau)


@dataclass
class _ActiveFault:
    kind: str
    since: float
    frozen_temperature: float | None = None  # stuck: the value before its first reading
    burst_start: float = 0.0  # spike
    burst_end: float | None = None
    burst_readings: int = 0


@dataclass
class Machine:
    """One machine's healthy behaviour (drawn from the seed), its state and its fault."""

    machine_id: str
    seed: int
    params: FaultParams = field(default_factory=FaultParams)
    pattern: ShiftPattern | None = None

    def __post_init__(self) -> None:
        identity = machine_identity(self.seed, self.machine_id)
        self.provider = identity.provider
        self.barcode = identity.barcode
        shape = random.Random(f"shape:{self.seed}:{self.machine_id}")
        self.load_mid = self.own_load_mid = shape.uniform(70.0, 80.0)
        self.load_amp = shape.uniform(15.0, 20.0)
        self.cycle = shape.uniform(90.0, 150.0)
        self.swell = shape.uniform(600.0, 1200.0)
        self.phase = shape.uniform(0.0, 2 * math.pi)
        self.swell_phase = shape.uniform(0.0, 2 * math.pi)
        gain = shape.uniform(0.95, 1.05)
        self.temp_base, self.temp_gain = 28.0 * gain, 0.12 * gain
        self.power_base, self.power_gain = 140.0 * gain, 0.9 * gain
        self.vib_base, self.vib_gain = 55.0 * gain, 0.35 * gain
        self._noise = random.Random(f"noise:{self.seed}:{self.machine_id}")
        self._fault_rng = random.Random(f"faults:{self.seed}:{self.machine_id}")
        self._last_time: float | None = None
        self._process = 0.0  # autocorrelated load deviation
        self._temp = self._power = self._vib = 0.0
        self._last_temperature: float | None = None
        self.fault: _ActiveFault | None = None
        self.running = True

    @property
    def last_time(self) -> float | None:
        return self._last_time

    def set_fault(self, kind: str, active: bool, at: float) -> list[FaultEvent]:
        """Turn `kind` on or off at `at`; returns the events it caused (none when unchanged).

        Turning a kind on while another is active ends the other first.
        """
        check_kind(kind)
        if self._last_time is not None and at < self._last_time:
            raise ValueError(f"{self.machine_id}: fault at {at} is before the last reading")
        current = self.fault
        if not active:
            if current is None or current.kind != kind:
                return []
            self.fault = None
            return [FaultEvent(self.machine_id, kind, False, at)]
        if current is not None and current.kind == kind:
            return []
        events = []
        if current is not None:
            events.append(FaultEvent(self.machine_id, current.kind, False, at))
        self.fault = _ActiveFault(kind, at)
        if kind == "spike":
            self._start_burst(at)
        events.append(FaultEvent(self.machine_id, kind, True, at))
        return events

    def _start_burst(self, at: float) -> None:
        assert self.fault is not None
        self.fault.burst_start = at
        self.fault.burst_end = at + self._fault_rng.uniform(*self.params.spike_duration)
        self.fault.burst_readings = 0

    def _in_burst(self, t: float) -> bool:
        """Whether a spike burst covers `t`; ends a burst only after enough readings."""
        fault = self.fault
        assert fault is not None
        while True:
            if fault.burst_end is None:  # between bursts; burst_start is the next start
                if t < fault.burst_start:
                    return False
                self._start_burst(fault.burst_start)
                continue
            if t < fault.burst_end or fault.burst_readings < self.params.spike_min_readings:
                fault.burst_readings += 1
                return True
            fault.burst_start = fault.burst_end + self._fault_rng.uniform(*self.params.spike_gap)
            fault.burst_end = None

    def healthy_load(self, t: float) -> float:
        """The load the work cycle asks for at `t`, before noise and faults."""
        cycle = math.sin(2 * math.pi * t / self.cycle + self.phase)
        swell = math.sin(2 * math.pi * t / self.swell + self.swell_phase)
        load = self.load_mid + self.load_amp * cycle + 0.3 * self.load_amp * swell
        return load if self.pattern is None else load * self.pattern.factor(t)

    def stop(self) -> None:
        """Stop the machine: load 0 until `restart` (its readings are not published)."""
        self.running = False

    def restart(self, level_shift: float = 0.0) -> None:
        """Run again, at the machine's own work level moved by `level_shift` load units."""
        self.running = True
        self.load_mid = self.own_load_mid + level_shift

    def _settle(self, t: float) -> None:
        """Start at `t` as a machine that has been running: its process noise and lagged
        sensors are those of `SETTLE_SECONDS` of healthy readings up to `t` (the work cycle's
        phase comes from the clock), with noise drawn from the seed and `t` on a stream of
        their own, so the readings' noise stream is untouched and a restarted simulator
        continues smoothly instead of jumping to the sensors' steady state."""
        rng = random.Random(f"settle:{self.seed}:{self.machine_id}:{t!r}")
        keep = math.exp(-1.0 / 10.0)
        process = 0.0
        lagged: tuple[float, float, float] | None = None
        for k in range(SETTLE_SECONDS, 0, -1):
            process = process * keep + 3.0 * math.sqrt(1 - keep * keep) * rng.gauss()
            load = max(0.0, self.healthy_load(t - k) + process + 0.8 * rng.gauss())
            targets = (
                self.temp_base + self.temp_gain * load,
                self.power_base + self.power_gain * load,
                self.vib_base + self.vib_gain * load,
            )
            if lagged is None:
                lagged = targets
            else:
                lagged = tuple(
                    _lag(state, target, 1.0, tau)
                    for state, target, tau in zip(lagged, targets, (45.0, 2.0, 4.0), strict=True)
                )
        assert lagged is not None
        self._process = process
        self._temp, self._power, self._vib = lagged

    def step(self, t: float) -> Reading:
        if self._last_time is not None and t <= self._last_time:
            raise ValueError(f"{self.machine_id}: time {t} is not after {self._last_time}")
        if self._last_time is None:
            self._settle(t)
        dt = 1.0 if self._last_time is None else t - self._last_time
        noise = self._noise
        # Process noise: Ornstein-Uhlenbeck with a 10 s memory, exact for any dt.
        keep = math.exp(-dt / 10.0)
        self._process = self._process * keep + 3.0 * math.sqrt(1 - keep * keep) * noise.gauss()
        sensor = [noise.gauss() for _ in range(4)]

        load = max(0.0, self.healthy_load(t) + self._process + 0.8 * sensor[0])
        if not self.running:
            load = 0.0
        # A fault set for a later instant (a toggle during backfill) does not touch earlier readings.
        fault = self.fault if self.fault is not None and self.fault.since <= t else None
        kind = fault.kind if fault else None
        elapsed = t - fault.since if fault else 0.0
        healthy_power_load = load
        burst = kind == "spike" and self._in_burst(t)
        if kind == "overload":
            p = self.params
            raised = load + p.overload_step * (math.floor(elapsed / p.overload_every) + 1)
            load = min(p.overload_max, raised)
        elif burst:
            load *= self.params.spike_factor

        temp_target = self.temp_base + self.temp_gain * load
        vib_target = self.vib_base + self.vib_gain * load
        power_target = self.power_base + self.power_gain * (healthy_power_load if burst else load)
        self._temp = _lag(self._temp, temp_target, dt, 45.0)
        self._power = _lag(self._power, power_target, dt, 2.0)
        self._vib = _lag(self._vib, vib_target, dt, 4.0)

        temperature = self._temp + 0.15 * sensor[1]
        power = self._power + 1.5 * sensor[2]
        vibration = self._vib + 1.2 * sensor[3]
        if kind == "drift":
            temperature += min(self.params.drift_max, self.params.drift_per_second * elapsed)
        elif kind == "stuck":
            if fault.frozen_temperature is None:
                previous = self._last_temperature
                fault.frozen_temperature = round(temperature, 1) if previous is None else previous
            temperature = fault.frozen_temperature
        elif kind == "bearing":
            ramp = min(1.0, elapsed / self.params.bearing_ramp)
            vibration *= 1 + (self.params.bearing_factor - 1) * ramp
        elif burst:
            power *= self.params.spike_factor

        self._last_time = t
        reading = Reading(
            machine_id=self.machine_id,
            provider=self.provider,
            barcode=self.barcode,
            time=t,
            temperature=round(temperature, 1),
            load=round(load, 1),
            power=round(max(0.0, power), 1),
            vibration=round(max(0.0, vibration), 1),
            fault=kind,
        )
        self._last_temperature = reading.temperature
        return reading


class Fleet:
    """N machines `machine1..N` with stable identities, stepped together.

    `step(t)` returns one `Reading` per machine at epoch seconds `t` (strictly increasing).
    `set_fault(machine_id, kind, active, at)` toggles a fault (idempotent) and returns the
    ground-truth events it caused; a `FaultSchedule` given at construction is applied by `step`.
    `fault_log` is every event so far, in order.
    """

    def __init__(
        self,
        machines: int | Sequence[str] = 3,
        seed: int = 42,
        *,
        params: FaultParams | None = None,
        schedule: FaultSchedule | None = None,
        pattern: ShiftPattern | None = None,
        outages: Iterable[Outage] = (),
    ) -> None:
        ids = (
            [f"machine{i}" for i in range(1, machines + 1)]
            if isinstance(machines, int)
            else list(machines)
        )
        if not ids:
            raise ValueError("a fleet needs at least one machine")
        self.seed = seed
        self.params = params or FaultParams()
        self.machines: dict[str, Machine] = {m: Machine(m, seed, self.params, pattern) for m in ids}
        self._pending = list(schedule.events()) if schedule else []
        for event in self._pending:
            self.machine(event.machine_id)
        self._log: list[FaultEvent] = []
        self._outages = sorted(outages, key=lambda o: o.start)
        self._stopped: dict[str, Outage] = {}
        last: dict[str, Outage] = {}
        for outage in self._outages:
            self.machine(outage.machine_id)
            previous = last.get(outage.machine_id)
            if previous is not None and previous.end > outage.start:
                raise ValueError(f"outages overlap on {outage.machine_id}: {previous} and {outage}")
            last[outage.machine_id] = outage

    @property
    def machine_ids(self) -> list[str]:
        return list(self.machines)

    @property
    def fault_log(self) -> list[FaultEvent]:
        return list(self._log)

    def machine(self, machine_id: str) -> Machine:
        try:
            return self.machines[machine_id]
        except KeyError:
            raise UnknownMachine(machine_id) from None

    def active_fault(self, machine_id: str) -> tuple[str, float] | None:
        """The active fault's kind and start time, or None."""
        fault = self.machine(machine_id).fault
        return (fault.kind, fault.since) if fault else None

    def set_fault(self, machine_id: str, kind: str, active: bool, at: float) -> FaultEvent | None:
        """Toggle a fault; returns the start/end event, or None when nothing changed.

        Switching kinds logs the end of the old fault too (see `fault_log`).
        """
        events = self.machine(machine_id).set_fault(kind, active, at)
        self._log.extend(events)
        return events[-1] if events else None

    def step(self, t: float) -> list[Reading]:
        """One reading per running machine at `t` (a stopped machine publishes nothing)."""
        while self._pending and self._pending[0].time <= t:
            e = self._pending.pop(0)
            self.set_fault(e.machine_id, e.kind, e.active, e.time)
        if self._outages or self._stopped:
            self._apply_outages(t)
        readings = [machine.step(t) for machine in self.machines.values()]
        return [r for r, m in zip(readings, self.machines.values(), strict=True) if m.running]

    def _apply_outages(self, t: float) -> None:
        """Restart machines whose outage is over, then stop those whose outage has begun."""
        for machine_id, outage in list(self._stopped.items()):
            if t >= outage.end:
                del self._stopped[machine_id]
                self.machines[machine_id].restart(outage.level_shift)
        while self._outages and self._outages[0].start <= t:
            outage = self._outages.pop(0)
            machine = self.machines[outage.machine_id]
            if t < outage.end:
                self._stopped[outage.machine_id] = outage
                machine.stop()
            else:  # over between two readings: only the new level remains
                machine.restart(outage.level_shift)


def timeline(start: float, interval: float, count: int | None = None) -> Iterator[float]:
    """Reading times `start + k * interval`: one formula, so a replay hits the same floats."""
    k = 0
    while count is None or k < count:
        yield start + k * interval
        k += 1


def simulate(fleet: Fleet, start: float, interval: float, count: int) -> Iterator[list[Reading]]:
    """Step `fleet` through `count` readings per machine from `start` (offline, as fast as it can)."""
    for t in timeline(start, interval, count):
        yield fleet.step(t)
