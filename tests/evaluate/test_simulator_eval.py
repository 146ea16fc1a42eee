"""The simulator evaluation: scripted faults through the pipeline's monitor, seeded end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetwatch.evaluate import simulator_eval
from fleetwatch.evaluate.cli import main

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
    assert main([*args, "--seed", "3", "--json", str(first)]) == 0
    assert main([*args, "--seed", "3", "--json", str(second)]) == 0
    assert main([*args, "--seed", "4", "--json", str(other)]) == 0
    report = json.loads(first.read_text())
    assert report == json.loads(second.read_text())
    assert report["faults"] != json.loads(other.read_text())["faults"]
    assert set(report["kinds"]) == {"overload", "stuck"}
    assert all(report["kinds"][kind]["events"] >= 2 for kind in ("overload", "stuck"))
    assert report["machine_days"] == pytest.approx(5 * 60 / 1440)


def test_unknown_fault_kind_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulator", "--minutes", "40", "--faults", "overload,meltdown"]) == 2
    assert "meltdown" in capsys.readouterr().err
