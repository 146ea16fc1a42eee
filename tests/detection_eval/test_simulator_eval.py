"""The simulator evaluation: scripted faults through the pipeline's monitor, seeded end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detection_eval import simulator_eval
from detection_eval.cli import main
from detection_eval.pipeline_monitor import EpisodeGrouper, make_monitor

KINDS = simulator_eval.parse_faults(simulator_eval.ALL_FAULTS_ARG)


def test_readings_follow_the_script_and_carry_ground_truth() -> None:
    faults = [
        simulator_eval.Fault(
            "machine1", "drift", simulator_eval.START + 100, simulator_eval.START + 200
        )
    ]
    readings = simulator_eval.simulate_readings(["machine1", "machine2"], 7, faults, 300)
    assert len(readings) == 600
    on = readings[(readings["machine_id"] == "machine1") & readings["fault"].notna()]
    assert on["time"].min() == simulator_eval.START + 100
    assert on["time"].max() == simulator_eval.START + 199
    assert set(on["fault"]) == {"drift"}
    assert readings.loc[readings["machine_id"] == "machine2", "fault"].isna().all()


def test_same_seed_same_report_different_seed_different_faults(tmp_path: Path) -> None:
    args = ["simulator", "--minutes", "60", "--machines", "5", "--faults", "overload,stuck"]
    first, second, other = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    assert main([*args, "--seeds", "3", "--json", str(first)]) == 0
    assert main([*args, "--seeds", "3", "--json", str(second)]) == 0
    assert main([*args, "--seeds", "4", "--json", str(other)]) == 0
    report = json.loads(first.read_text())
    assert report == json.loads(second.read_text())
    assert report["faults"] != json.loads(other.read_text())["faults"]
    assert set(report["kinds"]) == {"overload", "stuck"}
    assert all(report["kinds"][kind]["events"] >= 2 for kind in ("overload", "stuck"))
    assert report["machine_days"] == pytest.approx(5 * 60 / 1440)


def test_unknown_fault_kind_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulator", "--minutes", "40", "--faults", "overload,meltdown"]) == 2
    assert "meltdown" in capsys.readouterr().err


def test_episode_grouper_opens_on_a_flag_and_closes_after_quiet_seconds() -> None:
    grouper = EpisodeGrouper(quiet=60.0)
    times = np.arange(0.0, 300.0)
    flags = np.isin(times, [10, 11, 50, 200])
    first = grouper.feed("m1", times[:100], flags[:100])
    assert [(e.start, e.opened_at) for e in first] == [(10.0, 10.0)]
    # The episode stays open across batches until a 60 s gap; 200 opens a new one.
    assert [e.start for e in grouper.feed("m1", times[100:], flags[100:])] == [200.0]
    assert [e.start for e in grouper.feed("m2", times[:100], flags[:100])] == [10.0]


def test_the_upstream_pipeline_catches_spikes_on_power_and_misses_bearing_wear() -> None:
    """The blog's detector watches power only: a bearing fault (vibration) is invisible to it."""
    report = simulator_eval.evaluate(
        minutes=60, faults=("spike", "bearing"), machines=4, seed=1, detector="upstream"
    )
    assert report.result.kinds["spike"].recall == 1.0
    assert report.result.kinds["bearing"].recall == 0.0


def test_all_without_nab_or_skab_data_runs_the_simulator_for_both_detectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NAB_DIR", str(tmp_path / "no-nab-here"))
    monkeypatch.setenv("SKAB_DIR", str(tmp_path / "no-skab-here"))
    args = ["all", "--output", str(tmp_path), "--minutes", "60", "--machines", "5"]
    assert main([*args, "--sim-seeds", "1", "--scenarios", "none"]) == 0
    out = capsys.readouterr().out
    assert "skipping NAB" in out and "skipping SKAB" in out and "upstream" in out
    payload = json.loads((tmp_path / "eval.json").read_text())
    assert "nab" not in payload and "skab" not in payload
    pooled = payload["simulator"]["pooled"]
    assert [r["detector"] for r in pooled] == ["upstream", "default"]


def test_the_product_detector_alerts_once_per_overload_with_no_false_episode() -> None:
    """The pipeline's FleetDetector + EpisodeTracker on the upstream fault, 3 machines."""
    report = simulator_eval.evaluate(minutes=90, faults=("overload",), machines=3, seed=2)
    overload = report.result.kinds["overload"]
    assert overload.events >= 3 and overload.recall == 1.0
    assert overload.episodes == overload.events
    assert report.result.false_episodes == 0
    assert report.monitor == "fleetwatch FleetDetector + EpisodeTracker"


def test_the_default_detector_finds_every_injected_fault_of_every_kind() -> None:
    report = simulator_eval.evaluate(minutes=60, faults=KINDS, machines=5, seed=1)
    assert {kind: k.recall for kind, k in report.result.kinds.items()} == dict.fromkeys(KINDS, 1.0)


def test_product_overrides_come_from_json_and_bad_ones_are_clear_errors() -> None:
    monitor = make_monitor('{"name": "wide", "product": {"n_trees": 10}, "cooldown_seconds": 60}')
    assert monitor.detector == "wide"
    assert monitor.state.detector.config.n_trees == 10
    assert monitor.state.episodes.cooldown_seconds == 60
    with pytest.raises(ValueError, match="unknown product setting"):
        make_monitor('{"product": {"forest": 10}}')
    with pytest.raises(ValueError, match="runs the product detector"):
        make_monitor('{"views": ["value"]}')


def test_a_restart_is_a_data_gap_then_a_cooler_machine_at_a_new_level() -> None:
    """`Outage`: no readings while stopped; after it the temperature starts lower (the machine
    cooled) and the load runs around the shifted level."""
    from machine_simulator.signals import Outage

    start = simulator_eval.START
    outage = Outage("machine1", start + 1800, start + 1890, level_shift=-15.0)
    readings = simulator_eval.simulate_readings(["machine1", "machine2"], 4, [], 3600, [outage])
    one = readings[readings["machine_id"] == "machine1"].set_index("time")
    assert len(readings[readings["machine_id"] == "machine2"]) == 3600
    assert len(one) == 3600 - 90
    assert not one.index.to_series().between(start + 1800, start + 1889).any()
    before, after = one.loc[: start + 1799], one.loc[start + 1890 :]
    assert after["temperature"].iloc[0] < before["temperature"].iloc[-60:].min() - 2
    assert after["load"].iloc[300:].mean() < before["load"].iloc[-1200:].mean() - 8


def test_the_daily_pattern_lowers_the_load_at_night() -> None:
    from machine_simulator.signals import ShiftPattern

    start = simulator_eval.START  # 22:13 UTC
    readings = simulator_eval.simulate_readings(
        ["machine1"], 4, [], 12 * 3600, pattern=ShiftPattern()
    )
    hours = (readings["time"] % 86400) // 3600
    night = readings.loc[hours.between(0, 4), "load"].mean()
    day = readings.loc[hours.between(7, 9), "load"].mean()
    assert night < 0.5 * day
    assert readings["time"].iloc[0] == start


def test_scenarios_pool_their_seeds_and_report_restarts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scenarios.json"
    args = ["simulator", "--scenario", "restarts", "--scenario", "daily", "--minutes", "100"]
    args += ["--machines", "2", "--seeds", "1,2", "--faults", "overload,drift", "--json", str(out)]
    assert main([*args, "--jobs", "1"]) == 0
    payload = json.loads(out.read_text())
    pooled = {r["scenario"]: r for r in payload["pooled"]}
    runs = [r for r in payload["runs"] if r["scenario"] == "restarts"]
    assert [r["seed"] for r in runs] == [1, 2] and pooled["restarts"]["seed"] == [1, 2]
    for kind in ("overload", "drift"):
        assert pooled["restarts"]["kinds"][kind]["events"] == sum(
            r["kinds"][kind]["events"] for r in runs
        )
    assert pooled["restarts"]["outages"] == sum(r["outages"] for r in runs) > 0
    assert pooled["daily"]["outages"] == 0
    assert pooled["restarts"]["false_episodes"] == sum(r["false_episodes"] for r in runs)
    text = capsys.readouterr().out
    assert "restarts: default" in text and "daily: default" in text
