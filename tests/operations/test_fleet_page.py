"""The fleet status page as a real process beside a real localflux, after real pipeline runs:
its JSON, its same-origin rule, and what headless Chromium shows."""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from influx_magic.operations.cli import main
from tests.influx_magic.conftest import PipelineWorld, world  # noqa: F401 - the fixture
from tests.influx_magic.helpers import run_blocks
from tests.operations.helpers import StoryTelemetry, episode_rows

SCREENSHOT_COPY = os.environ.get("FLEET_PAGE_SCREENSHOT")  # keep a copy to look at, if set


@dataclass(frozen=True)
class FleetPage:
    base: str  # the page's URL, without the trailing slash
    client: Any  # an InfluxDB client on the pipeline's localflux


@pytest.fixture
def fleet_after_a_fault(
    world: PipelineWorld,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    start_process: Callable,
    port_factory: Callable[[], int],
) -> FleetPage:
    """Two runs: healthy history, then an overload on machine2; machine3 muted with a reason
    that is not markup; the page served on a free port."""
    machines = tmp_path / "machines.yaml"
    machines.write_text("machines:\n  - machine: machine1\n    threshold: 0.85\n")
    monkeypatch.setenv("MACHINES_FILE", str(machines))
    monkeypatch.setenv("USER", "ana")
    story = StoryTelemetry.after_history(world.client, 150)
    run_blocks(tmp_path)
    story.write(150, overload=["machine2"])
    run_blocks(tmp_path)
    assert main(["mute", "machine3", "--for", "1h", "--reason", "<b>calibration</b>"]) == 0
    port = port_factory()
    start_process(
        "fleet-page",
        [sys.executable, "-m", "influx_magic.fleet_page", "--port", str(port)],
        url=f"http://127.0.0.1:{port}/health",
        env=dict(os.environ),
    )
    return FleetPage(f"http://127.0.0.1:{port}", world.client)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.mark.slow
def test_the_status_api_answers_its_own_origin_only(fleet_after_a_fault: FleetPage) -> None:
    base = fleet_after_a_fault.base
    status, headers, body = get(f"{base}/api/status")
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    machines = {m["machine_id"]: m for m in json.loads(body)["machines"]}
    assert {k: m["state"] for k, m in machines.items()} == {
        "machine1": "ok",
        "machine2": "anomaly",
        "machine3": "muted",
    }
    assert machines["machine1"]["threshold"] == 0.85
    history = json.loads(get(f"{base}/api/history")[2])
    assert set(history) == {m["unique_id"] for m in machines.values()}
    assert all(len(points) > 50 for points in history.values())  # 10 s bins over 11 minutes
    for refused in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        assert get(f"{base}/api/status", refused)[0] == 403
    port = base.rsplit(":", 1)[1]
    assert get(f"{base}/api/status", {"Host": f"evil.example:{port}"})[0] == 403  # rebinding
    assert get(f"{base}/", {"Host": f"evil.example:{port}"})[0] == 403
    own = {"Origin": base, "Sec-Fetch-Site": "same-origin"}
    assert get(f"{base}/api/status", own)[0] == 200
    page = get(f"{base}/")
    assert "connect-src 'self'" in page[1]["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page[1]["Content-Security-Policy"]


@pytest.mark.slow
@pytest.mark.browser
def test_the_page_shows_each_machines_row_state_and_last_hour(
    fleet_after_a_fault: FleetPage, chromium, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = chromium.new_page(viewport={"width": 1500, "height": 520})
    page.goto(f"{fleet_after_a_fault.base}/")
    rows = page.locator("#rows tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#live")).to_have_text("live")
    states = {}
    for index in range(3):
        row = rows.nth(index)
        states[row.locator("td.machine b").inner_text()] = row.get_attribute("data-state")
    assert states == {"machine1": "ok", "machine2": "anomaly", "machine3": "muted"}
    episode = episode_rows(fleet_after_a_fault.client, "machine2")[0]["episode_id"]
    expect(page.locator("#rows tr[data-state=anomaly] code")).to_have_text(episode)
    muted = page.locator("#rows tr[data-state=muted]")
    expect(muted).to_contain_text("<b>calibration</b> (influx-magic mute by ana)")  # as text
    expect(page.locator("#rows tr").first).to_contain_text("0.85")  # machine1's own threshold
    for index in range(3):  # each chart has its hour of scores and its threshold line
        chart = rows.nth(index).locator("svg.chart")
        expect(chart.locator("polyline.score")).to_have_count(1)
        assert int(chart.get_attribute("data-points")) > 50
        expect(chart.locator("line.limit")).to_have_count(1)
    expect(page.locator("#summary")).to_contain_text("3 machines: 1 anomaly, 1 muted, 1 ok")
    shot = tmp_path / "fleet-page.png"
    page.screenshot(path=str(shot), full_page=True)
    if SCREENSHOT_COPY:
        shutil.copy(shot, SCREENSHOT_COPY)
    page.close()
