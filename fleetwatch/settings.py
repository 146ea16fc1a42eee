"""Configuration names, defaults and path resolution shared by every component.

Every setting is an environment variable documented in `.env.example`; this module is the one
place that knows their defaults, so the Mage blocks, localflux, the simulator and the tests
cannot disagree. A `.env` file at the repository root is read once (without overriding variables
already set), so `mage run`, `make run` and a plain `python -m ...` see the same configuration.

Relative paths resolve against the repository root, never the current directory: Mage changes
directory into the project and honcho starts each process from the root, and both must find the
same `.local/` folders.

>>> DEFAULTS["INFLUX_DATABASE"]
'machines'
>>> path_setting("FLEETWATCH_STATE_DIR", {"FLEETWATCH_STATE_DIR": "/abs/state"})
PosixPath('/abs/state')
>>> path_setting("FLEETWATCH_STATE_DIR", {}) == REPO_ROOT / ".local" / "state"
True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULTS: dict[str, str] = {
    "INFLUX_HOST": "http://127.0.0.1:8181",
    "INFLUX_TOKEN": "",
    "INFLUX_DATABASE": "machines",
    "LOCALFLUX_PORT": "8181",
    "LOCALFLUX_DATA_DIR": ".local/influx",
    "LOCALFLUX_TOKEN": "",
    "MQTT_BROKER_URL": "tcp://127.0.0.1:1883",
    "SIM_MACHINES": "3",
    "SIM_INTERVAL": "1.0",
    "SIM_PORT": "5005",
    "SIM_SEED": "42",
    "SIM_BACKFILL": "30m",
    "SLACK_WEBHOOK_URL": "",
    "ALERT_DIGEST_MIN": "10",
    "PLOT_HISTORY_MIN": "30",
    "INBOX_PORT": "5006",
    "INBOX_DATA_DIR": ".local/inbox",
    "PUBLIC_BASE_URL": "http://127.0.0.1:5006",
    "MAGE_PORT": "6789",
    "MAGE_DATA_DIR": ".local/mage",
    "MAGE_SLACK_WEBHOOK_URL": "",
    "MAGE_API_TRIGGER_TOKEN": "",
    "FLEETWATCH_STATE_DIR": ".local/state",
    "FLEETWATCH_OUTPUT_DIR": ".local/plots",
    "NAB_DIR": "../shared/nab-dev",
    "SKAB_DIR": "../shared/skab-dev",
    "DOCKER_PUBLISH_ADDRESS": "127.0.0.1",
    "DEFAULT_OWNER_PASSWORD": "",
}

_dotenv_loaded = False


def load_dotenv(path: Path | None = None) -> None:
    """Read `KEY=VALUE` lines from the repository's `.env` into os.environ, once.

    Variables already in the environment win, as with docker compose and honcho, so a test or a
    shell export always overrides the file.
    """
    global _dotenv_loaded
    if _dotenv_loaded and path is None:
        return
    _dotenv_loaded = True
    env_file = path or REPO_ROOT / ".env"
    if not env_file.is_file():
        return
    for raw in env_file.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(key, value)


def setting(name: str, env: Mapping[str, str] | None = None) -> str:
    """The value of a documented setting: the environment, else its default.

    An empty value counts as unset for settings whose default is not empty (an empty
    `INFLUX_HOST=` in `.env` means "use the default", not "no host").
    """
    if name not in DEFAULTS:
        raise KeyError(f"{name} is not a documented setting; add it to .env.example and DEFAULTS")
    if env is None:
        load_dotenv()
        env = os.environ
    value = env.get(name, "")
    if name == "MAGE_SLACK_WEBHOOK_URL" and not value:
        return setting("SLACK_WEBHOOK_URL", env)
    return value if value else DEFAULTS[name]


def int_setting(name: str, env: Mapping[str, str] | None = None) -> int:
    """An integer setting, with an error that names the variable when it is not a number."""
    value = setting(name, env)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def path_setting(name: str, env: Mapping[str, str] | None = None) -> Path:
    """A path setting; relative values resolve against the repository root."""
    path = Path(setting(name, env)).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path
