"""What a pipeline run works with: the product's settings, the run's variables, the Mage run.

* `PipelineSettings.from_env()`: where things are, from the environment after `.env`
  (InfluxDB, the state and plot folders, the public URL of the plots, the digest size, the
  minutes of history an alert's plot shows, the shards and how much one run catches up);
  `.for_shard(kwargs.get("shard"))` points it at the run's shard.
* `RunVariables.from_kwargs(kwargs)`: the runtime variables Mage hands a block
  (`lookback_minutes`, `threshold`, `features`, `lock_timeout_seconds`) as a `DetectorConfig`
  and the run's bounds. The loader parses them once; the configuration then travels with the
  run (`influx_magic.run_transaction`), so later blocks use the same one.
* `MageRun.from_kwargs(kwargs)`: which Mage run this is: scheduled and API runs have a page
  that alerts link to; `mage run` has none.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from fleetwatch.detector import DEFAULT_FEATURES, DetectorConfig
from influx_magic.influx import InfluxSettings
from influx_magic.object_state import ObjectState, is_url
from influx_magic.settings import int_setting, load_dotenv, path_setting, setting
from influx_magic.shards import Shard

DEFAULT_LOOKBACK_MINUTES = 60.0
DEFAULT_LOCK_TIMEOUT = 60.0
PIPELINE = "machine_anomaly_detection"


@dataclass(frozen=True)
class PipelineSettings:
    """The product's settings a run needs (see `.env.example`)."""

    state_dir: Path  # the run's shard's folder (the state dir itself without sharding)
    output_dir: Path
    influx: InfluxSettings
    public_base_url: str
    digest_min: int
    plot_history: timedelta
    mage_public_host: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    shard: Shard = Shard()
    state_root: Path | None = None  # FLEETWATCH_STATE_DIR (its local mirror for a URL)
    catchup: timedelta = timedelta(minutes=60)
    remote: ObjectState | None = field(default=None, repr=False)  # the state dir as a URL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PipelineSettings:
        """From the environment (after `.env`), or from `env` when given."""
        if env is None:
            load_dotenv()
            env = os.environ
        history = int_setting("PLOT_HISTORY_MIN", env)
        if history < 0:
            raise ValueError(f"PLOT_HISTORY_MIN must be >= 0, got {history}")
        catchup = int_setting("FLEETWATCH_CATCHUP_MINUTES", env)
        if catchup <= 0:
            raise ValueError(f"FLEETWATCH_CATCHUP_MINUTES must be > 0, got {catchup}")
        location = setting("FLEETWATCH_STATE_DIR", env)
        remote = ObjectState.open(location) if is_url(location) else None
        root = remote.mirror if remote else path_setting("FLEETWATCH_STATE_DIR", env)
        shard = Shard(0, int_setting("FLEETWATCH_SHARDS", env))
        return cls(
            state_dir=shard.folder(root),
            state_root=root,
            shard=shard,
            catchup=timedelta(minutes=catchup),
            remote=remote,
            output_dir=path_setting("FLEETWATCH_OUTPUT_DIR", env),
            influx=InfluxSettings.from_env(env),
            public_base_url=setting("PUBLIC_BASE_URL", env),
            digest_min=int_setting("ALERT_DIGEST_MIN", env),
            plot_history=timedelta(minutes=history),
            mage_public_host=mage_public_host(env),
            env=dict(env),
        )

    def for_shard(self, value: Any) -> PipelineSettings:
        """These settings for the run's shard (the runtime variable `shard`, default 0): its
        folder holds its state, run lock, pending run and alert store."""
        shard = Shard.from_run(value, self.env)
        return replace(self, shard=shard, state_dir=shard.folder(self.root))

    @property
    def root(self) -> Path:
        """FLEETWATCH_STATE_DIR (its local mirror when it is a URL)."""
        return self.state_root if self.state_root is not None else self.state_dir


@dataclass(frozen=True)
class RunVariables:
    """The runtime variables of a run: the detector configuration and the run's bounds.

    >>> variables = RunVariables.from_kwargs({"threshold": "0.7", "features": "power, load"})
    >>> variables.config.features, variables.config.threshold, variables.lookback
    (('load', 'power'), 0.7, datetime.timedelta(seconds=3600))
    """

    config: DetectorConfig
    lookback: timedelta
    lock_timeout: float

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> RunVariables:
        """From a block's `**kwargs`: `lookback_minutes` (first run only), `threshold`,
        `features` and `lock_timeout_seconds`; missing ones take their defaults."""
        features = parse_features(kwargs.get("features"))
        threshold = _number(kwargs, "threshold", DetectorConfig().threshold)
        try:
            config = DetectorConfig(features=features, threshold=threshold)
        except ValueError as error:
            raise ValueError(f"runtime variable threshold: {error}") from None
        lookback = _number(kwargs, "lookback_minutes", DEFAULT_LOOKBACK_MINUTES)
        if lookback <= 0:
            raise ValueError(f"runtime variable lookback_minutes must be > 0, got {lookback:g}")
        return cls(
            config=config,
            lookback=timedelta(minutes=lookback),
            lock_timeout=_number(kwargs, "lock_timeout_seconds", DEFAULT_LOCK_TIMEOUT),
        )


@dataclass(frozen=True)
class MageRun:
    """The Mage run a block belongs to: its page (None for `mage run`) and how to name it.

    >>> MageRun.from_kwargs({"pipeline_run_id": 7, "pipeline_uuid": "p"}, "http://mage:6789").url
    'http://mage:6789/pipelines/p/runs/7'
    >>> MageRun.from_kwargs({}, "http://mage:6789").url is None
    True
    """

    url: str | None
    describe: str

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], public_host: str) -> MageRun:
        """Mage's `pipeline_run_id` when the scheduler or the API started the run."""
        run_id = kwargs.get("pipeline_run_id")
        if run_id is None:
            return cls(None, "mage run (or the Mage editor)")
        pipeline = kwargs.get("pipeline_uuid") or PIPELINE
        return cls(
            f"{public_host}/pipelines/{pipeline}/runs/{run_id}",
            f"Mage pipeline run {run_id} (trigger {kwargs.get('trigger_name', '?')})",
        )


def parse_features(value: Any) -> tuple[str, ...]:
    """Feature names from a list, a comma-separated string or a JSON list, in the detector's
    canonical order (so `power,load` and `load,power` are one configuration).

    >>> parse_features(None) == DEFAULT_FEATURES
    True
    >>> parse_features('["vibration", "load"]')
    ('load', 'vibration')
    >>> parse_features("load,,load")
    Traceback (most recent call last):
    ...
    ValueError: runtime variable features: 'load' is listed twice
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_FEATURES
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError(f"runtime variable features: not a JSON list: {text!r}") from None
        else:
            value = text.split(",")
    if not isinstance(value, list | tuple):
        raise ValueError(f"runtime variable features: expected a list of names, got {value!r}")
    names = [str(name).strip() for name in value if str(name).strip()]
    if not names:
        raise ValueError("runtime variable features: no feature names given")
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"runtime variable features: {name!r} is listed twice")
    known = [name for name in DEFAULT_FEATURES if name in names]
    return tuple(known + sorted(set(names) - set(known)))


def _number(kwargs: Mapping[str, Any], name: str, default: float) -> float:
    value = kwargs.get(name)
    if value is None or value == "":
        return float(default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"runtime variable {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"runtime variable {name} must be finite, got {value!r}")
    return number


def mage_public_host(env: Mapping[str, str]) -> str:
    """Where people open Mage: Mage's own `MAGE_PUBLIC_HOST`, else this host on MAGE_PORT."""
    host = env.get("MAGE_PUBLIC_HOST") or f"http://127.0.0.1:{int_setting('MAGE_PORT', env)}"
    return host.rstrip("/")
