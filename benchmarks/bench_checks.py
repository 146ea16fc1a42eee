"""The shipped checks (`influx-magic/checks.yaml`) judged once, after 1 h and after 24 h of history.

Every kind reads a window (the limit reads on from its last evaluation, the no-data check asks
for each machine's last reading since then, the window test and the SQL check aggregate their
windows), so what a run costs should not depend on how much history the table holds. For 100
machines at 1 Hz:

1. two localflux servers get the same 59 minutes of healthy telemetry and the window test's
   control window a week earlier; the checks are judged once on each (their state is kept);
   both get the last minute; the second also gets the 23 hours before (24 h in all); both
   restart, so their data is compacted to Parquet as on a long-running server;
2. the checks are judged from the kept state at the same moment on each server, alternately,
   RUNS times, each kind on its own too; medians compared. The reference, measured in the same
   run on the same servers: the pipeline loader's read of the last 90 s (what a run reads).

Goal: 24 h / 1 h <= 1.2.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from benchmarks.bench_pipeline import DAY, HOUR, History, Localflux, client_for, send
from influx_magic.checks.checkfile import load_checks
from influx_magic.checks.evaluation import Evaluation
from influx_magic.checks.findings import ChecksState
from influx_magic.checks.runner import run_checks
from influx_magic.influx import load_machine_data
from magic_common.envsettings import project_root

RUNS = 7
MACHINES = 100
WEEK = 7 * DAY


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    checks = load_checks(project_root() / "influx-magic" / "checks.yaml")
    kinds = sorted({check.kind for check in checks})
    history = History(MACHINES)
    now = int(time.time())
    moment = pd.Timestamp(now, unit="s", tz="UTC")
    with tempfile.TemporaryDirectory(prefix="bench-checks-") as tmp:
        servers = {label: Localflux(Path(tmp) / label) for label in ("1h", "24h")}
        for server in servers.values():
            server.start()
        clients = {label: client_for(server) for label, server in servers.items()}
        try:
            control = history.lines(now - WEEK - 20 * 60, now - WEEK + 5 * 60)
            hour = history.lines(now - HOUR, now - 60)
            states = {}
            for label, client in clients.items():
                send(client, control)
                send(client, hour)
                state = ChecksState()
                run_checks(checks, state, Evaluation(client, moment - pd.Timedelta(seconds=60)))
                states[label] = state.to_json()
                send(client, history.lines(now - 60, now))
            started = time.perf_counter()
            rows = send(clients["24h"], history.lines(now - DAY, now - HOUR))
            print(
                f"  wrote {rows:,} rows of older history in {time.perf_counter() - started:.0f} s"
            )
            for label, server in servers.items():
                clients[label].close()
                server.stop()
                server.start()
                clients[label] = client_for(server)

            def judge(label: str, only: str | None = None) -> None:
                chosen = [c for c in checks if only is None or c.kind == only]
                state = ChecksState.from_json(states[label])
                report = run_checks(chosen, state, Evaluation(clients[label], moment))
                assert not report.errors, report.errors

            def read(label: str) -> None:
                load_machine_data(clients[label], since=moment - pd.Timedelta(seconds=90))

            work: dict[str, Callable[[str], None]] = {"all checks": judge, "loader read": read}
            work.update({kind: lambda label, k=kind: judge(label, k) for kind in kinds})
            seconds: dict[tuple[str, str], list[float]] = {}
            for round_ in range(RUNS):
                order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
                for label in order:
                    for name, call in work.items():
                        seconds.setdefault((name, label), []).append(
                            timed(lambda call=call, label=label: call(label))
                        )
        finally:
            for label, server in servers.items():
                with contextlib.suppress(Exception):
                    clients[label].close()
                server.stop()
    median = {key: statistics.median(values) for key, values in seconds.items()}
    print(f"{MACHINES} machines, {len(checks)} checks ({', '.join(kinds)}), medians of {RUNS}:")
    for name in work:
        one, day = median[(name, "1h")], median[(name, "24h")]
        print(
            f"  {name:12} {one * 1000:7.1f} ms after 1 h, {day * 1000:7.1f} ms after 24 h; "
            f"24h/1h = {day / one:.2f}"
        )
    ratio = median[("all checks", "24h")] / median[("all checks", "1h")]
    verdict = "ok" if ratio <= 1.2 else "ABOVE GOAL"
    reference = median[("all checks", "1h")] / median[("loader read", "1h")]
    print(
        f"  all checks 24h/1h = {ratio:.2f} (goal <= 1.2: {verdict}); "
        f"{reference:.1f}x the loader's read of the same run"
    )
