"""The Docker stack, checked without a Docker engine (none runs on the build machines).

What can be checked here is checked against the real thing: the compose file is parsed and
interpolated the way Compose does it, the admin token file it generates is parsed as JSON,
the healthcheck commands of our own images are run against a real simulator, and the
/proc/net/tcp pattern of Telegraf's healthcheck is checked against a real connection.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support import PYTHON, REPO_ROOT, free_port, wait_until

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
SERVICES = {"influxdb3", "mosquitto", "telegraf", "simulator", "mage"}
PUBLISHED_CONTAINER_PORTS = {5005, 6789, 8181}
SECRETS = ("INFLUX_TOKEN", "DEFAULT_OWNER_PASSWORD")
SAMPLE_TOKEN = "apiv3_sample-Token_0123456789abcdefABCDEF"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME, and $$.
_REFERENCE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


class MissingVariable(LookupError):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution, for the forms this project uses."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        value = env.get(name)
        unset = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset else value
        if op in (":?", "?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return value
        return value or ""

    return _REFERENCE.sub(substitute, text)


def variables_in(text: str) -> list[tuple[str, str | None, str | None]]:
    """(name, operator, argument) of every reference in the file, in order."""
    return [
        (m.group("name") or m.group("bare"), m.group("op"), m.group("arg"))
        for m in _REFERENCE.finditer(text)
        if m.group(0) != "$$"
    ]


def env_example() -> dict[str, str]:
    text = (REPO_ROOT / ".env.example").read_text()
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.M))


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Compose sees it after substitution (defaults: a filled-in .env)."""
    values = {**env_example(), "INFLUX_TOKEN": SAMPLE_TOKEN, "DEFAULT_OWNER_PASSWORD": "pw"}
    return yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), values if env is None else env))


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return compose()


@pytest.fixture(scope="module")
def services(stack: dict[str, Any]) -> dict[str, Any]:
    return stack["services"]


# --- the compose file -------------------------------------------------------------------------


def test_compose_file_has_every_service(services: dict[str, Any]) -> None:
    assert set(services) == SERVICES


def test_pulled_images_are_pinned_to_a_release(services: dict[str, Any]) -> None:
    expected = {
        "influxdb3": r"influxdb:3\.\d+\.\d+-core",
        "mosquitto": r"eclipse-mosquitto:2\.\d+\.\d+",
        "telegraf": r"telegraf:1\.\d+\.\d+",
    }
    for name, pattern in expected.items():
        assert "build" not in services[name]
        assert re.fullmatch(pattern, services[name]["image"]), services[name]["image"]


def test_our_services_are_built_from_the_dockerfile_as_one_image(services: dict[str, Any]) -> None:
    built = {name: s for name, s in services.items() if "build" in s}
    assert set(built) == {"simulator", "mage"}
    assert {s["build"] for s in built.values()} == {"."}
    assert len({s["image"] for s in built.values()}) == 1
    assert not services["mage"]["image"].endswith(":latest")


def test_every_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_depends_on_waits_for_healthy_services(services: dict[str, Any]) -> None:
    edges = 0
    for name, service in services.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in services, (name, target)
            assert spec == {"condition": "service_healthy"}, (name, target)
            assert "healthcheck" in services[target], target
            edges += 1
    assert services["telegraf"]["depends_on"].keys() == {"influxdb3", "mosquitto"}
    assert services["simulator"]["depends_on"].keys() == {"mosquitto"}
    assert services["mage"]["depends_on"].keys() == {"influxdb3"}
    assert edges == 4


def test_every_variable_the_compose_file_uses_is_documented() -> None:
    documented = env_example()
    used = {name for name, _, _ in variables_in(COMPOSE_FILE.read_text())}

    assert used - documented.keys() == set()


def test_compose_defaults_agree_with_env_example() -> None:
    documented = env_example()
    for name, op, arg in variables_in(COMPOSE_FILE.read_text()):
        if op == ":-" and arg:
            assert documented.get(name) == arg, f"${{{name}:-{arg}}} vs .env.example"


def test_secrets_have_no_default_and_stop_compose_with_a_clear_message() -> None:
    references = variables_in(COMPOSE_FILE.read_text())
    for secret in SECRETS:
        ops = {op for name, op, _ in references if name == secret}
        assert ops == {":?"}, (secret, ops)
        env = {**env_example(), "INFLUX_TOKEN": SAMPLE_TOKEN, "DEFAULT_OWNER_PASSWORD": "pw"}
        env[secret] = ""
        with pytest.raises(MissingVariable, match=rf"{secret}: set {secret} in \.env"):
            compose(env)


def test_influxdb_starts_with_auth_and_the_admin_token_from_env(stack: dict[str, Any]) -> None:
    influx = stack["services"]["influxdb3"]
    args = dict(arg.split("=", 1) for arg in influx["command"] if arg.startswith("--"))
    [config] = influx["configs"]

    assert influx["command"][:2] == ["influxdb3", "serve"]
    assert "--without-auth" not in influx["command"]
    assert args["--admin-token-file"] == config["target"]
    token_file = json.loads(stack["configs"][config["source"]]["content"])
    assert token_file == {"token": SAMPLE_TOKEN, "name": "_admin"}
    # The healthcheck sends no token, so the endpoint it asks must be exempt from authz.
    test = influx["healthcheck"]["test"]
    assert not any("Authorization" in part or "Token" in part for part in test)
    path = urlsplit(test[-1]).path.strip("/")
    assert path in args["--disable-authz"].split(",")


def test_influxdb_keeps_data_in_a_file_object_store_on_a_named_volume(
    stack: dict[str, Any],
) -> None:
    influx = stack["services"]["influxdb3"]
    args = dict(arg.split("=", 1) for arg in influx["command"] if arg.startswith("--"))
    mounts = dict(volume.split(":")[1::-1] for volume in influx["volumes"])  # target -> source

    assert args["--object-store"] == "file"
    [(target, source)] = [(t, s) for t, s in mounts.items() if args["--data-dir"].startswith(t)]
    assert source in stack["volumes"]


def test_named_volumes_are_declared_and_used(stack: dict[str, Any]) -> None:
    used = {
        volume.split(":")[0]
        for service in stack["services"].values()
        for volume in service.get("volumes", [])
        if not volume.startswith((".", "/"))
    }
    assert used == set(stack["volumes"])
    assert {"influxdb3_data", "fleetwatch_state"} <= used


def test_only_the_pages_people_open_are_published_on_localhost_by_default(
    services: dict[str, Any],
) -> None:
    published = {}
    for name, service in services.items():
        for mapping in service.get("ports", []):
            address, host_port, container_port = mapping.split(":")
            assert address == "127.0.0.1", mapping
            published[int(container_port)] = (name, int(host_port))

    assert set(published) == PUBLISHED_CONTAINER_PORTS
    assert published[5005] == ("simulator", 5005)
    assert published[6789] == ("mage", 6789)


def test_services_reach_each_other_by_service_name(services: dict[str, Any]) -> None:
    for name, service in services.items():
        env = service.get("environment", {})
        if "MQTT_BROKER_URL" in env:
            url = urlsplit(env["MQTT_BROKER_URL"])
            assert (url.hostname, url.port) == ("mosquitto", 1883), name
        if "INFLUX_HOST" in env:
            url = urlsplit(env["INFLUX_HOST"])
            assert (url.hostname, url.port) == ("influxdb3", 8181), name
            assert env["INFLUX_TOKEN"] == SAMPLE_TOKEN, name


def test_bind_mounted_config_files_exist() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    sources = [
        volume.split(":")[0]
        for service in raw["services"].values()
        for volume in service.get("volumes", [])
        if volume.startswith(".")
    ]
    assert sorted(sources) == ["./mosquitto/mosquitto.conf", "./telegraf/telegraf.conf"]
    for source in sources:
        assert (REPO_ROOT / source).is_file(), f"{source} is mounted but missing"


def test_telegraf_gets_every_variable_its_config_reads(services: dict[str, Any]) -> None:
    config = REPO_ROOT / "telegraf" / "telegraf.conf"
    if not config.is_file():
        pytest.fail("telegraf/telegraf.conf is missing")
    wanted = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)(?::-[^}]*)?\}", config.read_text()))

    assert wanted >= {"MQTT_BROKER_URL", "INFLUX_HOST", "INFLUX_TOKEN", "INFLUX_DATABASE"}
    assert wanted <= services["telegraf"]["environment"].keys()


def test_mage_keeps_its_state_plots_and_database_on_volumes(services: dict[str, Any]) -> None:
    mage = services["mage"]
    targets = {volume.split(":")[1] for volume in mage["volumes"]}
    env_dirs = {
        name: value for name, value in dockerfile_env().items() if value.startswith("/data")
    }

    assert set(env_dirs) == {"FLEETWATCH_STATE_DIR", "FLEETWATCH_OUTPUT_DIR", "MAGE_DATA_DIR"}
    assert set(env_dirs.values()) == targets
    assert mage["environment"]["REQUIRE_USER_AUTHENTICATION"] == "1"


def test_make_up_and_down_wrap_compose() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^up:\n\tdocker compose up -d --build$", makefile, flags=re.M)
    assert re.search(r"^down:\n\tdocker compose down$", makefile, flags=re.M)


# --- the Dockerfile ---------------------------------------------------------------------------


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, argument in dockerfile_instructions():
        if instruction == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(argument)))
    return env


def test_dockerfile_base_image_is_pinned() -> None:
    [base] = [arg for ins, arg in dockerfile_instructions() if ins == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base


def test_dockerfile_installs_the_lock_then_the_project_without_resolving() -> None:
    steps = dockerfile_instructions()
    runs = [arg for ins, arg in steps if ins == "RUN"]
    copies = [arg for ins, arg in steps if ins == "COPY"]

    lock_install = next(
        i for i, (ins, arg) in enumerate(steps) if "pip install -r requirements.txt" in arg
    )
    project_install = next(
        i for i, (ins, arg) in enumerate(steps) if "pip install --no-deps" in arg
    )
    assert lock_install < project_install
    assert any(arg.split()[0] == "requirements.txt" for arg in copies)
    assert any("pyproject.toml" in arg.split() for arg in copies)
    assert sum("pip install" in run for run in runs) == 2


def test_dockerfile_runs_as_a_non_root_user() -> None:
    steps = dockerfile_instructions()
    users = [(i, arg) for i, (ins, arg) in enumerate(steps) if ins == "USER"]
    cmd = max(i for i, (ins, _) in enumerate(steps) if ins in ("CMD", "ENTRYPOINT"))

    assert users, "no USER instruction"
    last_index, last_user = users[-1]
    assert last_user.split(":")[0] not in ("root", "0")
    assert last_index < cmd


def test_dockerfile_bakes_in_no_secret() -> None:
    steps = dockerfile_instructions()
    for instruction, argument in steps:
        if instruction in ("COPY", "ADD"):
            sources = [part for part in argument.split()[:-1] if not part.startswith("--")]
            assert "." not in sources and "./" not in sources, argument  # whole context
            assert not any(Path(source).name.startswith(".env") for source in sources), argument
        if instruction in ("ENV", "ARG"):
            assert not re.search(r"TOKEN|PASSWORD|SECRET|WEBHOOK|KEY", argument), argument
    ignored = DOCKERIGNORE.read_text().split()
    assert ".env" in ignored and ".env.*" in ignored and ".local" in ignored


def test_dockerfile_copies_what_exists_and_is_not_ignored() -> None:
    ignored = set(DOCKERIGNORE.read_text().split())
    for instruction, argument in dockerfile_instructions():
        if instruction == "COPY":
            for source in [p for p in argument.split()[:-1] if not p.startswith("--")]:
                assert (REPO_ROOT / source).exists(), source
                assert source.rstrip("/") not in ignored, source


def test_dockerfile_creates_the_volume_dirs_for_the_app_user() -> None:
    creating = [arg for ins, arg in dockerfile_instructions() if ins == "RUN" and "mkdir" in arg]
    for directory in ("/data/state", "/data/plots", "/data/mage"):
        assert any(directory in arg and "chown" in arg for arg in creating), directory


def test_commands_of_the_built_services_exist(services: dict[str, Any]) -> None:
    assert services["mage"]["command"][:3] == ["python", "-m", "influx_magic.mage_server"]
    assert (REPO_ROOT / "influx-magic" / "metadata.yaml").is_file()
    for name in ("simulator", "mage"):
        command = services[name]["command"]
        assert command[:2] == ["python", "-m"], name
        help_text = subprocess.run(
            [PYTHON, *command[1:3], "--help"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for flag in ("--host", "--port"):
            assert flag in help_text, (name, flag)


# --- healthcheck commands, run for real where the tools exist here ---------------------------


def test_simulator_healthcheck_passes_only_while_the_page_answers(
    services: dict[str, Any], start_process, tmp_path: Path
) -> None:
    port = free_port()
    sim = start_process(
        "simulator",
        [
            PYTHON,
            "-m",
            "machine_simulator",
            "--port",
            str(port),
            "--backfill",
            "0",
            "--broker",
            f"tcp://127.0.0.1:{free_port()}",
        ],  # fmt: skip
        url=f"http://127.0.0.1:{port}/api/machines",
    )
    test = services["simulator"]["healthcheck"]["test"]
    command = [
        PYTHON if part == "python" else part.replace(":5005/", f":{port}/") for part in test[1:]
    ]

    assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    sim.stop()
    assert subprocess.run(command, capture_output=True, timeout=30).returncode != 0


def test_telegraf_healthcheck_pattern_matches_an_established_connection(
    services: dict[str, Any],
) -> None:
    [kind, script] = services["telegraf"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    assert ":075B 01 " in script and 1883 == 0x075B
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        probe = script.replace(":075B ", f":{port:04X} ")
        assert subprocess.run(["sh", "-c", probe]).returncode != 0  # listening is not enough
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = server.accept()
            with accepted:
                assert subprocess.run(["sh", "-c", probe]).returncode == 0


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto-clients not installed")
def test_mosquitto_healthcheck_passes_only_while_the_broker_answers(
    services: dict[str, Any], mosquitto_broker
) -> None:
    test = services["mosquitto"]["healthcheck"]["test"]
    command = [str(mosquitto_broker.port) if part == "1883" else part for part in test[1:]]

    assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    mosquitto_broker.stop()
    assert wait_until(
        lambda: subprocess.run(command, capture_output=True, timeout=30).returncode != 0, 10
    )
