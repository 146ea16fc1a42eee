"""One PNG per machine with anomalies: each sensor on its own axes, the score below.

Each feature gets its own axes and unit label (shared time axis), the score panel shows the
threshold, anomalous points are marked on every panel and episodes are shaded across all of
them, so "which sensor moved, when, and how far above the threshold" reads at a glance.

Figures are built with the object API on the Agg canvas, never through pyplot: nothing is
registered globally, so nothing can leak across runs, and no display backend is needed. Files
are written to a temp name and renamed, so the inbox never serves half a PNG.

File names are stable (the same machine overwrites its plot, so a link in an alert always shows
the latest picture) and safe: the unique_id, slugified, with a short hash added only when
slugifying changed it (so two odd ids cannot land on the same file).

>>> plot_path("/plots", "acme-inc-machine2")
PosixPath('/plots/acme-inc-machine2.png')
>>> plot_path("/plots", "ACME/Inc machine 2").name
'ACME-Inc-machine-2-4e967a0d.png'
>>> plot_url(Path("/plots/acme-inc-machine2.png"), "/plots", "http://127.0.0.1:5006/")
'http://127.0.0.1:5006/plots/acme-inc-machine2.png'
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from slugify import slugify

from fleetwatch.attribution import contributors
from influx_magic.settings import setting
from influx_magic.units import label

LINE = "#1f5f99"
ANOMALY = "#c62828"
EPISODE = "#ff9800"
THRESHOLD = "#555555"


@dataclass(frozen=True)
class Span:
    """An episode to shade: from `start` to `end` (None while it is still open)."""

    unique_id: str
    start: pd.Timestamp
    end: pd.Timestamp | None


def plot_path(output_dir: str | Path, unique_id: str) -> Path:
    """The stable, filesystem-safe PNG path for one machine's plot."""
    slug = slugify(unique_id, lowercase=False) or "machine"
    if slug != unique_id:
        slug += "-" + hashlib.sha256(unique_id.encode()).hexdigest()[:8]
    return Path(output_dir) / f"{slug}.png"


def plot_url(path: Path, output_dir: str | Path, base_url: str | None = None) -> str:
    """Where the inbox (or whatever serves FLEETWATCH_OUTPUT_DIR) publishes `path`."""
    base = (base_url if base_url is not None else setting("PUBLIC_BASE_URL")).rstrip("/")
    relative = Path(path).resolve().relative_to(Path(output_dir).resolve()).as_posix()
    return f"{base}/plots/{quote(relative)}"


def render_machine_plots(
    scores: pd.DataFrame,
    output_dir: str | Path,
    *,
    threshold: float,
    features: Sequence[str],
    episodes: Iterable[Any] = (),
    machines: Iterable[str] | None = None,
) -> dict[str, Path]:
    """Render one PNG per machine that has anomalous points or episodes; unique_id -> path.

    `scores` has one row per machine and time: `time`, `machineID`, `unique_id`, the
    `features`, `score` and `is_anomaly`, and optionally the detector's `dev_<feature>`
    deviations: an anomalous point is marked on the panels of the sensors that contributed
    (`fleetwatch.attribution.contributors`, the rule the alert's "features that moved"
    follows), or on every panel where its deviations are not known (rows read back from
    InfluxDB, which stores scores only). `episodes` are objects or mappings with `unique_id`,
    `start` and `end` (None while open), such as the alert events. `machines` restricts the
    plots to these unique_ids (default: every machine with an anomalous point or an episode).
    """
    required = ["time", "machineID", "unique_id", *features, "score", "is_anomaly"]
    missing = [column for column in required if column not in scores.columns]
    if missing:
        raise ValueError(f"cannot plot: the scores frame lacks column(s) {', '.join(missing)}")
    spans = [_span(e) for e in episodes]
    if machines is None:
        flagged = scores.loc[scores["is_anomaly"].fillna(False).astype(bool), "unique_id"]
        wanted = set(flagged) | {s.unique_id for s in spans}
    else:
        wanted = set(machines)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for unique_id, rows in scores[scores["unique_id"].isin(wanted)].groupby("unique_id"):
        uid = str(unique_id)
        mine = [s for s in spans if s.unique_id == uid]
        figure = _figure(rows.sort_values("time"), uid, features, threshold, mine)
        paths[uid] = _save(figure, plot_path(output, uid))
    return paths


def marked_sensors(rows: pd.DataFrame, features: Sequence[str], flagged: np.ndarray) -> np.ndarray:
    """Per row and feature: mark the point on that feature's panel? Anomalous points only, on
    the sensors that contributed; every panel where the row has no deviations.

    >>> rows = pd.DataFrame({"dev_load": [9.0, np.nan], "dev_power": [1.0, np.nan]})
    >>> marked_sensors(rows, ["load", "power"], np.array([True, True])).tolist()
    [[True, False], [True, True]]
    """
    columns = [f"dev_{f}" for f in features]
    if not set(columns) <= set(rows.columns):
        return np.repeat(flagged[:, None], len(features), axis=1)
    deviations = rows[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    known = np.isfinite(deviations).any(axis=1)
    moved = np.where(known[:, None], contributors(deviations), True)
    return moved & flagged[:, None]


def _figure(
    rows: pd.DataFrame, unique_id: str, features: Sequence[str], threshold: float, spans: list[Span]
) -> Figure:
    times = pd.to_datetime(rows["time"], utc=True)
    flagged = rows["is_anomaly"].fillna(False).astype(bool).to_numpy()
    figure = Figure(figsize=(11, 1.7 * len(features) + 2.6), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(len(features) + 1, 1, height_ratios=[1] * len(features) + [1.4])
    score_ax = figure.add_subplot(grid[-1])
    axes = [figure.add_subplot(grid[i], sharex=score_ax) for i in range(len(features))]

    end_of_data = times.iloc[-1]
    for ax in [*axes, score_ax]:
        for span in spans:
            ax.axvspan(
                span.start,
                span.end if span.end is not None else end_of_data,
                color=EPISODE,
                alpha=0.18,
                lw=0,
                hatch="//" if span.end is None else None,
                label="episode (open)" if span.end is None else "episode",
            )
        ax.grid(True, color="#dddddd", lw=0.6)

    marked = marked_sensors(rows, features, flagged)
    for j, (ax, feature) in enumerate(zip(axes, features, strict=True)):
        values = pd.to_numeric(rows[feature], errors="coerce").to_numpy()
        ax.plot(times, values, color=LINE, lw=1.0)
        ax.scatter(times[marked[:, j]], values[marked[:, j]], color=ANOMALY, s=14, zorder=3)
        ax.set_ylabel(label(feature))
        ax.tick_params(labelbottom=False)

    score = pd.to_numeric(rows["score"], errors="coerce").to_numpy()
    score_ax.plot(times, score, color=LINE, lw=1.0, label="anomaly score")
    score_ax.axhline(threshold, color=THRESHOLD, ls="--", lw=1.2, label=f"threshold {threshold:g}")
    score_ax.scatter(
        times[flagged], score[flagged], color=ANOMALY, s=14, zorder=3, label="anomalous point"
    )
    top = max(1.0, float(pd.Series(score).max(skipna=True) or 0.0))
    score_ax.set_ylim(0, top * 1.05)
    score_ax.set_ylabel("anomaly score (0-1)")
    score_ax.set_xlabel("time (UTC)")
    locator = mdates.AutoDateLocator(tz="UTC")
    score_ax.xaxis.set_major_locator(locator)
    score_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz="UTC"))

    machine = str(rows["machineID"].iloc[0])
    figure.suptitle(f"{machine} · {unique_id}", fontsize=13, fontweight="bold")
    axes[0].set_title(
        f"{_when(times.iloc[0])} – {_when(end_of_data)}   ·   {int(flagged.sum())} anomalous "
        f"point(s)   ·   {len(spans)} episode(s)",
        fontsize=9,
        color="#444444",
    )
    _legend(figure, score_ax)
    return figure


def _legend(figure: Figure, ax: Axes) -> None:
    """One entry per label (every span repeats its label), under the plots, off the data."""
    handles, labels = ax.get_legend_handles_labels()
    unique: Mapping[str, Any] = dict(zip(labels, handles, strict=True))
    figure.legend(
        unique.values(), unique.keys(), loc="outside lower center", fontsize=9, ncols=len(unique)
    )


def _save(figure: Figure, path: Path) -> Path:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    try:
        with os.fdopen(handle, "wb") as file:
            figure.savefig(file, format="png", dpi=100)
        # mkstemp makes the file owner-only; plots are served by whatever web server the team runs.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        figure.clear()
    return path


def _span(episode: Any) -> Span:
    """A shading span from an alert event, an episode object or a mapping."""

    def field(name: str) -> Any:
        if isinstance(episode, Mapping):
            return episode.get(name)
        return getattr(episode, name, None)

    unique_id, start, end = field("unique_id"), field("start"), field("end")
    if unique_id is None or start is None:
        raise ValueError(f"an episode to plot needs unique_id and start, got {episode!r}")
    ended = None if end is None or pd.isna(end) else _utc(pd.Timestamp(end))
    return Span(str(unique_id), _utc(pd.Timestamp(start)), ended)


def _utc(moment: pd.Timestamp) -> pd.Timestamp:
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def _when(moment: datetime) -> str:
    return pd.Timestamp(moment).strftime("%Y-%m-%d %H:%M:%S UTC")
