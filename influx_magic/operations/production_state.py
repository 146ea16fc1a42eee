"""Where the operator tools find the production pipeline's state, sharded or not.

The operator state (mutes, acknowledgements, false alarms) is one per fleet: it lives in
`FLEETWATCH_STATE_DIR/operator/` whatever the number of shards, so a mute given once holds for
every shard's run. The detector state is one file per shard (`influx_magic.shards`: the state
dir itself with one shard, `shards-N/shard-k/` with N); `status`, the fleet page, `mute` and
`replay` read every shard's committed file and see the fleet as one state
(`fleetwatch.partition.merge`).

The tools work on a state dir on a filesystem they share with the pipeline. With
FLEETWATCH_STATE_DIR an object-store URL the pipeline keeps its state in object storage and a
per-host mirror, which an operator's command cannot reach: the tools refuse with that reason
instead of changing a folder no run reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fleetwatch.partition import merge
from fleetwatch.state import FleetState
from influx_magic import state_file
from influx_magic.object_state import is_url
from influx_magic.settings import path_setting, setting
from influx_magic.shards import Shard, layout


class NoSharedStateDir(RuntimeError):
    """FLEETWATCH_STATE_DIR is an object-store URL; the message says why the tools refuse."""


def state_root(env: Mapping[str, str]) -> Path:
    """FLEETWATCH_STATE_DIR as a folder (the operator state's parent)."""
    location = setting("FLEETWATCH_STATE_DIR", env)
    if is_url(location):
        raise NoSharedStateDir(
            f"FLEETWATCH_STATE_DIR is an object-store URL ({location}): the operator tools "
            "need a state dir on a filesystem they share with the pipeline (the operator "
            "state is not kept in object storage yet)"
        )
    return path_setting("FLEETWATCH_STATE_DIR", env)


@dataclass(frozen=True)
class ProductionState:
    """The fleet's committed detector state, and the files it came from."""

    state: FleetState | None  # None: no run has committed yet
    paths: list[Path]
    where: Path  # the one file, or the state dir when the state is in shards' files

    def describe(self) -> str:
        """Where the state was read from, for people."""
        if len(self.paths) > 1:
            return f"{len(self.paths)} shards' state files in {self.where}"
        return str(self.where)


def state_files(root: Path) -> list[Path]:
    """The production state file of every shard the state dir is laid out for."""
    count = layout(root)
    return [Shard(k, count).folder(root) / state_file.FILENAME for k in range(count)]


def load_production(root: Path) -> ProductionState:
    """Every shard's committed production state, merged into one (see the module doc)."""
    wanted = state_files(root)
    present = [path for path in wanted if path.exists()]
    if not present:
        return ProductionState(None, [], wanted[0] if len(wanted) == 1 else root)
    states = [state_file.load(path) for path in present]
    if len(states) == 1:
        return ProductionState(states[0], present, present[0])
    return ProductionState(merge(states), present, root)
