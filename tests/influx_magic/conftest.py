"""Fixtures for the Mage project's tests: a localflux, a Slack receiver and seeded telemetry,
wired to the pipeline through the environment (as `mage run` and the scheduler see it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.influx_magic.helpers import Telemetry
from tests.support import WebhookReceiver

HISTORY_SECONDS = 9 * 60  # healthy minutes before the fault: the models' first window fills
FAULT_SECONDS = 3 * 60


@dataclass
class PipelineWorld:
    """What a pipeline test works with."""

    dirs: dict[str, Path]
    influx: Any  # LocalfluxServer
    client: Any  # InfluxDBClient3 on it
    receiver: WebhookReceiver
    telemetry: Telemetry

    @property
    def state_dir(self) -> Path:
        return self.dirs["FLEETWATCH_STATE_DIR"]

    @property
    def state_file(self) -> Path:
        return self.state_dir / "fleetwatch-state.zip"

    @property
    def plots(self) -> Path:
        return self.dirs["FLEETWATCH_OUTPUT_DIR"]

    @property
    def checks_file(self) -> Path:
        """CHECKS_FILE: absent unless a test writes it (no declared checks)."""
        return self.dirs["HOME"].parent / "checks.yaml"


@pytest.fixture
def world(
    local_dirs: dict[str, Path],
    localflux_server: Any,
    slack_receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[PipelineWorld]:
    """Environment for the pipeline plus telemetry that starts 20 minutes ago (no rows yet)."""
    env = {
        "INFLUX_HOST": localflux_server.url,
        "INFLUX_DATABASE": localflux_server.database,
        "INFLUX_TOKEN": localflux_server.token or "",
        "SLACK_WEBHOOK_URL": slack_receiver.url,
        "PUBLIC_BASE_URL": "http://plots.example",
        "ALERT_DIGEST_MIN": "10",
        "CHECKS_FILE": str(local_dirs["HOME"].parent / "checks.yaml"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("MAGE_PUBLIC_HOST", "MAGE_SLACK_WEBHOOK_URL", "MAGE_API_TRIGGER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    client = localflux_server.client()
    telemetry = Telemetry(client, start=time.time() - 20 * 60)
    yield PipelineWorld(local_dirs, localflux_server, client, slack_receiver, telemetry)
    client.close()


def seed_fault(world: PipelineWorld, machine: str = "machine2") -> None:
    """Healthy history, then an overload on `machine` for the last three minutes."""
    world.telemetry.write(HISTORY_SECONDS)
    world.telemetry.write(FAULT_SECONDS, overload=[machine])
