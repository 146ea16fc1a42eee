"""One PNG per alert message: the machine before the episode, and a zoom on how it began.

Layout: one figure, a row per sensor (its unit on the axis) and the anomaly score with its
threshold in the last row, in two columns that share the rows. Left, the overview: from
`history` before the episode's first anomalous point to the last reading the run had. Right, a
zoom on the episode's start (`ZOOM_BEFORE` before it to `ZOOM_AFTER` after). The episode is
shaded (hatched while it is open). Anomalous points are marked on the score and only on the
sensors that contributed, the episode's top features (the detector's attribution), so the eye
goes to the sensor that moved. The title names the machine, the message and the episode.

Each file is named by machine, episode id and message (`<machine>/<episode_id>-opened.png`,
`-recurring-<n>.png`, `-resolved.png`), written once and never rewritten: a run redone after a
failure finds the file and keeps it, so the picture a message links to never changes.
`prune_plots` deletes plots older than the retention. Figures are built with the object API on
the Agg canvas, never through pyplot, so nothing is registered globally and nothing leaks
across runs; a file appears under its name only once it is complete.

>>> message_plot_name("acme-inc-machine2", "4f1c", "opened", 0)
PosixPath('acme-inc-machine2/4f1c-opened.png')
>>> message_plot_name("ACME/Inc machine 2", "4f1c", "recurring", 2).as_posix()
'ACME-Inc-machine-2-4e967a0d/4f1c-recurring-2.png'
>>> plot_url(Path("/plots/m/e-opened.png"), "/plots", "http://127.0.0.1:5006/")
'http://127.0.0.1:5006/plots/m/e-opened.png'
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import matplotlib.dates as mdates
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from slugify import slugify

from influx_magic.alerts import Alert
from influx_magic.units import label

LINE = "#1f5f99"
ANOMALY = "#c62828"
EPISODE = "#ff9800"
THRESHOLD = "#555555"
ZOOM_BEFORE = pd.Timedelta(minutes=1)
ZOOM_AFTER = pd.Timedelta(minutes=2)
COLUMNS = ("time", "machineID", "unique_id", "score", "is_anomaly")
_WORD = {"opened": "Anomaly", "recurring": "Still recurring", "resolved": "Resolved"}


def message_plot_name(unique_id: str, episode_id: str, kind: str, follow_up: int) -> Path:
    """The file of one message's plot, relative to the plots folder: a folder per machine
    (its unique_id, slugified, with a short hash when slugifying changed it), one file per
    episode and message."""
    slug = slugify(unique_id, lowercase=False) or "machine"
    if slug != unique_id:
        slug += "-" + hashlib.sha256(unique_id.encode()).hexdigest()[:8]
    event = f"recurring-{follow_up}" if kind == "recurring" else kind
    return Path(slug) / f"{slugify(episode_id, lowercase=False)}-{event}.png"


def message_plot_path(folder: Path, alert: Alert) -> Path:
    """Where the plot of `alert`'s message lives under `folder`."""
    name = message_plot_name(
        alert.unique_id, alert.episode_id, alert.kind, alert.event.episode.follow_ups
    )
    return folder / name


def plot_url(path: Path, output_dir: str | Path, base_url: str) -> str:
    """Where the inbox (or whatever serves FLEETWATCH_OUTPUT_DIR) publishes `path`."""
    relative = Path(path).resolve().relative_to(Path(output_dir).resolve()).as_posix()
    return f"{base_url.rstrip('/')}/plots/{quote(relative)}"


def render_message_plot(
    rows: pd.DataFrame,
    path: Path,
    alert: Alert,
    *,
    features: Sequence[str],
    threshold: float,
    history: timedelta,
) -> bool:
    """Draw `alert`'s plot from `rows` (the machine's `time`, `machineID`, `unique_id`, the
    `features`, `score`, `is_anomaly`) into `path`, unless the file exists: True when drawn."""
    if path.exists():
        return False
    missing = [c for c in [*COLUMNS, *features] if c not in rows.columns]
    if missing:
        raise ValueError(f"cannot plot: the rows lack column(s) {', '.join(missing)}")
    figure = message_figure(
        rows.sort_values("time"), alert, features=features, threshold=threshold, history=history
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_once(figure, path)


def message_figure(
    rows: pd.DataFrame,
    alert: Alert,
    *,
    features: Sequence[str],
    threshold: float,
    history: timedelta,
) -> Figure:
    """The figure of one message (see the module doc); `rows` sorted by time."""
    start, at = pd.Timestamp(alert.start), pd.Timestamp(alert.time)
    end = None if alert.end is None else pd.Timestamp(alert.end)
    times = pd.to_datetime(rows["time"], utc=True)
    shown = rows[times >= start - pd.Timedelta(history)]
    zoom = rows[(times >= start - ZOOM_BEFORE) & (times <= start + ZOOM_AFTER)]
    moved = {name for name, _ in alert.top_features}

    figure = Figure(figsize=(13, 1.7 * len(features) + 2.8), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(
        len(features) + 1, 2, height_ratios=[1] * len(features) + [1.4], width_ratios=[3, 1.2]
    )
    for column, (frame, title) in enumerate(
        [(shown, "before and during the episode"), (zoom, "its start")]
    ):
        score_ax = figure.add_subplot(grid[-1, column])
        axes = [figure.add_subplot(grid[i, column], sharex=score_ax) for i in range(len(features))]
        data_times = pd.to_datetime(frame["time"], utc=True)
        flagged = frame["is_anomaly"].astype("boolean").fillna(False).to_numpy(bool)
        for ax in [*axes, score_ax]:
            right = end if end is not None else (data_times.max() if len(frame) else at)
            ax.axvspan(start, max(right, start), color=EPISODE, alpha=0.18, lw=0,
                       hatch="//" if end is None else None,
                       label="episode (open)" if end is None else "episode")  # fmt: skip
            ax.grid(True, color="#dddddd", lw=0.6)
        for ax, feature in zip(axes, features, strict=True):
            values = pd.to_numeric(frame[feature], errors="coerce").to_numpy()
            ax.plot(data_times, values, color=LINE, lw=1.0)
            if feature in moved:
                ax.scatter(data_times[flagged], values[flagged], color=ANOMALY, s=14, zorder=3)
            if column == 0:
                ax.set_ylabel(label(feature) + (" *" if feature in moved else ""))
            ax.tick_params(labelbottom=False)
        score = pd.to_numeric(frame["score"], errors="coerce").to_numpy()
        score_ax.plot(data_times, score, color=LINE, lw=1.0, label="anomaly score")
        score_ax.axhline(
            threshold, color=THRESHOLD, ls="--", lw=1.2, label=f"threshold {threshold:g}"
        )
        score_ax.scatter(data_times[flagged], score[flagged], color=ANOMALY, s=14, zorder=3,
                         label="anomalous point")  # fmt: skip
        score_ax.set_ylim(0, 1.05)
        if column == 1:
            score_ax.set_xlim(start - ZOOM_BEFORE, start + ZOOM_AFTER)
        if column == 0:
            score_ax.set_ylabel("anomaly score (0-1)")
        if column == 0:
            score_ax.set_xlabel("time (UTC)")
            locator = mdates.AutoDateLocator(tz="UTC")
            score_ax.xaxis.set_major_locator(locator)
            score_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz="UTC"))
        else:
            score_ax.xaxis.set_major_locator(mdates.MinuteLocator(tz="UTC"))
            score_ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz="UTC"))
        axes[0].set_title(title, fontsize=10, color="#444444")
        if not len(frame):
            axes[0].text(0.5, 0.5, "no data", transform=axes[0].transAxes, ha="center")
        if column == 0:
            _legend(figure, score_ax)

    word = _WORD[alert.kind]
    when = at.strftime("%Y-%m-%d %H:%M:%S UTC")
    figure.suptitle(
        f"{word}: {alert.machine_id} · {alert.unique_id} · {when}\n"
        f"episode {alert.episode_id} · since {start:%Y-%m-%d %H:%M:%S} UTC · "
        f"peak score {alert.peak_score:.2f} · sensors that moved (*): "
        f"{', '.join(sorted(moved)) or 'none'}",
        fontsize=11,
    )
    return figure


def prune_plots(folder: Path, older_than: timedelta, now: float | None = None) -> int:
    """Delete plots under `folder` whose file is older than `older_than`; how many."""
    if not folder.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - older_than.total_seconds()
    pruned = 0
    for path in folder.rglob("*.png"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                pruned += 1
    for directory in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()  # only empty ones go
    return pruned


def _legend(figure: Figure, ax: Axes) -> None:
    """One entry per label (every span repeats its label), under the plots, off the data."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    figure.legend(
        unique.values(), unique.keys(), loc="outside lower center", fontsize=9, ncols=len(unique)
    )


def save_once(figure: Figure, path: Path) -> bool:
    """Write the PNG to a temp file and link it to `path` only if no file is there: a file
    under that name is never replaced. True when this call created it."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    try:
        with os.fdopen(handle, "wb") as file:
            figure.savefig(file, format="png", dpi=100)
        # mkstemp makes the file owner-only; plots are served by whatever web server the team runs.
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: check, then rename
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        figure.clear()
