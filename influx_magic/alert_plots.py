"""The plots a run's messages link to: one immutable PNG per message.

For each alert, the machine's rows of this run and, read back from InfluxDB, its telemetry and
stored scores from `PLOT_HISTORY_MIN` before the episode began up to this run
(`influx_magic.plots` draws the history, a zoom on the start, and marks the sensors that
contributed). A plot is drawn once: a run redone after a failure keeps the file the message
already links to. The history is best effort: when InfluxDB cannot answer, the plot shows the
run's rows alone and the note for the log says why; a plot is not worth failing an alert for.
Plots older than `PLOT_RETENTION_DAYS` are deleted. An experiment's plots go to its own folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pandas as pd

from influx_magic.alerts import Alert
from influx_magic.influx import (
    SCORES_TABLE,
    InfluxError,
    InfluxSettings,
    connect,
    load_machine_history,
)
from influx_magic.plots import (
    COLUMNS,
    message_plot_path,
    plot_url,
    prune_plots,
    render_message_plot,
)
from influx_magic.run_transaction import Run


@dataclass
class AlertPlots:
    """The PNGs a run drew, the plot URL of each alert (by its key), and notes for the log."""

    drawn: list[Path] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    pruned: int = 0
    note: str = ""

    def summary(self) -> str:
        text = f"{len(self.drawn)} plot(s){self.note}"
        return text + (f", {self.pruned} older than the retention deleted" if self.pruned else "")


def plot_alerts(run: Run, checked: pd.DataFrame, alerts: Sequence[Alert]) -> AlertPlots:
    """Draw the plot of every alert that has none yet, in the run's plot folder."""
    settings, config = run.settings, run.config
    folder = run.configuration.plot_dir(settings.output_dir)
    plots = AlertPlots(pruned=prune_plots(folder, settings.plot_retention))
    rows = checked[checked["status"] == "scored"] if len(checked) else checked
    notes = set()
    for alert in alerts:
        path = message_plot_path(folder, alert)
        if not path.exists():
            mine = rows[rows["unique_id"] == alert.unique_id] if len(rows) else rows
            history, note = episode_history(
                settings.influx,
                alert,
                mine,
                config.features,
                settings.plot_history,
                run.configuration.scores_table,
            )
            notes.add(note)
            parts = [part for part in (history, mine[[*COLUMNS, *config.features]]) if len(part)]
            data = pd.concat(parts, ignore_index=True) if parts else history
            if not len(data):
                continue  # nothing to draw: no rows, no history
            drawn = render_message_plot(
                data,
                path,
                alert,
                features=config.features,
                threshold=config.threshold,
                history=settings.plot_history,
            )
            if drawn:
                plots.drawn.append(path)
        plots.urls[alert.key] = plot_url(path, settings.output_dir, settings.public_base_url)
    plots.note = "".join(sorted(n for n in notes if n))
    return plots


def episode_history(
    influx: InfluxSettings,
    alert: Alert,
    rows: pd.DataFrame,
    features: Sequence[str],
    history: timedelta,
    scores_table: str = SCORES_TABLE,
) -> tuple[pd.DataFrame, str]:
    """The machine's telemetry and stored scores from `history` before the episode began up
    to its first row in this run (or the alert, when it sent none), and a note for the log."""
    columns = [*COLUMNS, *features]
    empty = pd.DataFrame(columns=columns)
    since = pd.Timestamp(alert.start) - pd.Timedelta(history)
    until = pd.Timestamp(rows["time"].min()) if len(rows) else pd.Timestamp(alert.time)
    if until <= since:
        return empty, ""
    try:
        with contextlib.closing(connect(influx)) as client:
            found = load_machine_history(
                client,
                machine=alert.machine_id,
                provider=alert.provider or "",
                since=since,
                until=until,
                features=features,
                scores_table=scores_table,
            )
    except InfluxError as error:
        return empty, f" (without history: {error})"
    found["unique_id"] = alert.unique_id
    return found[columns], ""
