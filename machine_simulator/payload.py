"""The wire format: the upstream JSON shape on `machine/<id>`, fault events on `faults/<id>`.

The reading payload keeps the upstream shape (so the upstream Telegraf json_v2 config still
parses it) and adds `time` in epoch milliseconds, so broker or ingest delays never shift a
reading's timestamp. `telegraf/telegraf.conf` maps it to table `machine_data`: tags machineID
and provider, float fields temperature, load, power, vibration, timestamp from `time`.
Fault events go to a topic outside `machine/` so the upstream subscription `machine/#` never
ingests ground truth as telemetry.

>>> from machine_simulator.signals import Reading
>>> r = Reading("machine1", "Tanaka Seiki", "96385074", 1700000000.25, 37.5, 80.0, 212.3, 83.1)
>>> reading_topic(r.machine_id)
'machine/machine1'
>>> reading_payload(r)  # doctest: +NORMALIZE_WHITESPACE
{'metadata': {'machineID': 'machine1', 'barcode': '96385074', 'provider': 'Tanaka Seiki'},
 'data': [{'temperature': 37.5}, {'load': 80.0}, {'power': 212.3}, {'vibration': 83.1}],
 'time': 1700000000250}
>>> encode(reading_payload(r))[:40]
b'{"metadata":{"machineID":"machine1","bar'
"""

from __future__ import annotations

import json

from machine_simulator.signals import FIELDS, FaultEvent, Reading

READING_TOPIC_PREFIX = "machine/"
FAULT_TOPIC_PREFIX = "faults/"
QOS = 1


def reading_topic(machine_id: str) -> str:
    return READING_TOPIC_PREFIX + machine_id


def fault_topic(machine_id: str) -> str:
    return FAULT_TOPIC_PREFIX + machine_id


def reading_payload(reading: Reading) -> dict[str, object]:
    return {
        "metadata": {
            "machineID": reading.machine_id,
            "barcode": reading.barcode,
            "provider": reading.provider,
        },
        "data": [{name: float(getattr(reading, name))} for name in FIELDS],
        "time": reading.time_ms,
    }


def fault_payload(event: FaultEvent) -> dict[str, object]:
    return event.to_json()


def encode(payload: dict[str, object]) -> bytes:
    """Compact UTF-8 JSON (provider names may be non-ASCII)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
