"""The plots a run's alerts link to: one PNG per machine with anomalies or an episode.

Each plotted machine shows what it did in the `PLOT_HISTORY_MIN` before this run (its telemetry
and stored scores, read back from InfluxDB) followed by the run's rows, with its episodes
shaded: a run holds a minute of data, and an alert's plot should show how the fault began and
what normal looked like. The history is best effort: when InfluxDB cannot answer, the plots show
the run's rows alone and the note says why; a plot is not worth failing an alert for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pandas as pd

from fleetwatch.state import FleetState
from influx_magic.alerts import Alert
from influx_magic.influx import InfluxError, connect, load_machine_history
from influx_magic.plots import Span, plot_path, plot_url, render_machine_plots
from influx_magic.run_context import PipelineSettings


@dataclass
class AlertPlots:
    """The PNGs a run wrote, the plot URL of each alerted machine, and a note for the log."""

    paths: dict[str, Path] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def summary(self) -> str:
        return f"{len(self.paths)} plot(s){self.note}"


def plot_alerts(
    settings: PipelineSettings,
    checked: pd.DataFrame,
    alerts: Sequence[Alert],
    state: FleetState,
) -> AlertPlots:
    """Render the run's plots (machines with anomalous points, resolved or open episodes)."""
    config = state.detector.config
    # The scored rows' plot columns only (not a copy of every column).
    columns = [*plot_frame(config.features).columns, "provider"]
    rows = checked.loc[checked["status"].to_numpy() == "scored", columns]
    spans = [Span(a.unique_id, pd.Timestamp(a.start), pd.Timestamp(a.end)) for a in alerts if a.end]
    spans += [
        Span(uid, pd.Timestamp(episode.start, tz="UTC"), None)
        for uid, episode in state.episodes.open.items()
    ]
    present = set(rows["unique_id"]) if len(rows) else set()
    spans = [span for span in spans if span.unique_id in present]
    wanted = {span.unique_id for span in spans}
    if len(rows):
        wanted |= set(rows.loc[rows["is_anomaly"].astype(bool), "unique_id"])
    history, note = plot_history(settings, rows, wanted, config.features)
    plot_rows = rows if len(rows) else plot_frame(config.features)
    if history is not None:
        # The run's rows keep their deviations (which sensors moved); history has none.
        deviations = [f"dev_{f}" for f in config.features if f"dev_{f}" in rows.columns]
        plot_rows = pd.concat([history, rows[[*history.columns, *deviations]]], ignore_index=True)
    paths = render_machine_plots(
        plot_rows,
        settings.output_dir,
        threshold=config.threshold,
        features=config.features,
        episodes=spans,
        machines=wanted,
    )
    urls = {
        uid: plot_url(path, settings.output_dir, settings.public_base_url)
        for uid in {a.unique_id for a in alerts}
        if (path := plot_path(settings.output_dir, uid)).exists()
    }
    return AlertPlots(paths, urls, note)


def plot_frame(features: Sequence[str]) -> pd.DataFrame:
    """The columns a plot reads, with no rows."""
    columns = ["time", "machineID", "unique_id", *features, "score", "is_anomaly"]
    return pd.DataFrame(columns=columns)


def plot_history(
    settings: PipelineSettings, rows: pd.DataFrame, machines: set[str], features: Sequence[str]
) -> tuple[pd.DataFrame | None, str]:
    """What each machine in `machines` did in the `PLOT_HISTORY_MIN` before its first row of
    this run (read back from InfluxDB), and a note for the log (see the module doc)."""
    if not machines or settings.plot_history <= timedelta(0) or not len(rows):
        return None, ""
    columns = plot_frame(features).columns
    mine = rows[rows["unique_id"].isin(machines)]
    firsts = mine.groupby("unique_id").agg(
        time=("time", "min"), machineID=("machineID", "first"), provider=("provider", "first")
    )
    frames = []
    try:
        with contextlib.closing(connect(settings.influx)) as client:
            for uid, first in firsts.iterrows():
                until = pd.Timestamp(first["time"])
                history = load_machine_history(
                    client,
                    machine=str(first["machineID"]),
                    provider=str(first["provider"]),
                    since=until - settings.plot_history,
                    until=until,
                    features=features,
                )
                history["unique_id"] = uid
                if len(history):
                    frames.append(history[columns])
    except InfluxError as error:
        return None, f" (without history: {error})"
    minutes = settings.plot_history.total_seconds() / 60
    note = f" with {minutes:g} min of history"
    return (pd.concat(frames, ignore_index=True) if frames else None), note
