"""`python -m influx_magic.mage_server`: start Mage on the project, ready for local runs and Docker.

`mage start` alone is not enough here:

* It writes to `~/.mage_data` and a SQLite database in the current directory unless told
  otherwise; this sets `MAGE_DATA_DIR` (default `.local/mage`) and puts the database there too.
* Its login is on by default, which a local run does not need: `REQUIRE_USER_AUTHENTICATION=0`
  unless the environment says otherwise (the Docker stack keeps it on).
* Links to a run (in our alerts and in Mage's own failure notices) use `MAGE_PUBLIC_HOST`,
  which Mage defaults to `http://localhost:6789` whatever the port: when the setting is empty
  it is set from `--port` (and 127.0.0.1 for a wildcard bind address, which no browser opens).
* Mage's own failure notice goes to `MAGE_SLACK_WEBHOOK_URL`, or to `SLACK_WEBHOOK_URL` when
  that is empty (as `.env.example` documents); Mage cannot express that fallback itself.
* The API trigger's token is a secret, and Mage has no way to read it from the environment in
  `triggers.yaml`; so the trigger is created (or its token updated) through Mage's REST API
  once the server answers, when `MAGE_API_TRIGGER_TOKEN` is set. No tracked file holds it.
  When that fails (say the owner's password was changed in Mage's UI, so the login with
  `DEFAULT_OWNER_PASSWORD` is refused), the reason is logged and Mage keeps serving without
  the API trigger: exiting would only make a container's restart policy loop on it.
* Mage 0.9.80's worker pool can miss a job it was started for, leaving the run `running` for
  good, which stops a `skip_if_previous_running` schedule: `mage start` runs through
  `influx_magic.mage_patches`, which fixes that first (see its docstring). Runs a stopped or
  killed server left `initial` or `running` (Ctrl-C on `make run` in the middle of a run) are
  marked failed before Mage starts again (`influx_magic.interrupted_runs`), so the schedule
  does not cancel its next runs as "still running".
* SIGTERM to `mage start` leaves its scheduler children and Jupyter kernel running; Mage runs
  here in its own process group, and a SIGTERM or SIGINT to this launcher stops the group and
  every descendant (the kernel starts its own session), then exits 0.

Usage: `python -m influx_magic.mage_server [--host 127.0.0.1] [--port MAGE_PORT] [--home DIR]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from influx_magic.interrupted_runs import fail_interrupted_runs
from influx_magic.mage_output import readable
from influx_magic.settings import int_setting, load_dotenv, path_setting, setting
from magic_common.envsettings import project_root

log = logging.getLogger("influx_magic.mage_server")

PROJECT = project_root() / "influx-magic"
PIPELINE = "machine_anomaly_detection"
API_TRIGGER_NAME = "api"
SHARD_TRIGGER_PREFIX = "every_minute_shard_"
OWNER_EMAIL = "admin@admin.com"  # Mage's DEFAULT_OWNER_EMAIL default


class MageServerError(RuntimeError):
    """Mage did not start, or did not accept the API trigger; the message says which."""


def mage_environment(
    env: Mapping[str, str], *, host: str, port: int, home: Path | None = None
) -> dict[str, str]:
    """The environment `mage start` runs with: ours, plus the settings Mage needs here.

    Values already set win, so Docker (login on) and tests (temp dirs) keep theirs.

    >>> env = mage_environment({"MAGE_DATA_DIR": "/data/mage"}, host="0.0.0.0", port=7000)
    >>> env["MAGE_DATABASE_CONNECTION_URL"], env["MAGE_PUBLIC_HOST"]
    ('sqlite:////data/mage/mage-ai.db', 'http://127.0.0.1:7000')
    >>> env["REQUIRE_USER_AUTHENTICATION"]
    '0'
    >>> mage_environment({"MAGE_PUBLIC_HOST": ""}, host="0.0.0.0", port=6789)["MAGE_PUBLIC_HOST"]
    'http://127.0.0.1:6789'
    >>> mage_environment({"MAGE_PUBLIC_HOST": "https://mage.example.com"}, host="0.0.0.0", port=1)[
    ...     "MAGE_PUBLIC_HOST"]
    'https://mage.example.com'
    >>> mage_environment({"SLACK_WEBHOOK_URL": "http://hook"}, host="127.0.0.1", port=1)[
    ...     "MAGE_SLACK_WEBHOOK_URL"]
    'http://hook'
    """
    result = dict(env)
    data_dir = path_setting("MAGE_DATA_DIR", env)
    result["MAGE_DATA_DIR"] = str(data_dir)
    result.setdefault("MAGE_DATABASE_CONNECTION_URL", f"sqlite:///{data_dir / 'mage-ai.db'}")
    result.setdefault("REQUIRE_USER_AUTHENTICATION", "0")
    # metadata.yaml reads MAGE_SLACK_WEBHOOK_URL itself; empty means SLACK_WEBHOOK_URL.
    result["MAGE_SLACK_WEBHOOK_URL"] = setting("MAGE_SLACK_WEBHOOK_URL", env)
    public_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    result["MAGE_PUBLIC_HOST"] = setting("MAGE_PUBLIC_HOST", env) or f"http://{public_host}:{port}"
    if home is not None:
        result["HOME"] = str(home)
    return result


def mage_command(project: Path, host: str, port: int) -> list[str]:
    """`mage start <project>` through `influx_magic.mage_patches`, which fixes Mage 0.9.80's worker
    pool first; always with the path (without it Mage creates a project here)."""
    return [
        sys.executable,
        "-m",
        "influx_magic.mage_patches",
        "start",
        str(project),
        "--host",
        host,
        "--port",
        str(port),
    ]


@dataclass
class MageApi:
    """The few REST calls the launcher needs, logged in when Mage requires it."""

    base_url: str
    auth_required: bool = False
    password: str = ""
    _token: str | None = None

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict:
        """One JSON call, logged in first when Mage requires it."""
        headers = self._login_headers() if self.auth_required else {}
        return self._request(method, path, body, headers)

    def _login_headers(self) -> dict[str, str]:
        """Mage's UI client id plus a session token for the owner (DEFAULT_OWNER_PASSWORD)."""
        from mage_ai.settings.server import OAUTH2_APPLICATION_CLIENT_ID

        headers = {"X-API-KEY": OAUTH2_APPLICATION_CLIENT_ID}
        if self._token is None:
            login = {"session": {"email": OWNER_EMAIL, "password": self.password}}
            answer = self._request("POST", "/api/sessions", login, headers)
            self._token = str(answer["session"]["token"])
        # The session token is the encoded form Mage's UI keeps in its `oauth_token` cookie.
        return {**headers, "Cookie": f"oauth_token={self._token}"}

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None, headers: Mapping[str, str]
    ) -> dict:
        """Mage answers most errors with HTTP 200 and an `error` object: both raise."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            headers={"Content-Type": "application/json", **headers},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raise MageServerError(f"Mage answered {method} {path} with HTTP {error.code}") from None
        except (OSError, ValueError) as error:
            raise MageServerError(f"Mage did not answer {method} {path}: {error}") from None
        if isinstance(answer, dict) and answer.get("error"):
            detail = answer["error"]
            message = detail.get("message") or detail.get("exception") or detail
            raise MageServerError(f"Mage refused {method} {path}: {str(message)[:300]}")
        return answer


def ensure_api_trigger(api: MageApi, token: str, pipeline: str = PIPELINE) -> int:
    """Create the pipeline's API trigger with `token`, or update an existing one; its id.

    The token is never logged. Creating it through the API (not triggers.yaml) keeps it out of
    the repository; Mage keeps it in its database under MAGE_DATA_DIR.
    """
    listing = api.call("GET", f"/api/pipelines/{pipeline}/pipeline_schedules")
    schedules = listing.get("pipeline_schedules", [])
    mine = [s for s in schedules if s.get("name") == API_TRIGGER_NAME]
    wanted = {"name": API_TRIGGER_NAME, "schedule_type": "api", "status": "active", "token": token}
    if not mine:
        created = api.call(
            "POST", f"/api/pipelines/{pipeline}/pipeline_schedules", {"pipeline_schedule": wanted}
        )
        schedule_id = int(created["pipeline_schedule"]["id"])
        log.info("created the API trigger (pipeline schedule %d)", schedule_id)
        return schedule_id
    schedule = mine[0]
    schedule_id = int(schedule["id"])
    if schedule.get("token") != token or schedule.get("status") != "active":
        api.call(
            "PUT",
            f"/api/pipeline_schedules/{schedule_id}",
            {"pipeline_schedule": {"token": token, "status": "active"}},
        )
        log.info("updated the API trigger (pipeline schedule %d)", schedule_id)
    return schedule_id


def _has_shard_triggers(api: MageApi, pipeline: str = PIPELINE) -> bool:
    listing = api.call("GET", f"/api/pipelines/{pipeline}/pipeline_schedules")
    return any(
        str(s.get("name", "")).startswith(SHARD_TRIGGER_PREFIX)
        for s in listing.get("pipeline_schedules", [])
    )


def ensure_shard_triggers(api: MageApi, count: int, pipeline: str = PIPELINE) -> list[int]:
    """One every-minute trigger per shard beyond the first, with the runtime variable `shard`;
    the ids of the active ones.

    The schedule in triggers.yaml runs shard 0 (no `shard` variable); shards 1..N-1 get
    `every_minute_shard_<k>`, so every minute Mage starts one pipeline run per shard, and runs
    of a one-process pipeline run in parallel (each its own worker process; measured: README
    "Scaling out"). Triggers of shards beyond N (after lowering FLEETWATCH_SHARDS) are set
    inactive, not deleted, so their run history stays.
    """
    listing = api.call("GET", f"/api/pipelines/{pipeline}/pipeline_schedules")
    existing = {
        s.get("name"): s
        for s in listing.get("pipeline_schedules", [])
        if str(s.get("name", "")).startswith(SHARD_TRIGGER_PREFIX)
    }
    active = []
    for index in range(1, max(count, 1 + len(existing))):
        name = f"{SHARD_TRIGGER_PREFIX}{index}"
        wanted = index < count
        schedule = existing.get(name)
        if schedule is None and wanted:
            body = {
                "name": name,
                "schedule_type": "time",
                "schedule_interval": "*/1 * * * *",
                "start_time": "2024-01-01 00:00:00",
                "status": "active",
                "variables": {"shard": index},
                "settings": {"skip_if_previous_running": True},
            }
            created = api.call(
                "POST", f"/api/pipelines/{pipeline}/pipeline_schedules", {"pipeline_schedule": body}
            )
            schedule = created["pipeline_schedule"]
            log.info("created trigger %s (pipeline schedule %s)", name, schedule["id"])
        elif schedule is not None:
            status = "active" if wanted else "inactive"
            if schedule.get("status") != status:
                api.call(
                    "PUT",
                    f"/api/pipeline_schedules/{schedule['id']}",
                    {"pipeline_schedule": {"status": status}},
                )
                log.info("set trigger %s %s", name, status)
        if wanted and schedule is not None:
            active.append(int(schedule["id"]))
    return active


def owner_api(env: Mapping[str, str], local: str) -> MageApi:
    """Mage's REST API as the owner (logged in when Mage's login is on)."""
    return MageApi(
        local,
        auth_required=env.get("REQUIRE_USER_AUTHENTICATION", "0").lower() in ("1", "true", "yes"),
        password=env.get("DEFAULT_OWNER_PASSWORD") or "admin",
    )


def set_up_shard_triggers(env: Mapping[str, str], local: str, count: int) -> None:
    """One every-minute trigger per shard (see `ensure_shard_triggers`). Never raises: a
    refusal is logged, and Mage goes on running shard 0 only, which the log says."""
    api = owner_api(env, local)
    try:
        if count > 1 or _has_shard_triggers(api):
            ensure_shard_triggers(api, count)
            log.info("every minute: one run per shard (FLEETWATCH_SHARDS=%d)", count)
    except (MageServerError, LookupError, TypeError, ValueError) as error:
        log.error(
            "shard triggers not set up (%s): only shard 0 runs every minute; fix the cause "
            "and restart",
            error,
        )


def set_up_api_trigger(env: Mapping[str, str], local: str, token: str) -> int | None:
    """Create or update the API trigger; its schedule id, or None when Mage refused.

    Never raises: a refused login or an unexpected answer is logged with its reason and the
    server goes on without the API trigger (the scheduled trigger does not need it).
    """
    api = owner_api(env, local)
    try:
        schedule_id = ensure_api_trigger(api, token)
    except (MageServerError, LookupError, TypeError, ValueError) as error:
        detail = error if isinstance(error, MageServerError) else f"unexpected answer ({error!r})"
        log.error(
            "API trigger not set up, Mage keeps serving without it: %s. With login on, the "
            "launcher logs in as %s with DEFAULT_OWNER_PASSWORD; if the owner's password was "
            "changed in Mage, set DEFAULT_OWNER_PASSWORD to it and restart",
            detail,
            OWNER_EMAIL,
        )
        return None
    log.info(
        "API trigger: POST %s/api/pipeline_schedules/%d/pipeline_runs/$MAGE_API_TRIGGER_TOKEN",
        env["MAGE_PUBLIC_HOST"],
        schedule_id,
    )
    return schedule_id


class MageServer:
    """`mage start` in its own process group, stopped as a whole.

    Its output is passed through as a person reads it (`influx_magic.mage_output`), with
    `secrets` masked: Tornado's access log prints request paths, and the API trigger's path
    carries its token.
    """

    def __init__(
        self, command: list[str], env: Mapping[str, str], secrets: Sequence[str] = ()
    ) -> None:
        self.command = command
        self.env = dict(env)
        self.secrets = sorted({s.encode() for s in secrets if s}, key=len, reverse=True)
        self.process: subprocess.Popen | None = None
        self._pump: threading.Thread | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._pump = threading.Thread(target=self._forward, name="mage-output", daemon=True)
        self._pump.start()

    def _forward(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        out = sys.stdout.buffer
        for raw in self.process.stdout:
            line = readable(raw)
            if line is None:
                continue
            for secret in self.secrets:
                line = line.replace(secret, b"***")
            with contextlib.suppress(OSError, ValueError):
                out.write(line)
                out.flush()

    def wait_ready(self, url: str, timeout: float) -> None:
        """Wait until `url` answers, or fail when Mage exits or `timeout` passes."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MageServerError(f"mage start exited with code {self.process.returncode}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status < 500:
                    return
            time.sleep(0.5)
        raise MageServerError(f"Mage did not answer {url} within {timeout:g} s")

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the group and every descendant (kernels start their own session), then
        SIGKILL whatever is left after `grace` seconds."""
        if self.process is None:
            return
        family = self._descendants()
        self._signal(family, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(pid) for pid in family):
            time.sleep(0.2)
        self._signal(family, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self._pump is not None:
            self._pump.join(timeout=5)

    def _descendants(self) -> list[int]:
        assert self.process is not None
        import psutil  # installed with mage-ai

        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            children = []
        return [self.process.pid, *(child.pid for child in children)]

    def _signal(self, pids: list[int], sig: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap ours so it counts as gone.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m influx_magic.mage_server", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default MAGE_PORT)")
    parser.add_argument("--home", type=Path, default=None, help="HOME for Mage (default: kept)")
    parser.add_argument("--project", type=Path, default=PROJECT, help=argparse.SUPPRESS)
    parser.add_argument(
        "--ready-timeout", type=float, default=180.0, help="seconds to wait for Mage to answer"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    load_dotenv()
    port = args.port if args.port is not None else int_setting("MAGE_PORT")
    if args.home is not None:
        args.home.mkdir(parents=True, exist_ok=True)
    env = mage_environment(os.environ, host=args.host, port=port, home=args.home)
    Path(env["MAGE_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    failed = fail_interrupted_runs(env["MAGE_DATABASE_CONNECTION_URL"])
    if failed:
        log.info(
            "marked %d run(s) the last Mage left unfinished as failed: %s", len(failed), failed
        )

    secrets = [
        setting(name, env)
        for name in ("MAGE_API_TRIGGER_TOKEN", "SLACK_WEBHOOK_URL", "MAGE_SLACK_WEBHOOK_URL")
    ]
    server = MageServer(mage_command(args.project.resolve(), args.host, port), env, secrets)
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    local = f"http://127.0.0.1:{port}"
    try:
        server.start()
        server.wait_ready(f"{local}/api/status", args.ready_timeout)
        log.info("Mage is up at %s (project %s)", env["MAGE_PUBLIC_HOST"], args.project)
        set_up_shard_triggers(env, local, int_setting("FLEETWATCH_SHARDS", env))
        token = setting("MAGE_API_TRIGGER_TOKEN", env)
        if token:
            set_up_api_trigger(env, local, token)
        assert server.process is not None
        code = server.process.wait()
        log.error("mage start exited with code %s", code)
        return code or 1
    except KeyboardInterrupt:
        log.info("stopping Mage (signal %s)", stopping[0] if stopping else "SIGINT")
        return 0
    except MageServerError as error:
        log.error("%s", error)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.stop()
        log.info("Mage stopped")


if __name__ == "__main__":
    sys.exit(main())
