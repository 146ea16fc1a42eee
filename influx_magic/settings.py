"""The product's own settings: InfluxDB, Slack, Mage, state, plots, operations and the
declared checks.

Each key is an environment variable documented in `.env.example`; this module declares the
keys the pipeline, its alerts and the Mage launcher read, with their defaults. A `.env` file at
the project root is read once (without overriding variables already set), so `mage run`,
`make run` and a plain `python -m ...` see the same configuration (`magic_common.envsettings`).

>>> SETTINGS.defaults["INFLUX_DATABASE"]
'machines'
>>> path_setting("FLEETWATCH_STATE_DIR", {"FLEETWATCH_STATE_DIR": "/abs/state"})
PosixPath('/abs/state')
>>> setting("MAGE_SLACK_WEBHOOK_URL", {"SLACK_WEBHOOK_URL": "https://hooks.example/x"})
'https://hooks.example/x'
"""

from __future__ import annotations

from influx_magic import local_wiring
from magic_common.envsettings import Settings, load_dotenv

SETTINGS = Settings(
    {
        "INFLUX_HOST": "http://127.0.0.1:8181",
        "INFLUX_TOKEN": "",
        "INFLUX_DATABASE": "machines",
        "SLACK_WEBHOOK_URL": "",
        "ALERT_DIGEST_MIN": "10",
        "ALERT_RECUR_GAP_MIN": "10",
        "ALERT_LATE_AFTER_H": "24",
        "PLOT_HISTORY_MIN": "30",
        "PLOT_RETENTION_DAYS": "30",
        "PUBLIC_BASE_URL": "http://127.0.0.1:5006",
        "MAGE_PORT": "6789",
        "MAGE_PUBLIC_HOST": "",
        "MAGE_DATA_DIR": ".local/mage",
        "MAGE_SLACK_WEBHOOK_URL": "",
        "MAGE_API_TRIGGER_TOKEN": "",
        "DEFAULT_OWNER_PASSWORD": "",
        "FLEETWATCH_STATE_DIR": ".local/state",
        "FLEETWATCH_OUTPUT_DIR": ".local/plots",
        "MACHINES_FILE": "influx-magic/machines.yaml",
        "FALSE_ALARM_STEP": "0.05",
        "FALSE_ALARM_MAX": "0.15",
        "FALSE_ALARM_DECAY": "7d",
        "FLEET_PAGE_PORT": "5007",
        "CHECKS_FILE": "influx-magic/checks.yaml",
        "FLEETWATCH_SHARDS": "1",
        "FLEETWATCH_CATCHUP_MINUTES": "60",
        local_wiring.SETTING: local_wiring.DEFAULT,
    },
    fallbacks={"MAGE_SLACK_WEBHOOK_URL": "SLACK_WEBHOOK_URL"},
)

setting = SETTINGS.get
int_setting = SETTINGS.integer
float_setting = SETTINGS.number
path_setting = SETTINGS.path


def load_environment() -> None:
    """What a pipeline run reads its settings from: the environment, then what a running
    `make run` wired (`influx_magic.local_wiring`), then `.env`."""
    local_wiring.apply()
    load_dotenv()


__all__ = [
    "SETTINGS",
    "float_setting",
    "load_dotenv",
    "load_environment",
    "int_setting",
    "path_setting",
    "setting",
]
