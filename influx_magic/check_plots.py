"""The plots a declared check's messages link to: the checked sensor around the finding.

One immutable PNG per message, named like the detector's (`<machine>/<episode_id>-opened.png`,
`-recurring-<n>.png`, `-resolved.png`, in the same folder) and drawn once: a run redone after a
failure keeps the file the message already links to. It shows the machine's readings, read
back from InfluxDB, from `PLOT_HISTORY_MIN` (at least a minute) before the finding began up to
the message: the check's sensor (a limit, a window test) or every detector feature (no_data,
where the gap is the finding, and SQL checks, whose query names no sensor). The finding is
shaded (hatched while open); a limit is drawn as its line, a window test as the control
window's mean and its band of k standard deviations, with the window shaded. The title names
the check and says what it found. Like the detector's plots, this is best effort: when
InfluxDB cannot answer, or there is nothing to draw, the message goes without a plot and the
note for the log says why.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import matplotlib.dates as mdates
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from influx_magic.alert_plots import AlertPlots
from influx_magic.alerts import CheckAlert
from influx_magic.influx import InfluxError, connect, load_machine_history
from influx_magic.plots import (
    ANOMALY,
    EPISODE,
    LINE,
    THRESHOLD,
    message_plot_name,
    plot_url,
    save_once,
)
from influx_magic.run_transaction import Run
from influx_magic.units import label

LEAST_HISTORY = timedelta(minutes=1)  # before the finding, whatever PLOT_HISTORY_MIN says
GAP = pd.Timedelta(seconds=30)  # a silence longer than this is drawn as a gap
_WORD = {"opened": "Anomaly", "recurring": "Still recurring", "resolved": "Resolved"}


def plot_checks(run: Run, alerts: Sequence[CheckAlert]) -> AlertPlots:
    """Draw the plot of every check alert that has none yet, in the run's plot folder."""
    settings = run.settings
    folder = run.configuration.plot_dir(settings.output_dir)
    plots = AlertPlots()
    notes = set()
    for alert in alerts:
        episode = alert.event.episode
        path = folder / message_plot_name(
            alert.unique_id, alert.episode_id, alert.kind, episode.follow_ups
        )
        if not path.exists():
            sensors = checked_sensors(alert, run.config.features)
            since = first_shown(alert) - max(settings.plot_history, LEAST_HISTORY)
            until = pd.Timestamp(alert.time) + pd.Timedelta(seconds=1)
            try:
                with contextlib.closing(connect(settings.influx)) as client:
                    rows = load_machine_history(
                        client,
                        machine=alert.machine_id,
                        provider=alert.provider or "",
                        since=since,
                        until=until,
                        features=sensors,
                    )
            except InfluxError as error:
                notes.add(f" (a check plot without data: {error})")
                continue
            if not len(rows):
                continue  # nothing to draw
            path.parent.mkdir(parents=True, exist_ok=True)
            if save_once(check_figure(rows, alert, sensors, since), path):
                plots.drawn.append(path)
        plots.urls[alert.key] = plot_url(path, settings.output_dir, settings.public_base_url)
    plots.note = "".join(sorted(notes))
    return plots


def checked_sensors(alert: CheckAlert, features: Sequence[str]) -> list[str]:
    """The sensor a limit or window test checks; every detector feature for the others."""
    sensor = _decision(alert).get("sensor")
    return [str(sensor)] if sensor else list(features)


def first_shown(alert: CheckAlert) -> pd.Timestamp:
    """The finding's start, or a window test's window when it began earlier."""
    start = pd.Timestamp(alert.start)
    window = _decision(alert).get("window")
    if alert.event.episode.check_kind == "window_test" and window:
        start = min(start, pd.Timestamp(window[0]))
    return start


def check_figure(
    rows: pd.DataFrame, alert: CheckAlert, sensors: Sequence[str], since: pd.Timestamp
) -> Figure:
    """The figure of one check message (see the module doc); `rows` hold `time` and `sensors`."""
    episode = alert.event.episode
    details = _decision(alert)
    start, at = pd.Timestamp(alert.start), pd.Timestamp(alert.time)
    end = pd.Timestamp(alert.end) if alert.end is not None else at
    rows = broken_at_gaps(rows.sort_values("time"), sensors)
    times = pd.to_datetime(rows["time"], utc=True)
    left = max(since, times.min()) if len(rows) else since

    figure = Figure(figsize=(11, 1.8 * len(sensors) + 1.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(sensors), 1, sharex=True, squeeze=False)[:, 0]
    for ax, sensor in zip(axes, sensors, strict=True):
        ax.axvspan(start, max(end, start), color=EPISODE, alpha=0.2, lw=0,
                   hatch="//" if alert.end is None else None,
                   label="finding (open)" if alert.end is None else "finding")  # fmt: skip
        ax.plot(times, pd.to_numeric(rows[sensor], errors="coerce"), color=LINE, lw=1.0,
                label="readings")  # fmt: skip
        if details.get("sensor") == sensor:
            _decision_marks(ax, episode.check_kind, details)
        ax.set_ylabel(label(sensor))
        ax.grid(True, color="#dddddd", lw=0.6)
    axes[-1].set_xlim(left - pd.Timedelta(seconds=5), max(end, at) + pd.Timedelta(seconds=5))
    axes[-1].set_xlabel("time (UTC)")
    locator = mdates.AutoDateLocator(tz="UTC")
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz="UTC"))
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    figure.legend(unique.values(), unique.keys(), loc="outside lower center", fontsize=9,
                  ncols=len(unique))  # fmt: skip
    figure.suptitle(
        f"{_WORD[alert.kind]}: {alert.machine_id} · check {episode.check} "
        f"({episode.check_kind}) · {at:%Y-%m-%d %H:%M:%S} UTC · episode {alert.episode_id}\n"
        + textwrap.fill(episode.summary, 120),
        fontsize=11,
    )
    return figure


def broken_at_gaps(rows: pd.DataFrame, sensors: Sequence[str]) -> pd.DataFrame:
    """`rows` (sorted by time) with an empty reading inside every silence longer than `GAP`,
    so no line is drawn across it (a gap in the data is shown as one).

    >>> t = pd.to_datetime(["2026-01-01 00:00:00", "2026-01-01 00:00:01", "2026-01-01 00:05:00"])
    >>> broken_at_gaps(pd.DataFrame({"time": t, "load": [1.0, 2.0, 3.0]}), ["load"])["load"].tolist()
    [1.0, 2.0, nan, 3.0]
    """
    times = pd.to_datetime(rows["time"])
    after = times.diff() > GAP
    if not after.any():
        return rows
    breaks = pd.DataFrame({"time": times[after] - pd.Timedelta(1, "ns")})
    for sensor in sensors:
        breaks[sensor] = float("nan")
    return pd.concat([rows[["time", *sensors]], breaks]).sort_values("time", kind="stable")


def _decision(alert: CheckAlert) -> dict[str, Any]:
    """The numbers that decided the finding: a window test's first failing evaluation, the
    others' details as they are."""
    details = alert.event.episode.details
    first = details.get("first")
    return dict(first) if isinstance(first, dict) else dict(details)


def _decision_marks(ax: Any, kind: str, details: dict[str, Any]) -> None:
    """The limit's line, or the window test's control mean, band and window."""
    if kind == "limit" and details.get("limit") is not None:
        word = "above" if details.get("direction") == "above" else "below"
        ax.axhline(float(details["limit"]), color=ANOMALY, ls="--", lw=1.2,
                   label=f"limit ({word} {float(details['limit']):g})")  # fmt: skip
    elif kind == "window_test" and details.get("std_control") is not None:
        mean, std = float(details["mean_control"]), float(details["std_control"])
        k = float(details.get("k", 3))
        ax.axhline(mean, color=THRESHOLD, ls="--", lw=1.2, label="control window's mean")
        ax.axhspan(mean - k * std, mean + k * std, color=THRESHOLD, alpha=0.12, lw=0,
                   label=f"control mean ± {k:g} std")  # fmt: skip
        window = details.get("window")
        if window:
            ax.axvspan(pd.Timestamp(window[0]), pd.Timestamp(window[1]), color=LINE, alpha=0.15,
                       lw=0, label="window tested")  # fmt: skip
