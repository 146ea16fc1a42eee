"""localflux serve's settings: port, data dir, token and limits (documented in `.env.example`)."""

from __future__ import annotations

from magic_common.envsettings import Settings

SETTINGS = Settings(
    {
        "LOCALFLUX_PORT": "8181",
        "LOCALFLUX_DATA_DIR": ".local/influx",
        "LOCALFLUX_TOKEN": "",
        "LOCALFLUX_QUERY_TIMEOUT": "60",
        "LOCALFLUX_MAX_ANSWER_MB": "256",
        "LOCALFLUX_MAX_CONNECTIONS": "256",
        "LOCALFLUX_IDLE_TIMEOUT": "30",
        "LOCALFLUX_CORS_ORIGINS": "",
    }
)
