"""Shared inputs for the pipeline-library tests: alert events and scored telemetry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from influx_magic.plots import FEATURES

START = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def event(machine: str = "machine2", kind: str = "opened", **changes: object) -> dict:
    fields: dict[str, object] = {
        "machine_id": machine,
        "unique_id": f"acme-inc-{machine}",
        "episode_id": f"{machine}-20240501T100000",
        "kind": kind,
        "start": START,
        "end": START + timedelta(minutes=7) if kind == "resolved" else None,
        "peak_score": 0.934,
        "peak_values": {"temperature": 97.0, "load": 200.0, "power": 455.5, "vibration": 560.0},
        "top_features": [("load", 4.2), ("vibration", 3.1)],
        "threshold": 0.8,
    }
    fields.update(changes)
    return fields


def scores(machine: str, *, anomalous: slice | None = None, points: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "time": pd.date_range("2024-05-01 10:00", periods=points, freq="1s", tz="UTC"),
            "machineID": machine,
            "unique_id": f"acme-inc-{machine}",
            "provider": "Acme Inc",
            **{f: rng.uniform(50, 60, points) for f in FEATURES},
            "score": rng.uniform(0.3, 0.6, points),
            "is_anomaly": False,
        }
    )
    if anomalous is not None:
        frame.loc[frame.index[anomalous], ["load", "score", "is_anomaly"]] = [200.0, 0.95, True]
    return frame
