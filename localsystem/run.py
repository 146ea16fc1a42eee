"""`python -m localsystem` (what `make run` runs): start and supervise the whole local system.

localflux serve, the MQTT broker, the bridge, the inbox (when `SLACK_WEBHOOK_URL` is unset), the
simulator and Mage run under honcho (used as a library), each in its own process group, with
their output interleaved and prefixed. Every port and data dir comes from the documented
settings (see `localsystem.plan`). The launcher adds what honcho lacks:

- it checks every port before starting anything and names the service and the variable to
  change when one is taken;
- it prints the URLs once every service answers its readiness probe, or names the ones that
  did not within `--ready-timeout` and stops everything (exit 1);
- Ctrl-C (SIGINT) or SIGTERM stops every process it started and exits 0; a component that
  exits on its own stops the others and the launcher exits 1;
- components' orphans (a child in a session of its own) are adopted and stopped too, so
  nothing keeps running or listening afterwards (see `localsystem.orphans`);
- while it runs, what it wired (its localflux, its inbox as the alert channel) is recorded in
  `MAKE_RUN_WIRING_FILE` (`.local/make-run.env`) for a `mage run` typed in another shell
  (`influx_magic.local_wiring`).

honcho is told nothing about `.env`: each component reads it through `magic_common.envsettings`,
where variables already in the environment win (honcho's own `.env` loading would override
them).
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import sys
import threading
import time

from honcho.manager import KILL_WAIT, Manager
from honcho.printer import Message, Printer

from influx_magic import local_wiring
from localsystem.orphans import become_subreaper, reap, stop_orphans
from localsystem.plan import Plan, PlanError, Service, build_plan, has_data
from localsystem.readiness import port_problem
from localsystem.settings import load_dotenv, path_setting
from magic_common.envsettings import project_root

LAUNCHER = "run"
# The order of the URL list: what a new user opens first, then the plumbing.
SHOWN_FIRST = ("simulator", "mage", "inbox", "fleet", "localflux", "broker", "bridge")
# Stop order: what produces readings, then what carries them, then what stores them, so a
# Ctrl-C loses no reading in flight (honcho alone signals everything at once). Each stage gets
# up to STAGE_GRACE seconds; honcho SIGKILLs whatever is left KILL_WAIT s after the first exit.
STOP_ORDER = (("simulator", "mage", "inbox", "fleet"), ("bridge",), ("broker", "localflux"))
STAGE_GRACE = 2.0
# How long after a stop began before orphans holding honcho's pipes are stopped.
UNHANG_AFTER = KILL_WAIT + 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=180.0,
        help="seconds every service gets to answer its readiness check (default 180)",
    )


class LaunchPrinter(Printer):
    """honcho's printer; the launcher's own messages go out as they are, without a prefix."""

    def write(self, message: Message) -> None:
        if message.name == LAUNCHER:
            print(message.data, file=self.output, flush=True)
        else:
            super().write(message)


def describe_exit(code: int) -> str:
    """
    >>> describe_exit(1), describe_exit(-9)
    ('rc=1', 'killed by SIGKILL')
    """
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"rc={code}"


def url_list(services: list[Service]) -> str:
    """The lines printed once everything is ready.

    >>> print(url_list([Service("broker", "", "MQTT broker", url="mqtt://127.0.0.1:1883")]))
      broker  mqtt://127.0.0.1:1883  MQTT broker
    """
    ordered = sorted(services, key=lambda s: SHOWN_FIRST.index(s.name))
    name_width = max(len(s.name) for s in ordered)
    url_width = max(len(s.url or "") for s in ordered)
    return "\n".join(
        f"  {s.name:<{name_width}}  {s.url or '':<{url_width}}  {s.purpose}" for s in ordered
    )


class Launcher(Manager):
    """honcho's Manager plus readiness checks, the reason for stopping, and orphan cleanup.

    Built on honcho 2.0.0's internals (`_start`, `_processes`, `_terminating`, `_procmgr`),
    pinned in requirements.txt.
    """

    def __init__(self, plan: Plan, ready_timeout: float) -> None:
        super().__init__(printer=LaunchPrinter(sys.stdout))
        self.plan = plan
        self.ready_timeout = ready_timeout
        self.failure: str | None = None  # why everything stopped, when nobody asked
        self.done = threading.Event()
        self._stopping = threading.Event()
        self._stop_lock = threading.RLock()  # re-entrant: a signal may arrive inside it
        self.workers: set[int] = set()  # honcho's worker processes, one per component
        env = {**os.environ, **plan.env}
        for service in plan.services:
            self.add_process(service.name, service.command, env=env, cwd=str(project_root()))

    def say(self, text: str, name: str = LAUNCHER) -> None:
        """Print through honcho's event queue, so lines never interleave with its output."""
        self.events.put(Message("line", text, datetime.datetime.now(), name, None))

    def _start(self) -> None:
        # loop() calls this after installing its signal handlers. The readiness thread starts
        # only after honcho has forked its workers: forking with a thread mid-request could
        # hand a worker a held lock.
        super()._start()
        self.workers = {p["process"].pid for p in self._processes.values()}
        threading.Thread(target=self._watch_readiness, name="readiness", daemon=True).start()
        threading.Thread(target=self._reap, name="reaper", daemon=True).start()

    def terminate(self) -> None:
        with self._stop_lock:
            if not self._stopping.is_set():
                self._stopping.set()
                exited = [
                    f"{name} exited ({describe_exit(p['returncode'])})"
                    for name, p in self._processes.items()
                    if "returncode" in p
                ]
                if exited and self.failure is None:
                    self.failure = ", ".join(exited)
                self._terminating = True  # honcho's own terminate() is now a no-op
                threading.Thread(target=self._stop_in_order, name="stop", daemon=True).start()
                threading.Thread(target=self._unhang, name="unhang", daemon=True).start()

    def _stop_in_order(self) -> None:
        signalled: set[str] = set()
        for stage in (*STOP_ORDER, tuple(self._processes)):  # the last stage: anything else
            names = [n for n in stage if n in self._processes and n not in signalled]
            for name in names:
                process = self._processes[name]
                if "returncode" not in process and process.get("pid"):
                    self.say(f"sending SIGTERM to {name} (pid {process['pid']})", "system")
                    self._procmgr.terminate(process["pid"])
            signalled.update(names)
            deadline = time.monotonic() + STAGE_GRACE
            while time.monotonic() < deadline and any(
                "returncode" not in self._processes[n] for n in names
            ):
                time.sleep(0.05)

    def _watch_readiness(self) -> None:
        started = time.monotonic()
        pending = [s for s in self.plan.services if s.probe is not None]
        while pending and not self._stopping.is_set():
            pending = [s for s in pending if not s.probe.ready()]
            if pending and time.monotonic() - started > self.ready_timeout:
                names = ", ".join(f"{s.name} ({s.probe.target})" for s in pending)
                self.failure = f"not ready within {self.ready_timeout:g}s: {names}"
                self.say(f"make run: {self.failure}; stopping everything")
                self.terminate()
                return
            if pending:
                self._stopping.wait(0.5)
        if not self._stopping.is_set():
            self.say(
                f"\ninflux-magic is running (ready in {time.monotonic() - started:.0f}s; "
                f"Ctrl-C stops everything):\n{url_list(self.plan.services)}\n"
            )

    def _unhang(self) -> None:
        """A component's orphan holding honcho's pipe would keep loop() waiting forever."""
        if self.done.wait(UNHANG_AFTER):
            return
        stopped = stop_orphans(self.workers)
        if stopped:
            self.say(f"make run: stopped {len(stopped)} process(es) a component left behind")

    def _reap(self) -> None:
        while not self.done.wait(0.5):
            reap(self.workers)


def check_ports(plan: Plan) -> list[str]:
    """One message per port that cannot be bound, naming the service and its variable."""
    problems = []
    for service in plan.services:
        if service.port is None:
            continue
        problem = port_problem(service.port)
        if problem is None:
            continue
        state = "is in use" if "in use" in problem else f"cannot be used ({problem})"
        problems.append(
            f"port {service.port} ({service.name}) {state}: "
            f"set {service.port_variable} in .env or the environment"
        )
    return problems


def run(args: argparse.Namespace) -> int:
    load_dotenv()
    fresh = not has_data(path_setting("LOCALFLUX_DATA_DIR"))
    try:
        plan = build_plan(os.environ, sys.executable, fresh_database=fresh)
    except PlanError as error:
        print(f"make run: {error}", file=sys.stderr)
        return 1
    problems = check_ports(plan)
    if problems:
        for problem in problems:
            print(f"make run: {problem}", file=sys.stderr)
        print("make run: nothing was started", file=sys.stderr)
        return 1
    for note in plan.notes:
        print(f"make run: {note}", flush=True)
    become_subreaper()
    launcher = Launcher(plan, args.ready_timeout)
    # A `mage run` typed in another shell meanwhile finds what this run wired.
    local_wiring.record(
        {key: value for key, value in plan.env.items() if key != "PYTHONUNBUFFERED"}, os.getpid()
    )
    try:
        launcher.loop()
    finally:
        local_wiring.remove()
        launcher.done.set()
        left = stop_orphans(launcher.workers)
        reap(launcher.workers)
    if left:
        print(f"make run: stopped {len(left)} process(es) a component left behind", flush=True)
    if launcher.failure is not None:
        print(f"make run: stopped everything because {launcher.failure}", flush=True)
        return 1
    print("make run: stopped everything", flush=True)
    return 0
