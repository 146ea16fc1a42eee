"""The Docker stack's Grafana: provisioning files and the fleet dashboard, checked without Grafana.

Grafana cannot run here. The provisioning files are parsed and checked against the compose file;
every SQL the dashboard holds (panels, the repeated per-machine panel, the annotation, the
`machine` variable) is expanded the way Grafana expands it (tests/grafana_sql.py) and run
against a localflux holding what the pipeline really writes: telemetry with a fault, then one
pipeline run (the five blocks, `run_blocks`), which fills anomaly_scores and opens an episode in anomaly_episodes.
The episode is still open, so `anomaly_episodes` has no `resolved_at` column yet (InfluxDB
creates a column with its first value): a dashboard query naming it would fail here as it would on a new
stack.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
import yaml

from fleetwatch.detector import DetectorConfig
from tests.compose_file import compose, filled_env
from tests.grafana_sql import expand_macros, expand_variables
from tests.influx_magic.conftest import PipelineWorld, seed_fault
from tests.influx_magic.helpers import run_blocks
from tests.support import REPO_ROOT

GRAFANA = REPO_ROOT / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "influxdb3.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "influx-magic.yaml"
DASHBOARD = GRAFANA / "dashboards" / "fleet.json"
INTERVAL = timedelta(seconds=10)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    [source] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return source


def sql_of(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every SQL in the dashboard, by where it sits."""
    found = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']} {target['refId']}"] = target["rawSql"]
    for annotation in dashboard["annotations"]["list"]:
        if "target" in annotation:
            found[f"annotation {annotation['name']}"] = annotation["target"]["rawSql"]
    for variable in dashboard["templating"]["list"]:
        found[f"variable {variable['name']}"] = variable["query"]
    return found


def datasource_uids(dashboard: dict[str, Any]) -> set[str]:
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel}
    uids |= {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    uids |= {v["datasource"]["uid"] for v in dashboard["templating"]["list"]}
    uids |= {
        a["datasource"]["uid"] for a in dashboard["annotations"]["list"] if not a.get("builtIn")
    }
    return uids


# --- provisioning, against the compose file ----------------------------------------------------


def test_the_data_source_is_influxdb_3_sql_with_the_token_from_env(datasource) -> None:
    grafana = compose()["services"]["grafana"]
    env = grafana["environment"]
    assert datasource["type"] == "influxdb" and datasource["access"] == "proxy"
    assert datasource["jsonData"]["version"] == "SQL"
    # Flight without TLS, on the port the stack's services use.
    assert datasource["jsonData"]["insecureGrpc"] is True
    telegraf = compose()["services"]["telegraf"]["environment"]
    assert datasource["url"] == telegraf["INFLUX_HOST"] == "http://influxdb3:8181"
    # Grafana expands ${NAME} in provisioning files from its own environment.
    assert datasource["jsonData"]["dbName"] == "${INFLUX_DATABASE}"
    assert datasource["secureJsonData"]["token"] == "${INFLUX_TOKEN}"
    for name in ("INFLUX_DATABASE", "INFLUX_TOKEN"):
        assert env[name] == telegraf[name], name
    assert "token" not in json.dumps(datasource["jsonData"]).lower()


def test_grafana_mounts_the_provisioning_and_the_dashboards_it_is_told_to_load() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    [provider] = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    for host_path in ("./grafana/provisioning", "./grafana/dashboards"):
        assert (REPO_ROOT / host_path).is_dir()
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"])
    secret = compose(filled_env(GRAFANA_ADMIN_PASSWORD="s3cret"))["services"]["grafana"]
    assert secret["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"


def test_the_dashboard_uses_the_provisioned_data_source(dashboard, datasource) -> None:
    assert datasource_uids(dashboard) == {datasource["uid"]}
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert titles == [
        "Anomaly score vs threshold",
        "Open episodes",
        "Telemetry per machine",
        "Telemetry: ${machine}",
    ]
    [repeated] = [p for p in dashboard["panels"] if p.get("repeat")]
    assert repeated["repeat"] == "machine"


def test_the_threshold_line_is_the_detectors_threshold(dashboard) -> None:
    [scores] = [p for p in dashboard["panels"] if p["title"] == "Anomaly score vs threshold"]
    steps = scores["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [step["value"] for step in steps] == [None, DetectorConfig().threshold]
    assert scores["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"].startswith("line")


def test_every_sql_uses_only_macros_and_variables_grafana_expands(dashboard) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for where, sql in sql_of(dashboard).items():
        expanded = expand_macros(
            expand_variables(sql, {"machine": ["machine1", "o'brien"]}),
            start,
            start + timedelta(hours=1),
            INTERVAL,
        )
        assert "$" not in expanded, where
        # A value with a quote stays one SQL string (Grafana's sqlstring format).
        if "machine:sqlstring" in sql:
            assert "'o''brien'" in expanded, where


# --- every query, against what the pipeline writes ---------------------------------------------


def run_sql(world: PipelineWorld, sql: str) -> pa.Table:
    return world.client.query(sql)


def test_every_dashboard_query_returns_rows_from_the_pipelines_tables(
    world: PipelineWorld, dashboard, tmp_path
) -> None:
    seed_fault(world)  # 9 min healthy, then machine2 overloaded for 3 min
    summary = run_blocks(tmp_path)  # the five blocks, in this process
    assert summary["episodes_written"] >= 1, summary
    start = datetime.fromtimestamp(world.telemetry.start_ms / 1000, tz=UTC) - timedelta(minutes=1)
    end = datetime.now(UTC) + timedelta(minutes=1)
    queries = sql_of(dashboard)

    # The variable first: Grafana fills `machine` from it.
    machines_sql = expand_macros(queries.pop("variable machine"), start, end, INTERVAL)
    machines = run_sql(world, machines_sql).column(0).to_pylist()
    assert machines == ["machine1", "machine2", "machine3"]

    def run(where: str, values: list[str]) -> pa.Table:
        sql = expand_macros(
            expand_variables(queries[where], {"machine": values}), start, end, INTERVAL
        )
        return run_sql(world, sql)

    # The telemetry panel repeats once per machine, each with that machine alone.
    for machine in machines:
        telemetry = run("panel Telemetry: ${machine} A", [machine])
        assert telemetry.num_rows > 0, machine
        assert telemetry.column_names == ["time", "temperature", "load", "power", "vibration"]

    scores = run("panel Anomaly score vs threshold A", machines)
    assert set(scores.column("machineID").to_pylist()) == set(machines)
    assert max(scores.column("score").to_pylist()) > DetectorConfig().threshold

    episodes = run("annotation Episodes", machines)
    assert episodes.num_rows > 0
    # Grafana takes an annotation's fields by these names.
    assert episodes.column_names == ["time", "text", "tags"]
    assert "machine2" in episodes.column("tags").to_pylist()
    assert any("machine2: episode open" in t for t in episodes.column("text").to_pylist())

    open_episodes = run("panel Open episodes A", machines)
    assert "machine2" in open_episodes.column("machineID").to_pylist()
    assert all(row > 0 for row in (telemetry.num_rows, scores.num_rows, open_episodes.num_rows))
