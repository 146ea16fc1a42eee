"""The detector state on disk: one file per state directory, replaced atomically.

The detection core turns a `FleetState` into bytes and back; this module decides where those
bytes live (`$FLEETWATCH_STATE_DIR/fleetwatch-state.zip`) and writes them so that a crash leaves
the old state or the new one, never half (temporary file, fsync, rename, fsync the folder).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / FILENAME
>>> state = load_or_new(path)
>>> save(state, path)
>>> load(path).detector.config == state.detector.config
True
"""

from __future__ import annotations

import os
from pathlib import Path

from fleetwatch.detector import DetectorConfig
from fleetwatch.state import FleetState, StateError, reset_hint
from influx_magic.settings import path_setting
from magic_common.atomic import write_atomically

FILENAME = "fleetwatch-state.zip"


def default_path() -> Path:
    """`$FLEETWATCH_STATE_DIR/fleetwatch-state.zip` (default `.local/state/`)."""
    return path_setting("FLEETWATCH_STATE_DIR") / FILENAME


def save(state: FleetState, path: str | os.PathLike) -> None:
    """Write atomically: temp file in the same directory, fsync, rename, fsync the dir."""
    write_atomically(Path(path), state.to_bytes())


def load(path: str | os.PathLike) -> FleetState:
    """The state saved at `path`; `StateError` (saying how to start over) when unusable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise StateError(f"cannot read {path}: {error}. {reset_hint(path)}") from None
    return FleetState.from_bytes(data, source=path)


def load_or_new(
    path: str | os.PathLike | None = None,
    config: DetectorConfig | None = None,
    cooldown_seconds: float | None = None,
) -> FleetState:
    """The saved state at `path` (default `default_path()`), or a new one if there is no file.

    A saved state whose configuration differs from `config` (when given) is an error, not a
    silent reset.
    """
    path = Path(path) if path is not None else default_path()
    if not path.exists():
        return FleetState.new(config, cooldown_seconds)
    state = load(path)
    if config is not None and state.detector.config != config:
        raise StateError(
            f"{path} holds models for another configuration:\n  saved:     "
            f"{state.detector.config.describe()}\n  requested: {config.describe()}\n"
            f"{reset_hint(path)}"
        )
    if cooldown_seconds is not None and state.episodes.cooldown_seconds != cooldown_seconds:
        raise StateError(
            f"{path} was saved with cooldown_seconds={state.episodes.cooldown_seconds}, "
            f"not {cooldown_seconds}. {reset_hint(path)}"
        )
    return state
