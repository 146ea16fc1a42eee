"""The simulator's settings: fleet size, pace, page port, seed, backfill and broker, and the
InfluxDB it asks whether a backfill is wanted (`history_check`)."""

from __future__ import annotations

from magic_common.envsettings import Settings

SETTINGS = Settings(
    {
        "MQTT_BROKER_URL": "tcp://127.0.0.1:1883",
        "SIM_MACHINES": "3",
        "SIM_INTERVAL": "1.0",
        "SIM_PORT": "5005",
        "SIM_SEED": "42",
        "SIM_BACKFILL": "30m",
        "SIM_BACKFILL_IF_EMPTY": "1",
        "INFLUX_HOST": "http://127.0.0.1:8181",
        "INFLUX_TOKEN": "",
        "INFLUX_DATABASE": "machines",
        # A page the simulator's page links to (make run: its fleet status page); empty = none.
        "FLEET_PAGE_URL": "",
    }
)
