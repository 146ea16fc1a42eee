"""The Docker stack, checked without a Docker engine (none runs on the build machines).

What can be checked here is checked against the real thing: the compose file is parsed and
interpolated the way Compose does it (tests/compose_file.py), the admin token file it generates
is parsed as JSON, the dependency graph gives the first-start order the README states, the
healthcheck commands of our own images are run against a real simulator, and the /proc/net/tcp
pattern of Telegraf's healthcheck is checked against a real connection. The first-start
sequence with a real broker, Mosquitto's config and the plots server: test_compose_startup.py.
"""

from __future__ import annotations

import graphlib
import json
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from image_build.wheels import dockerfile_stages
from influx_magic.mage_server import mage_environment
from tests.compose_file import (
    COMPOSE_FILE,
    SAMPLE_TOKEN,
    MissingVariable,
    compose,
    env_example,
    filled_env,
    interpolate,
    references,
)
from tests.support import PYTHON, REPO_ROOT, free_port

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
SERVICES = {
    "influxdb3",
    "mosquitto",
    "telegraf-session",
    "telegraf",
    "simulator",
    "mage",
    "plots",
    "grafana",
}
ONE_SHOT = {"telegraf-session"}  # runs to completion before what depends on it
PUBLISHED_CONTAINER_PORTS = {3000, 5005, 6789, 8000, 8181}
SECRETS = ("INFLUX_TOKEN", "DEFAULT_OWNER_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
# Documented as empty in .env.example, where the empty value stands for a derived one.
EMPTY_MEANS = {"MAGE_PUBLIC_HOST": "http://127.0.0.1:6789"}
INFLUXDB_IMAGE_UID = "1500"  # user influxdb3 in the influxdb:3.x-core images


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def published(services: dict[str, Any]) -> dict[int, tuple[str, str, int]]:
    """Container port -> (service, host address, host port)."""
    found = {}
    for name, service in services.items():
        for mapping in service.get("ports", []):
            address, host_port, container_port = mapping.split(":")
            found[int(container_port)] = (name, address, int(host_port))
    return found


def start_order(services: dict[str, Any]) -> list[str]:
    """An order Compose may start the services in: every dependency before its dependents."""
    graph = {name: set(service.get("depends_on", {})) for name, service in services.items()}
    return list(graphlib.TopologicalSorter(graph).static_order())


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
        "grafana": r"grafana/grafana:\d+\.\d+\.\d+",
    }
    for name, pattern in expected.items():
        assert "build" not in services[name]
        assert re.fullmatch(pattern, services[name]["image"]), services[name]["image"]


def test_our_services_are_built_from_the_dockerfile_as_one_image(services: dict[str, Any]) -> None:
    built = {name: s for name, s in services.items() if "build" in s}
    assert set(built) == {"telegraf-session", "simulator", "mage", "plots"}
    assert {s["build"] for s in built.values()} == {"."}
    assert len({s["image"] for s in built.values()}) == 1
    assert not services["mage"]["image"].endswith(":latest")


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
            assert "healthcheck" not in service and "ports" not in service, name
            continue
        assert service["restart"] == "unless-stopped", name
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_the_dependency_graph(services: dict[str, Any]) -> None:
    """Every edge, and the condition each waits for: healthy, or a one-shot's clean exit."""
    graph = {
        name: {target: spec["condition"] for target, spec in service.get("depends_on", {}).items()}
        for name, service in services.items()
    }
    assert graph == {
        "influxdb3": {},
        "mosquitto": {},
        "telegraf-session": {"mosquitto": "service_healthy"},
        "telegraf": {
            "influxdb3": "service_healthy",
            "mosquitto": "service_healthy",
            "telegraf-session": "service_completed_successfully",
        },
        "simulator": {"telegraf": "service_healthy"},
        "mage": {"influxdb3": "service_healthy"},
        "plots": {},
        "grafana": {"influxdb3": "service_healthy"},
    }
    for name, edges in graph.items():
        for target, condition in edges.items():
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (name, target)
            else:
                assert target in ONE_SHOT, (name, target)


def test_the_simulator_publishes_only_after_telegraf_holds_its_session(
    services: dict[str, Any],
) -> None:
    """The first start's backfill goes out within seconds; a broker queues it only for a
    session that exists. telegraf-session creates Telegraf's session from the same telegraf.conf
    before Telegraf starts, and the simulator waits for a healthy (connected) Telegraf."""
    order = start_order(services)
    assert order.index("telegraf-session") < order.index("telegraf") < order.index("simulator")
    assert order.index("influxdb3") < order.index("telegraf")

    session, telegraf = services["telegraf-session"], services["telegraf"]
    [mount] = [v for v in telegraf["volumes"] if v.startswith("./telegraf/")]
    assert mount in session["volumes"]  # the same file: same client id, topics and QoS
    target = mount.split(":")[1]
    assert session["command"][:3] == ["python", "-m", "localsystem.bridge_session"]
    assert session["command"][3:] == ["--config", target]
    assert session["environment"]["MQTT_BROKER_URL"] == telegraf["environment"]["MQTT_BROKER_URL"]


def test_the_simulator_asks_the_stacks_influxdb_before_a_backfill(
    services: dict[str, Any],
) -> None:
    env = services["simulator"]["environment"]
    telegraf = services["telegraf"]["environment"]
    assert str(env["SIM_BACKFILL_IF_EMPTY"]) == "1"  # Compose passes YAML scalars as text
    for name in ("INFLUX_HOST", "INFLUX_TOKEN", "INFLUX_DATABASE"):
        assert env[name] == telegraf[name], name  # where Telegraf writes machine_data


def test_every_variable_the_compose_file_uses_is_documented() -> None:
    documented = env_example()
    used = {ref.name for ref in references(COMPOSE_FILE.read_text())}

    assert used - documented.keys() == set()


def test_compose_defaults_agree_with_env_example() -> None:
    """A default in the compose file is what `.env.example` documents (its references
    substituted with the documented values); a documented empty value that stands for a
    derived one (EMPTY_MEANS) is also what the program derives."""
    documented = env_example()
    for ref in references(COMPOSE_FILE.read_text()):
        if ref.op == ":-" and ref.arg:
            default = interpolate(ref.arg, documented)
            expected = documented.get(ref.name) or EMPTY_MEANS.get(ref.name)
            assert default == expected, f"${{{ref.name}:-{ref.arg}}} vs .env.example"
    derived = mage_environment({}, host="0.0.0.0", port=int(documented["MAGE_PORT"]))
    assert derived["MAGE_PUBLIC_HOST"] == EMPTY_MEANS["MAGE_PUBLIC_HOST"]


def test_secrets_have_no_default_and_stop_compose_with_a_clear_message() -> None:
    found = references(COMPOSE_FILE.read_text())
    for secret in SECRETS:
        ops = {ref.op for ref in found if ref.name == secret}
        assert ops == {":?"}, (secret, ops)
        with pytest.raises(MissingVariable, match=rf"{secret}: set {secret} in \.env"):
            compose(filled_env(**{secret: ""}))


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


def test_the_admin_token_file_is_readable_by_the_influxdb_user_only(stack: dict[str, Any]) -> None:
    """InfluxDB warns about a token file with group or other bits; 0400 for its own user.
    Compose honours uid/gid/mode for an inline (`content`) config, which it copies into the
    container; for a `file:` config, a bind mount, it would ignore them."""
    [config] = stack["services"]["influxdb3"]["configs"]
    assert config["mode"] == 0o400
    assert (config["uid"], config["gid"]) == (INFLUXDB_IMAGE_UID, INFLUXDB_IMAGE_UID)
    definition = stack["configs"][config["source"]]
    assert "content" in definition and "file" not in definition
    raw = COMPOSE_FILE.read_text()
    assert re.search(r"^\s+mode: 0400$", raw, flags=re.M)  # octal for YAML 1.1 and Compose
    assert re.search(rf'^\s+uid: "{INFLUXDB_IMAGE_UID}"$', raw, flags=re.M)  # a string


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
    ports = published(services)
    assert {address for _, address, _ in ports.values()} == {"127.0.0.1"}
    assert set(ports) == PUBLISHED_CONTAINER_PORTS
    assert ports[5005] == ("simulator", "127.0.0.1", 5005)
    assert ports[6789] == ("mage", "127.0.0.1", 6789)
    assert ports[8000] == ("plots", "127.0.0.1", 5006)
    assert ports[8181] == ("influxdb3", "127.0.0.1", 8181)
    assert ports[3000] == ("grafana", "127.0.0.1", 3000)


def test_links_in_alerts_use_the_address_people_open_not_the_bind_address() -> None:
    """DOCKER_PUBLISH_ADDRESS=0.0.0.0 publishes on every interface; no browser opens 0.0.0.0,
    so the links to runs and plots never take it from there."""
    services = compose(filled_env(DOCKER_PUBLISH_ADDRESS="0.0.0.0"))["services"]
    assert {address for _, address, _ in published(services).values()} == {"0.0.0.0"}
    mage = services["mage"]["environment"]
    assert mage["MAGE_PUBLIC_HOST"] == "http://127.0.0.1:6789"
    assert mage["PUBLIC_BASE_URL"] == "http://127.0.0.1:5006"

    # Other host ports: the defaults follow them.
    env = filled_env(MAGE_PORT="7000", PLOTS_PORT="7001", PUBLIC_BASE_URL="")
    services = compose(env)["services"]
    ports = published(services)
    assert ports[6789][2] == 7000 and ports[8000][2] == 7001
    assert services["mage"]["environment"]["MAGE_PUBLIC_HOST"] == "http://127.0.0.1:7000"
    assert services["mage"]["environment"]["PUBLIC_BASE_URL"] == "http://127.0.0.1:7001"

    # The addresses people really use, set in .env, win.
    env = filled_env(
        DOCKER_PUBLISH_ADDRESS="0.0.0.0",
        MAGE_PUBLIC_HOST="https://mage.example.com",
        PUBLIC_BASE_URL="https://plots.example.com",
    )
    mage = compose(env)["services"]["mage"]["environment"]
    assert mage["MAGE_PUBLIC_HOST"] == "https://mage.example.com"
    assert mage["PUBLIC_BASE_URL"] == "https://plots.example.com"


def test_plot_links_point_at_the_plots_service_which_serves_the_plots_volume(
    services: dict[str, Any],
) -> None:
    mage, plots = services["mage"], services["plots"]
    base = urlsplit(mage["environment"]["PUBLIC_BASE_URL"])
    [(name, _, host_port)] = [v for k, v in published(services).items() if k == 8000]
    assert name == "plots" and base.port == host_port
    [plots_volume] = [v for v in mage["volumes"] if v.split(":")[1] == "/data/plots"]
    served = plots["command"][plots["command"].index("--directory") + 1]
    assert plots["volumes"] == [f"{plots_volume.split(':')[0]}:{served}/plots:ro"]


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
    assert sorted(set(sources)) == [
        "./grafana/dashboards",
        "./grafana/provisioning",
        "./mosquitto/mosquitto.conf",
        "./telegraf/telegraf.conf",
    ]
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"{source} is mounted but missing"


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


def test_dockerfile_base_image_is_pinned_and_the_same_in_both_stages() -> None:
    bases = [arg.split()[0] for ins, arg in dockerfile_instructions() if ins == "FROM"]
    assert len(bases) == 2 and len(set(bases)) == 1, bases
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", bases[0]), bases


def test_dockerfile_builds_the_lock_then_installs_the_project_without_resolving() -> None:
    """The build stage installs the lock into a virtualenv; the runtime stage copies it and adds
    the project with --no-deps (image_build/wheels.py checks the compilers)."""
    build, runtime = dockerfile_stages(DOCKERFILE.read_text())
    build_runs, runtime_runs = build.runs(), runtime.runs()

    assert any("pip install -r requirements.txt" in run for run in build_runs)
    assert any("python -m venv /opt/venv" in run for run in build_runs)
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime.instructions
    assert [run for run in runtime_runs if "pip install" in run] == ["pip install --no-deps -e ."]
    copies = [arg for ins, arg in runtime.instructions if ins == "COPY"]
    assert any("pyproject.toml" in arg.split() for arg in copies)
    # Both stages find the virtualenv's python first (compose commands say `python`).
    for stage in (build, runtime):
        env = dict(
            pair.split("=", 1)
            for ins, arg in stage.instructions
            if ins == "ENV"
            for pair in shlex.split(arg)
        )
        assert env["PATH"].startswith("/opt/venv/bin:"), stage.name


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
        if instruction == "COPY" and "--from=" not in argument:  # --from copies between stages
            for source in [p for p in argument.split()[:-1] if not p.startswith("--")]:
                assert (REPO_ROOT / source).exists(), source
                assert source.rstrip("/") not in ignored, source


def test_dockerfile_creates_the_volume_dirs_for_the_app_user() -> None:
    creating = [arg for ins, arg in dockerfile_instructions() if ins == "RUN" and "mkdir" in arg]
    for directory in ("/data/state", "/data/plots", "/data/mage"):
        assert any(directory in arg and "chown" in arg for arg in creating), directory


def test_commands_of_the_built_services_exist_in_the_image(services: dict[str, Any]) -> None:
    """Each built service runs `python -m <module>` of a package the Dockerfile copies (or of
    the standard library), with flags the module accepts."""
    copied = {
        arg.split()[0].rstrip("/")
        for ins, arg in dockerfile_instructions()
        if ins == "COPY" and "--from=" not in arg
    }
    assert (REPO_ROOT / "influx-magic" / "metadata.yaml").is_file()
    for name, service in services.items():
        if "build" not in service:
            continue
        command = service["command"]
        assert command[:2] == ["python", "-m"], name
        package = command[2].split(".")[0]
        assert package in copied or package in sys.stdlib_module_names, (name, command[2])
        help_text = subprocess.run(
            [PYTHON, "-m", command[2], "--help"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for flag in (arg for arg in command[3:] if arg.startswith("--")):
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
