"""The evaluation's settings: where the labelled benchmark data lives."""

from __future__ import annotations

from magic_common.envsettings import Settings

SETTINGS = Settings({"NAB_DIR": "../shared/nab-dev", "SKAB_DIR": "../shared/skab-dev"})
