"""localflux serve's settings: port, data dir and token (documented in `.env.example`)."""

from __future__ import annotations

from magic_common.envsettings import Settings

SETTINGS = Settings(
    {
        "LOCALFLUX_PORT": "8181",
        "LOCALFLUX_DATA_DIR": ".local/influx",
        "LOCALFLUX_TOKEN": "",
    }
)
