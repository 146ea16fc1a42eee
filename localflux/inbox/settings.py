"""The local inbox's settings: its port, where it keeps messages, which plots it serves."""

from __future__ import annotations

from magic_common.envsettings import Settings

SETTINGS = Settings(
    {
        "INBOX_PORT": "5006",
        "INBOX_DATA_DIR": ".local/inbox",
        # The folder of rendered plots the inbox serves under /plots/ (the pipeline writes them).
        "FLEETWATCH_OUTPUT_DIR": ".local/plots",
        # A page the inbox links to (make run: the fleet status page); empty = none.
        "FLEET_PAGE_URL": "",
    }
)
