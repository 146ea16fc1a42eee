"""What a pipeline run works with: the product's settings, the run's variables, the Mage run.

* `PipelineSettings.from_env()`: where things are and the alerting policy, from the
  environment after `.env` (InfluxDB, the state and plot folders, the public URL of the plots,
  the digest size, the recur gap that makes bursts one episode, when an alert is late, the
  history an alert's plot shows and how long plots are kept, the shards and how much one run
  catches up, the declared checks' file); `.for_shard(kwargs.get("shard"))` points it at the run's shard.
* `RunVariables.from_kwargs(kwargs)`: the runtime variables Mage hands a block: the run's
  bounds (`lookback_minutes`, `lock_timeout_seconds`) and its `Configuration`: a
  `DetectorConfig` from `threshold`, `features` and any other `DetectorConfig` field given by
  name (`z_alarm`, `persistence`, ...). A configuration that differs from the one the
  pipeline's `metadata.yaml` variables give is an *experiment*: its scores, episodes and
  plots go to places named for it, and it alerts only when `send_alerts` is true. The loader
  parses the variables once; the configuration then travels with the run
  (`influx_magic.run_transaction`), so later blocks use the same one.
* `MageRun.from_kwargs(kwargs)`: which Mage run this is: scheduled and API runs have a page
  that alerts link to; `mage run` has none.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from fleetwatch.detector import DEFAULT_FEATURES, DetectorConfig
from influx_magic.influx import EPISODES_TABLE, SCORES_TABLE, InfluxSettings
from influx_magic.object_state import ObjectState, is_url
from influx_magic.settings import int_setting, load_environment, path_setting, setting
from influx_magic.shards import Shard
from magic_common.envsettings import project_root

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
    recur_gap: timedelta
    late_after: timedelta
    plot_history: timedelta
    plot_retention: timedelta
    mage_public_host: str
    checks_file: Path  # the declared checks (CHECKS_FILE; a missing file declares none)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    shard: Shard = Shard()
    state_root: Path | None = None  # FLEETWATCH_STATE_DIR (its local mirror for a URL)
    catchup: timedelta = timedelta(minutes=60)
    remote: ObjectState | None = field(default=None, repr=False)  # the state dir as a URL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PipelineSettings:
        """From the environment (after `.env`), or from `env` when given."""
        if env is None:
            load_environment()
            env = os.environ
        catchup = _at_least(1, "FLEETWATCH_CATCHUP_MINUTES", env)
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
            recur_gap=timedelta(minutes=_at_least(0, "ALERT_RECUR_GAP_MIN", env)),
            late_after=timedelta(hours=_at_least(0, "ALERT_LATE_AFTER_H", env)),
            plot_history=timedelta(minutes=_at_least(0, "PLOT_HISTORY_MIN", env)),
            plot_retention=timedelta(days=_at_least(1, "PLOT_RETENTION_DAYS", env)),
            mage_public_host=mage_public_host(env),
            checks_file=path_setting("CHECKS_FILE", env),
            env=dict(env),
        )

    def for_shard(self, value: Any) -> PipelineSettings:
        """These settings for the run's shard (the runtime variable `shard`, default 0): its
        folder holds its state, run lock and alert store."""
        shard = Shard.from_run(value, self.env)
        return replace(self, shard=shard, state_dir=shard.folder(self.root))

    @property
    def root(self) -> Path:
        """FLEETWATCH_STATE_DIR (its local mirror when it is a URL)."""
        return self.state_root if self.state_root is not None else self.state_dir


@dataclass(frozen=True)
class Configuration:
    """The detector configuration of a run, and where its results go.

    >>> production = Configuration(DetectorConfig())
    >>> production.experiment, production.scores_table, production.sends_alerts
    (False, 'anomaly_scores', True)
    >>> trial = Configuration(DetectorConfig(threshold=0.9), changed=("threshold",))
    >>> trial.scores_table == f"anomaly_scores_{trial.config_id}", trial.sends_alerts
    (True, False)
    """

    detector: DetectorConfig
    changed: tuple[str, ...] = ()  # fields that differ from the pipeline's defaults
    send_alerts: bool = False  # runtime variable: an experiment alerts the team too

    @property
    def experiment(self) -> bool:
        return bool(self.changed)

    @property
    def config_id(self) -> str:
        """A short hash of the whole detector configuration (it names state, tables, plots)."""
        return hashlib.sha256(self.detector.describe().encode()).hexdigest()[:10]

    @property
    def sends_alerts(self) -> bool:
        return not self.experiment or self.send_alerts

    @property
    def scores_table(self) -> str:
        return f"{SCORES_TABLE}_{self.config_id}" if self.experiment else SCORES_TABLE

    @property
    def episodes_table(self) -> str:
        return f"{EPISODES_TABLE}_{self.config_id}" if self.experiment else EPISODES_TABLE

    def plot_dir(self, output_dir: Path) -> Path:
        return output_dir / "experiments" / self.config_id if self.experiment else output_dir

    def alert_dir(self, state_dir: Path) -> Path:
        """Where its alert ledger and outbox live (an experiment's are its own)."""
        return state_dir / "experiments" / self.config_id if self.experiment else state_dir

    def describe(self) -> str:
        """One line for the log: which configuration, and where its results go."""
        if not self.experiment:
            return f"configuration {self.config_id} (the pipeline's defaults)"
        changes = ", ".join(
            f"{name}={_shown(getattr(self.detector, name))}" for name in self.changed
        )
        alerts = (
            "alerts to the team's channel"
            if self.send_alerts
            else ("no alerts (runtime variable send_alerts=true sends them)")
        )
        return (
            f"experiment {self.config_id} ({changes}): scores in {self.scores_table}, episodes "
            f"in {self.episodes_table}, plots in experiments/{self.config_id}/, {alerts}"
        )


@dataclass(frozen=True)
class RunVariables:
    """The runtime variables of a run: its configuration and its bounds.

    >>> variables = RunVariables.from_kwargs({"threshold": "0.7", "features": "power, load"})
    >>> variables.config.features, variables.config.threshold, variables.lookback
    (('load', 'power'), 0.7, datetime.timedelta(seconds=3600))
    >>> variables.configuration.changed
    ('features', 'threshold')
    """

    configuration: Configuration
    lookback: timedelta
    lock_timeout: float

    @property
    def config(self) -> DetectorConfig:
        return self.configuration.detector

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> RunVariables:
        """From a block's `**kwargs` (the pipeline's variables with the run's on top):
        `lookback_minutes` (first run only), `lock_timeout_seconds`, `send_alerts` and the
        detector settings; missing ones take their defaults."""
        config = detector_config(kwargs)
        defaults = detector_config(pipeline_variables(kwargs))
        changed = tuple(
            f.name
            for f in dataclasses.fields(DetectorConfig)
            if getattr(config, f.name) != getattr(defaults, f.name)
        )
        lookback = _number(kwargs, "lookback_minutes", DEFAULT_LOOKBACK_MINUTES)
        if lookback <= 0:
            raise ValueError(f"runtime variable lookback_minutes must be > 0, got {lookback:g}")
        return cls(
            configuration=Configuration(config, changed, _flag(kwargs, "send_alerts")),
            lookback=timedelta(minutes=lookback),
            lock_timeout=_number(kwargs, "lock_timeout_seconds", DEFAULT_LOCK_TIMEOUT),
        )


def detector_config(variables: Mapping[str, Any]) -> DetectorConfig:
    """A `DetectorConfig` from variables named like its fields (the rest take the defaults).

    >>> detector_config({"z_alarm": "4", "views": "change,level", "quiet_seconds": None}).z_alarm
    4.0
    >>> detector_config({"persistence": "three"})
    Traceback (most recent call last):
    ...
    ValueError: runtime variable persistence: expected an integer, got 'three'
    """
    defaults = DetectorConfig()
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(DetectorConfig):
        name = spec.name
        if name not in variables or name == "features":
            continue
        values[name] = _typed(name, variables[name], getattr(defaults, name))
    values["features"] = parse_features(variables.get("features"))
    try:
        return DetectorConfig(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"runtime variables: {error}") from None


@functools.cache
def _metadata_variables(path: Path) -> dict[str, Any]:
    meta = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return dict(meta.get("variables") or {})


def pipeline_variables(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The variables the pipeline's `metadata.yaml` declares: the production defaults."""
    project = Path(kwargs.get("repo_path") or project_root() / "influx-magic")
    pipeline = kwargs.get("pipeline_uuid") or PIPELINE
    return _metadata_variables(project / "pipelines" / pipeline / "metadata.yaml")


def _typed(name: str, value: Any, default: Any) -> Any:
    """`value` (a runtime variable: JSON value or text) as the type of the field's default."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{") or value in ("null", "none"):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"runtime variable {name}: not JSON: {value!r}") from None
    if value is None or value == "":
        if default is None or name in ("quiet_seconds", "accept_after_seconds", "driver"):
            return None
        raise ValueError(f"runtime variable {name} needs a value")
    if isinstance(default, bool):
        return _flag({name: value}, name)
    if isinstance(default, float):
        return _number({name: value}, name, default)
    try:
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
    except (TypeError, ValueError):
        kind = "an integer" if isinstance(default, int) else "a list of names"
        raise ValueError(f"runtime variable {name}: expected {kind}, got {value!r}") from None
    return value


def _flag(kwargs: Mapping[str, Any], name: str) -> bool:
    value = kwargs.get(name)
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"runtime variable {name}: expected true or false, got {value!r}")


def _shown(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


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


def _at_least(low: int, name: str, env: Mapping[str, str]) -> int:
    value = int_setting(name, env)
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


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
