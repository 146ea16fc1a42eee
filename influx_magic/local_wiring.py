"""The settings `make run` wired, for a headless `mage run` started in another shell.

`make run` points its processes at each other: `INFLUX_HOST`/`INFLUX_TOKEN` at its localflux
and, without `SLACK_WEBHOOK_URL`, the alerts at its inbox (`SLACK_WEBHOOK_URL`,
`PUBLIC_BASE_URL`). While it runs it records them in `MAKE_RUN_WIRING_FILE` (default
`.local/make-run.env` under the project root; `record`, and `remove` when it stops). The pipeline's settings apply that file before `.env`
(`apply`), so a `mage run` typed in another shell reads the same InfluxDB and alerts the same
inbox as the scheduled runs, with no manual step; variables set in that shell still win.
The file names the pid of the `make run` that wrote it: one left behind by a `make run` that
was killed is ignored, so a later configuration (a real Slack in `.env`) is never overridden.
`MAKE_RUN_WIRING_FILE` itself is read from the environment only: this file comes before `.env`.

>>> import tempfile; path = Path(tempfile.mkdtemp()) / "make-run.env"
>>> _ = record({"SLACK_WEBHOOK_URL": "http://127.0.0.1:5006/hook"}, os.getpid(), path)
>>> recorded(path)
{'SLACK_WEBHOOK_URL': 'http://127.0.0.1:5006/hook'}
>>> env = {"SLACK_WEBHOOK_URL": "https://hooks.example/x"}; apply(env, path); env
{'SLACK_WEBHOOK_URL': 'https://hooks.example/x'}
>>> remove(path); recorded(path)
{}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from magic_common.atomic import write_atomically
from magic_common.envsettings import project_root

SETTING = "MAKE_RUN_WIRING_FILE"
DEFAULT = ".local/make-run.env"
_PID = "MAKE_RUN_PID"


def wiring_path(path: Path | None = None) -> Path:
    """`path`, else `MAKE_RUN_WIRING_FILE` from the environment (relative to the project root).

    Not through the settings' `.env` loading: `apply` must run before `.env` is read.
    """
    if path is not None:
        return path
    chosen = Path(os.environ.get(SETTING) or DEFAULT).expanduser()
    return chosen if chosen.is_absolute() else project_root() / chosen


def record(values: Mapping[str, str], pid: int, path: Path | None = None) -> Path:
    """Write what `make run` (process `pid`) wired; readable by its user only (a token)."""
    lines = [
        "# Written by make run while it runs; the pipeline reads it before .env. Do not edit.",
        f"{_PID}={pid}",
        *(f"{key}={value}" for key, value in sorted(values.items())),
    ]
    path = wiring_path(path)
    write_atomically(path, ("\n".join(lines) + "\n").encode())
    os.chmod(path, 0o600)
    return path


def remove(path: Path | None = None) -> None:
    """Forget what was wired (`make run` stops)."""
    wiring_path(path).unlink(missing_ok=True)


def recorded(path: Path | None = None) -> dict[str, str]:
    """What a running `make run` wired, or nothing (no file, or its writer is gone)."""
    try:
        text = wiring_path(path).read_text(encoding="utf-8")
    except OSError:
        return {}
    values = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    try:
        pid = int(values.pop(_PID, ""))
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return {}
    except PermissionError:
        pass  # alive, run by another user
    return values


def apply(env: MutableMapping[str, str] | None = None, path: Path | None = None) -> None:
    """Fill `env` (default: the process environment) with what `make run` wired, without
    replacing what is already set (an empty value counts as not set, as everywhere)."""
    target = os.environ if env is None else env
    for key, value in recorded(path).items():
        if not target.get(key):
            target[key] = value
