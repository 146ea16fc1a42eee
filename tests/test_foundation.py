"""The foundation: configuration names, pins, the test fixtures themselves, Mage's project."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from localsystem import settings
from tests.support import PYTHON, REPO_ROOT, port_open, wait_until


def env_example_names() -> list[str]:
    text = (REPO_ROOT / ".env.example").read_text()
    return re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.M)


def test_env_example_documents_exactly_the_settings_with_their_defaults() -> None:
    text = (REPO_ROOT / ".env.example").read_text()
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.M))
    assert sorted(values) == sorted(settings.DEFAULTS)
    assert values == settings.DEFAULTS
    for name in values:  # every variable carries a comment line right above it
        assert re.search(rf"^# .+\n{name}=", text, flags=re.M), name


def test_relative_paths_resolve_against_the_project_root(tmp_path: Path) -> None:
    """From any folder inside the checkout (Mage runs blocks in `influx-magic/`) relative paths
    resolve against the checkout; elsewhere against `$INFLUX_MAGIC_ROOT`."""
    code = (
        "from localsystem.settings import path_setting; print(path_setting('LOCALFLUX_DATA_DIR'))"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("LOCALFLUX_DATA_DIR", "INFLUX_MAGIC_ROOT")
    }
    inside = subprocess.run(
        [PYTHON, "-c", code],
        cwd=REPO_ROOT / "influx-magic",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(inside.stdout.strip()) == REPO_ROOT / ".local" / "influx"
    elsewhere = subprocess.run(
        [PYTHON, "-c", code],
        cwd=tmp_path,
        env={**env, "INFLUX_MAGIC_ROOT": str(tmp_path / "project")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(elsewhere.stdout.strip()) == tmp_path / "project" / ".local" / "influx"


def test_dotenv_fills_unset_names_but_never_overrides_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nSIM_MACHINES=7\nexport INFLUX_DATABASE='plant'\nSIM_SEED=1\n")
    monkeypatch.delenv("SIM_MACHINES", raising=False)
    monkeypatch.delenv("INFLUX_DATABASE", raising=False)
    monkeypatch.setenv("SIM_SEED", "99")
    settings.load_dotenv(env_file)
    assert settings.int_setting("SIM_MACHINES") == 7
    assert settings.setting("INFLUX_DATABASE") == "plant"
    assert settings.setting("SIM_SEED") == "99"


def test_settings_fall_back_and_reject_bad_values() -> None:
    assert settings.setting("INFLUX_HOST", {"INFLUX_HOST": ""}) == "http://127.0.0.1:8181"
    assert settings.setting("MAGE_SLACK_WEBHOOK_URL", {"SLACK_WEBHOOK_URL": "http://x/h"}) == (
        "http://x/h"
    )
    with pytest.raises(ValueError, match="SIM_PORT must be an integer"):
        settings.int_setting("SIM_PORT", {"SIM_PORT": "eighty"})
    with pytest.raises(KeyError, match="not a documented setting"):
        settings.setting("NOT_A_SETTING", {})


@pytest.mark.parametrize("package", ["fleetwatch", "localflux", "machine_simulator"])
def test_packages_are_installed_from_this_checkout(package: str) -> None:
    module = importlib.import_module(package)
    assert Path(module.__file__).resolve().parent == REPO_ROOT / package


def test_requirements_pin_the_measured_versions() -> None:
    pins = dict(
        re.findall(
            r"^([a-z0-9][a-z0-9._-]*)==(\S+)", (REPO_ROOT / "requirements.txt").read_text(), re.M
        )
    )
    assert pins["mage-ai"] == "0.9.80"
    assert pins["river"] == "0.23.0"
    assert pins["numpy"].startswith("1.")
    for name in [
        "influxdb3-python",
        "pandas",
        "matplotlib",
        "python-slugify",
        "requests",
        "paho-mqtt",
        "amqtt",
        "datafusion",
        "pyarrow",
    ]:
        assert name in pins, name
    assert pins["paho-mqtt"].startswith("2.")


def test_start_process_waits_for_readiness_and_kills_the_whole_group(
    start_process, port_factory
) -> None:
    port = port_factory()
    # The server runs as a grandchild of a shell: killing only the shell would leak it.
    proc = start_process(
        "http",
        ["bash", "-c", f"{PYTHON} -m http.server {port} --bind 127.0.0.1; wait"],
        url=f"http://127.0.0.1:{port}/",
    )
    assert port_open(port)
    proc.stop(signal.SIGTERM)
    assert wait_until(lambda: not port_open(port), timeout=5)


def test_start_process_reports_the_log_of_a_process_that_never_gets_ready(
    start_process, port_factory
) -> None:
    with pytest.raises(pytest.fail.Exception, match="boom-marker"):
        start_process(
            "dies",
            [PYTHON, "-c", "print('boom-marker'); raise SystemExit(3)"],
            port=port_factory(),
            timeout=3,
        )


def test_slack_receiver_records_and_answers_as_told(slack_receiver) -> None:
    slack_receiver.respond_with(429, "rate limited", {"Retry-After": "2"})
    body = json.dumps({"text": "Anomaly on machine2"}).encode()
    request = urllib.request.Request(
        slack_receiver.url, data=body, headers={"Idempotency-Key": "e1:opened"}
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 429 and error.value.headers["Retry-After"] == "2"
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    assert slack_receiver.payloads() == [{"text": "Anomaly on machine2"}] * 2
    assert slack_receiver.requests[0].headers["Idempotency-Key"] == "e1:opened"


def test_mage_project_opts_out_of_telemetry_and_has_no_example_pipeline() -> None:
    project = REPO_ROOT / "influx-magic"
    meta = yaml.safe_load((project / "metadata.yaml").read_text())
    assert meta["help_improve_mage"] is False
    assert "MAGE_SLACK_WEBHOOK_URL" in meta["notification_config"]["slack_config"]["webhook_url"]
    pipelines = sorted(p.name for p in (project / "pipelines").iterdir() if p.is_dir())
    assert pipelines == ["machine_anomaly_detection"]


def test_readme_shows_the_two_commands_first_and_documents_every_setting() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    first_section = readme.split("\n## ", 2)[1]
    assert first_section.startswith("The two commands")
    assert "make run" in first_section and "make test" in first_section
    for name in settings.DEFAULTS:
        assert f"| `{name}` |" in readme, f"{name} is missing from the README's configuration table"
