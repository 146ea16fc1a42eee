"""The live simulator: steps the fleet on a fixed timeline and publishes every reading.

Readings are due at `first + k * interval` (see `signals.timeline`), where `first` lies
`backfill` seconds before the start: the backfill part is published as fast as the broker
takes it, then the loop sleeps until each reading is due. Timestamps come from the timeline,
not from when the loop woke up, so a replay of the same seed reproduces every value; a loop
that fell behind catches up instead of skipping readings.

Everything that touches the fleet runs on the asyncio loop (the ticker and the web handlers),
so the fleet needs no locks; the publisher's threads only see encoded messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from machine_simulator.payload import (
    encode,
    fault_payload,
    fault_topic,
    reading_payload,
    reading_topic,
)
from machine_simulator.publisher import BufferedPublisher
from machine_simulator.signals import Fleet, Reading, check_kind, timeline

log = logging.getLogger("machine_simulator")


@dataclass
class MachineCounters:
    readings: int = 0
    first_time: int | None = None
    last_time: int | None = None


class Simulator:
    """A fleet, its publisher and the state the web page shows."""

    def __init__(
        self,
        fleet: Fleet,
        publisher: BufferedPublisher,
        *,
        interval: float,
        backfill: float = 0.0,
        count: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.fleet = fleet
        self.publisher = publisher
        self.interval = interval
        self.backfill_readings = round(backfill / interval)
        self.count = count
        self.clock = clock
        self.first_time: float | None = None
        self.live_from: float | None = None
        self.latest: dict[str, Reading] = {}
        self.counters = {m: MachineCounters() for m in fleet.machine_ids}

    async def run(self) -> None:
        """Publish the backfill, then live readings until `count` (0 = forever) or cancelled."""
        start = self.clock()
        self.live_from = start
        self.first_time = start - self.backfill_readings * self.interval
        total = self.backfill_readings + self.count if self.count else None
        if self.backfill_readings:
            log.info(
                "backfill: %d readings per machine from %.3f",
                self.backfill_readings,
                self.first_time,
            )
        for t in timeline(self.first_time, self.interval, total):
            backfilling = t < start
            if backfilling:
                while not self.publisher.has_room(len(self.fleet.machine_ids)):
                    await asyncio.sleep(0.01)
            else:
                delay = t - self.clock()
                if delay > 0:
                    await asyncio.sleep(delay)
            self._publish_readings(self.fleet.step(t))
            await asyncio.sleep(0)  # let the web page in, also while backfilling
        log.info("published %d readings per machine; idle", total)

    def _publish_readings(self, readings: list[Reading]) -> None:
        for reading in readings:
            self.publisher.publish(
                reading_topic(reading.machine_id), encode(reading_payload(reading))
            )
            self.latest[reading.machine_id] = reading
            counters = self.counters[reading.machine_id]
            counters.readings += 1
            counters.last_time = reading.time_ms
            if counters.first_time is None:
                counters.first_time = reading.time_ms

    def set_fault(self, machine_id: str, kind: str, active: bool) -> bool:
        """Toggle a fault now; publishes and logs the ground truth. True when state changed.

        Raises UnknownMachine / UnknownFaultKind for bad input, before anything changes.
        """
        self.fleet.machine(machine_id)
        check_kind(kind)
        at = max(self.clock(), self.fleet.machine(machine_id).last_time or 0.0)
        before = len(self.fleet.fault_log)
        self.fleet.set_fault(machine_id, kind, active, at)
        events = self.fleet.fault_log[before:]
        for event in events:
            log.info("%s: fault %s %s", machine_id, event.kind, "on" if event.active else "off")
            self.publisher.publish(fault_topic(machine_id), encode(fault_payload(event)))
        return bool(events)

    def machine_state(self, machine_id: str) -> dict[str, object]:
        machine = self.fleet.machine(machine_id)
        active = self.fleet.active_fault(machine_id)
        reading = self.latest.get(machine_id)
        return {
            "id": machine_id,
            "provider": machine.provider,
            "barcode": machine.barcode,
            "fault": ({"kind": active[0], "since": round(active[1] * 1000)} if active else None),
            "reading": (
                {"time": reading.time_ms, **reading.values()} if reading is not None else None
            ),
        }

    def machines(self) -> list[dict[str, object]]:
        return [self.machine_state(m) for m in self.fleet.machine_ids]

    def fault_log(self) -> list[dict[str, object]]:
        return [event.to_json() for event in self.fleet.fault_log]

    def stats(self) -> dict[str, object]:
        """Publishing progress; tests and operators use it to know what reached the broker."""
        return {
            "interval": self.interval,
            "first_time": self.first_time,
            "live_from": self.live_from,
            "backfill_readings": self.backfill_readings,
            "count": self.count,
            "publisher": self.publisher.stats().to_json(),
            "machines": {
                m: {"readings": c.readings, "first_time": c.first_time, "last_time": c.last_time}
                for m, c in self.counters.items()
            },
        }
