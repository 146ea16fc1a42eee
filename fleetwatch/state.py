"""`FleetState`: the detector, its episodes and the watermark, as one versioned blob of bytes.

An online detector keeps what it learnt between runs: one state object carries everything a run
changes, and a caller commits it as a whole (or not at all):

* the format is a zip of a JSON header, JSON metadata (configuration, machine keys, open
  episodes) and NumPy arrays stored with `allow_pickle=False`: loading never runs code;
* the header holds a SHA-256 of the content and a version, `FORMAT.<defaults fingerprint>`,
  which changes when the format or the default configuration changes;
* the product stores the bytes (`influx_magic.state_file`: written atomically, so a crash
  leaves the old state or the new one, never half);
* a corrupt, incompatible or foreign file raises `StateError` explaining how to start over
  (delete the file, or point FLEETWATCH_STATE_DIR elsewhere); nothing is reset silently;
* `to_bytes`/`from_bytes` carry a *pending* state between pipeline blocks, so only the last
  block commits it.

>>> state = FleetState.new()
>>> state.watermark is None
True
>>> FleetState.from_bytes(state.to_bytes()).detector.config == state.detector.config
True
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fleetwatch.detector import DetectorConfig, FleetDetector
from fleetwatch.episodes import EpisodeEvent, EpisodeTracker
from fleetwatch.machine_rules import MachineRule

__all__ = ["FORMAT", "STATE_VERSION", "FleetState", "StateError", "reset_hint"]

FORMAT = 6  # bump when the file layout or the meaning of a saved array changes
MAGIC = "fleetwatch-state"
_STAMP = (1980, 1, 1, 0, 0, 0)  # fixed zip entry times: the same state gives the same bytes


def defaults_fingerprint(config: DetectorConfig, episodes: EpisodeTracker) -> str:
    """A short hash of a configuration and episode settings (applied to the defaults)."""
    settings = {"detector": config.to_json(), "episodes": episodes.to_json()}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


#: Changes with FORMAT and with any default (detector configuration or episode settings).
STATE_VERSION = (
    f"{FORMAT}.{defaults_fingerprint(DetectorConfig(), EpisodeTracker(DetectorConfig().features))}"
)


class StateError(Exception):
    """A state file that cannot be used as it is; the message says how to start over."""


def reset_hint(source: object) -> str:
    """How to start over from an unusable state (said in every `StateError`)."""
    return (
        f"To start over with fresh models (they relearn from new data; open episodes are "
        f"forgotten), delete {source} or set FLEETWATCH_STATE_DIR to another directory."
    )


@dataclass
class FleetState:
    """Detector + episodes (+ anything JSON-able the caller wants committed with them)."""

    detector: FleetDetector
    episodes: EpisodeTracker
    extra: dict = field(default_factory=dict)

    @classmethod
    def new(
        cls, config: DetectorConfig | None = None, cooldown_seconds: float | None = None
    ) -> FleetState:
        detector = FleetDetector(config)
        episodes = EpisodeTracker(
            detector.config.features, detector.config.rule, driver=detector.config.driver
        )
        if cooldown_seconds is not None:
            episodes.cooldown_seconds = float(cooldown_seconds)
        return cls(detector, episodes)

    @property
    def watermark(self) -> pd.Timestamp | None:
        """The latest data time the detector has processed (None before any point)."""
        return self.detector.watermark

    def process(
        self,
        frame: pd.DataFrame,
        key: str = "unique_id",
        time: str = "time",
        rules: Mapping[str, MachineRule] | None = None,
    ) -> tuple[pd.DataFrame, list[EpisodeEvent]]:
        """Score a frame and advance the episodes: (scored frame, events). `rules`: per-machine
        alarm rules (`fleetwatch.machine_rules`)."""
        scored = self.detector.score_frame(frame, key=key, time=time, rules=rules)
        return scored, self.episodes.update(scored, key=key, time=time)

    # -- bytes ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        meta = {
            "detector": self.detector.meta(),
            "episodes": self.episodes.to_json(),
            "extra": self.extra,
        }
        entries = {"meta.json": json.dumps(meta, sort_keys=True).encode()}
        for name, array in sorted(self.detector.arrays().items()):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            entries[f"arrays/{name}.npy"] = buffer.getvalue()
        header = {
            "format": MAGIC,
            "version": STATE_VERSION,
            "sha256": _digest(entries),
            "entries": sorted(entries),
        }
        out = io.BytesIO()
        # Stored, not deflated: a pipeline run writes the state twice and reads it four times,
        # and at 10,000 machines deflating its ~34 MB took seconds (to save ~25 MB of disk).
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for name, data in [("header.json", json.dumps(header).encode()), *entries.items()]:
                archive.writestr(zipfile.ZipInfo(name, date_time=_STAMP), data)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: object = "the state") -> FleetState:
        hint = reset_hint(source)
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                header = json.loads(archive.read("header.json"))
                if not isinstance(header, dict) or header.get("format") != MAGIC:
                    raise StateError(f"{source} is not a fleetwatch state file. {hint}")
                if header.get("version") != STATE_VERSION:
                    raise StateError(
                        f"{source} was written by state version {header.get('version')!r}; this "
                        f"fleetwatch reads {STATE_VERSION!r} (the format or the default "
                        f"configuration changed; states are not migrated between versions, "
                        f"so reset it). {hint}"
                    )
                entries = {name: archive.read(name) for name in header["entries"]}
        except StateError:
            raise
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError, EOFError) as error:
            raise StateError(f"{source} is corrupt or truncated ({error}). {hint}") from None
        if _digest(entries) != header.get("sha256"):
            raise StateError(f"{source} is corrupt: its checksum does not match. {hint}")
        try:
            meta = json.loads(entries["meta.json"])
            arrays = {
                name.removeprefix("arrays/").removesuffix(".npy"): np.lib.format.read_array(
                    io.BytesIO(blob), allow_pickle=False
                )
                for name, blob in entries.items()
                if name.startswith("arrays/")
            }
            detector = FleetDetector.from_state(meta["detector"], arrays)
            episodes = EpisodeTracker.from_json(meta["episodes"])
            extra = dict(meta.get("extra") or {})
        except (KeyError, ValueError, TypeError) as error:
            raise StateError(f"{source} is inconsistent ({error}). {hint}") from None
        return cls(detector, episodes, extra)


def _digest(entries: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(entries):
        digest.update(name.encode() + b"\0" + len(entries[name]).to_bytes(8, "big"))
        digest.update(entries[name])
    return digest.hexdigest()
