"""An alert with its plot, delivered to the real local inbox, whose plot link then works."""

from __future__ import annotations

import json
import re
import urllib.request
from datetime import timedelta
from pathlib import Path

import pandas as pd

from influx_magic.alerts import AlertDelivery, SlackWebhookNotifier
from influx_magic.influx import FEATURES
from influx_magic.plots import message_plot_path, plot_url, render_message_plot
from tests.pipeline_lib.helpers import PNG_MAGIC, event, scores
from tests.support import PYTHON


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_alert_reaches_the_inbox_and_its_plot_link_serves_the_png(
    start_process, port_factory, tmp_path: Path
) -> None:
    port = port_factory()
    base = f"http://127.0.0.1:{port}"
    plots = tmp_path / "plots"
    start_process(
        "inbox",
        [PYTHON, "-m", "localflux", "inbox", "--port", str(port),
         "--data-dir", str(tmp_path / "inbox"), "--plots-dir", str(plots)],
        url=f"{base}/api/status",
    )  # fmt: skip

    frame = scores("machine2", anomalous=slice(100, 150))
    first = event(start=frame["time"].iloc[100])
    path = message_plot_path(plots, first)
    render_message_plot(frame, path, first, features=FEATURES, threshold=0.8,
                        history=timedelta(minutes=30))  # fmt: skip
    urls = {first.key: plot_url(path, plots, base)}
    report = AlertDelivery(SlackWebhookNotifier(f"{base}/hook"), tmp_path / "state").run(
        [first], plot_urls=urls, run_url=None
    )
    assert report.ok and report.sent == [f"{first.episode_id}:opened"]

    (message,) = json.loads(fetch(f"{base}/api/messages"))
    assert message["idempotency_key"] == f"{first.episode_id}:opened"
    assert message["text"].startswith("Anomaly on machine2 (acme-inc-machine2)")
    links = re.findall(r"<(http[^|>]+)\|Plot>", json.dumps(message["payload"]["blocks"]))
    assert links == [f"{base}/plots/acme-inc-machine2/{path.name}"]
    assert fetch(links[0])[:8] == PNG_MAGIC
    assert pd.Timestamp(first.start).strftime("%Y-%m-%d %H:%M:%S UTC") in json.dumps(
        message["payload"]
    )
