"""Mage's output as a person reads it: start-up noise dropped, run logs one line each.

`mage start` prints its database migrations one line each (about 40 on a new database), notes
about optional integrations this project does not use (dbt, SSH tunnels), debugger warnings of
its kernel, two lines per API call, a heartbeat per run every few seconds and resource samples;
a block's own line (what it read, scored, alerted, wrote) comes wrapped in a JSON log record.
`readable` drops the noise and turns a log record into `<pipeline>/<run>/<block>: <message>`;
every other line passes as it is.

>>> readable(b"INFO:alembic.runtime.migration:Running upgrade  -> c07a23ff782b, Add tables.\\n")
>>> readable(b'INFO:machine_anomaly_detection/7/20240501T1000/load_influx_data:'
...          b'{"block_uuid": "load_influx_data", "message": "load_influx_data: 60 row(s)"}\\n')
b'machine_anomaly_detection/7/20240501T1000/load_influx_data: load_influx_data: 60 row(s)\\n'
>>> readable(b'INFO:machine_anomaly_detection/7/20240501T1000:{"cpu": 4.5, "memory": 3285.0}\\n')
>>> readable(b"INFO:mage_ai.api.logging:[2026-12-05T11:08:44][api.views] Latency: 0.03 seconds\\n")
>>> readable(b"Checking port 6789 on host 127.0.0.1...\\n")
b'Checking port 6789 on host 127.0.0.1...\\n'
"""

from __future__ import annotations

import json
import re

NOISE: tuple[bytes, ...] = (
    b"INFO:alembic.runtime.migration:",  # database migrations
    b"DBT library not installed",  # optional integrations this project does not use
    b"SSH tunnel failed to create and connect",
    b"Initializing global job manager",
    b"Message signing is disabled",  # the editor kernel's own warnings
    b"Debugger warning: It seems that frozen modules are being used",
    b"make the debugger miss breakpoints",
    b"to python to disable frozen modules",
    b"Note: Debugging will proceed",
    b"INFO:mage_ai.api.logging:",  # two lines (action, latency) for every API call
)
#: Messages Mage logs for every run and block, whatever the pipeline does.
CHATTER: tuple[str, ...] = (
    "is alive.",
    "Start executing block with BlockExecutor.",
    "Finish executing block with BlockExecutor.",
)
LOG_RECORD = re.compile(rb"^(INFO|WARNING|ERROR|DEBUG|CRITICAL):([^:{\s]+):(\{.*\})\s*$")


def readable(line: bytes) -> bytes | None:
    """`line` as it should be shown, or None when it is noise."""
    if any(noise in line for noise in NOISE):
        return None
    match = LOG_RECORD.match(line)
    if match is None:
        return line
    try:
        record = json.loads(match.group(3))
    except ValueError:
        return line
    message = str(record.get("message", "") if isinstance(record, dict) else "").strip()
    if not message or message.endswith(CHATTER):
        return None  # resource samples, blank prints, per-run heartbeats
    level = b"" if match.group(1) == b"INFO" else match.group(1) + b" "
    return level + match.group(2) + b": " + message.encode() + b"\n"
