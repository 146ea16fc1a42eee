"""Telemetry with an operator's story in it: the simulator's fleet, an overload, and a benign
pattern (a short vibration bump, as a tool change would make), written to localflux as Telegraf
writes it, placed in time so that data time follows the wall clock as in production."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pandas as pd

from machine_simulator.signals import Reading
from tests.influx_magic.helpers import Telemetry

BUMP_SECONDS = 15  # the benign pattern: vibration +30 % for 15 s
BUMP_FACTOR = 1.3
HISTORY = 540  # healthy seconds before anything happens: the models' first window fills


class StoryTelemetry(Telemetry):
    """`Telemetry` whose writes can also carry the benign vibration bump on some machines."""

    @classmethod
    def ending_now(cls, client: Any, seconds_before_now: int) -> StoryTelemetry:
        """Readings that reach the present after the first `seconds_before_now` seconds: what
        a test writes later lies in the future, as new data would."""
        return cls(client, start=time.time() - seconds_before_now)

    @classmethod
    def after_history(cls, client: Any, then: int = 0) -> StoryTelemetry:
        """`HISTORY` healthy seconds written, ending `then` seconds before now: the story a
        test tells next (`then` seconds of it) reaches the present."""
        story = cls.ending_now(client, HISTORY + then)
        story.write(HISTORY)
        return story

    def write(
        self, seconds: int, *, overload: Iterable[str] = (), bump: Iterable[str] = ()
    ) -> pd.DataFrame:
        """`seconds` readings per machine: `overload` machines overloaded from the first
        reading, `bump` machines with the benign bump in their first `BUMP_SECONDS`."""
        bumped = set(bump)

        def values(reading: Reading, second: int) -> dict[str, Any]:
            fields = reading.values()
            if reading.machine_id in bumped and second < BUMP_SECONDS:
                fields["vibration"] = round(fields["vibration"] * BUMP_FACTOR, 1)
            return fields

        return self._write(seconds, overload=overload, kind="overload", values=values)


def episode_rows(client: Any, machine: str) -> list[dict]:
    """`anomaly_episodes` rows of one machine (status, episode_id), oldest first; the machine
    is bound as a parameter."""
    try:
        table = client.query(
            'SELECT time, status, episode_id FROM "anomaly_episodes" '
            'WHERE "machineID" = $machine ORDER BY time',
            language="sql",
            query_parameters={"machine": machine},
        )
    except Exception as error:  # the table does not exist before the first episode
        if "not found" in str(error).lower():
            return []
        raise
    return table.to_pylist()


def feedback_rows(client: Any) -> list[dict]:
    """`anomaly_feedback` rows, oldest first (a field no action has set yet is absent)."""
    return client.query(
        'SELECT * FROM "anomaly_feedback" ORDER BY time', language="sql"
    ).to_pylist()
