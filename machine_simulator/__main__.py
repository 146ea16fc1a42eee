"""`python -m machine_simulator`: publish a fleet's telemetry over MQTT and serve the fault page.

Defaults come from the documented settings (`SIM_*`, `MQTT_BROKER_URL`; see `.env.example`).
One process, one event loop, no reloader: there is exactly one publisher per fleet. Before a
backfill the simulator asks InfluxDB (`INFLUX_HOST`, `INFLUX_DATABASE`, `INFLUX_TOKEN`) whether
`machine_data` already holds readings and skips the backfill if so (`history_check`; off with
`SIM_BACKFILL_IF_EMPTY=0` or `--no-backfill-if-empty`).

>>> parse_duration("30m"), parse_duration("1h30m"), parse_duration("0"), parse_duration("2.5s")
(1800.0, 5400.0, 0.0, 2.5)
>>> parse_duration("soon")
Traceback (most recent call last):
...
ValueError: invalid duration 'soon': use e.g. 90s, 30m, 2h, 1h30m or 0
>>> parse_switch("SIM_BACKFILL_IF_EMPTY", "off")
False
>>> parse_switch("SIM_BACKFILL_IF_EMPTY", "maybe")
Traceback (most recent call last):
...
ValueError: SIM_BACKFILL_IF_EMPTY must be 1 or 0 (true/false, yes/no, on/off), got 'maybe'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys

from aiohttp import web

from machine_simulator.history_check import HistoryCheckError, machine_data_has_rows
from machine_simulator.publisher import BufferedPublisher, parse_broker_url
from machine_simulator.runner import Simulator
from machine_simulator.settings import SETTINGS
from machine_simulator.signals import Fleet
from machine_simulator.web import create_app

log = logging.getLogger("machine_simulator")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `30m`, `2h`, `1h30m` (a bare number means seconds)."""
    text = text.strip()
    with contextlib.suppress(ValueError):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 30m, 2h, 1h30m or 0")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


_SWITCH = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}


def parse_switch(name: str, text: str) -> bool:
    """An on/off setting, with an error that names the variable."""
    try:
        return _SWITCH[text.strip().lower()]
    except KeyError:
        raise ValueError(
            f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {text!r}"
        ) from None


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _broker(text: str) -> str:
    try:
        parse_broker_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="machine_simulator", description=__doc__.splitlines()[0].split(": ", 1)[1]
    )
    parser.add_argument("--broker", type=_broker, default=SETTINGS.get("MQTT_BROKER_URL"))
    parser.add_argument("--machines", type=int, default=SETTINGS.integer("SIM_MACHINES"))
    parser.add_argument(
        "--interval",
        type=_positive_float,
        default=float(SETTINGS.get("SIM_INTERVAL")),
        help="seconds between readings per machine",
    )
    parser.add_argument("--port", type=int, default=SETTINGS.integer("SIM_PORT"))
    parser.add_argument("--host", default="127.0.0.1", help="address of the web page")
    parser.add_argument(
        "--seed",
        type=int,
        default=SETTINGS.integer("SIM_SEED"),
        help="providers, barcodes and noise (keeps series keys stable)",
    )
    parser.add_argument(
        "--backfill",
        type=_duration,
        default=parse_duration(SETTINGS.get("SIM_BACKFILL")),
        help="healthy history to publish first, e.g. 30m (0 = none)",
    )
    parser.add_argument(
        "--backfill-if-empty",
        action=argparse.BooleanOptionalAction,
        default=parse_switch("SIM_BACKFILL_IF_EMPTY", SETTINGS.get("SIM_BACKFILL_IF_EMPTY")),
        help="publish the backfill only when InfluxDB's machine_data holds no readings yet",
    )
    parser.add_argument(
        "--influx-host",
        default=SETTINGS.get("INFLUX_HOST"),
        help="InfluxDB asked before a backfill (the token comes from INFLUX_TOKEN)",
    )
    parser.add_argument("--influx-database", default=SETTINGS.get("INFLUX_DATABASE"))
    parser.add_argument(
        "--influx-timeout",
        type=_positive_float,
        default=120.0,
        help="seconds to wait for InfluxDB to answer before a backfill",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=0,
        help="stop publishing after this many live readings per machine (0 = never)",
    )
    parser.add_argument(
        "--buffer-limit",
        type=int,
        default=100_000,
        help="messages kept while the broker is unreachable; the oldest are dropped beyond",
    )
    parser.add_argument(
        "--client-id", default="", help="MQTT client id (default: one chosen by the client)"
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def wanted_backfill(args: argparse.Namespace) -> float:
    """`--backfill`, or 0 when InfluxDB's machine_data already holds readings (and the check
    is on). Raises HistoryCheckError when InfluxDB cannot tell."""
    if not args.backfill or not args.backfill_if_empty:
        return args.backfill
    database = args.influx_database
    if machine_data_has_rows(
        args.influx_host,
        database,
        SETTINGS.get("INFLUX_TOKEN"),
        timeout=args.influx_timeout,
    ):
        log.info(
            "machine_data in %r at %s already holds readings: no backfill "
            "(SIM_BACKFILL_IF_EMPTY=0 publishes it anyway)",
            database,
            args.influx_host,
        )
        return 0.0
    log.info("machine_data in %r at %s is empty: backfill first", database, args.influx_host)
    return args.backfill


async def serve(args: argparse.Namespace) -> None:
    backfill = await asyncio.to_thread(wanted_backfill, args)
    fleet = Fleet(args.machines, args.seed)
    publisher = BufferedPublisher(
        args.broker, client_id=args.client_id, buffer_limit=args.buffer_limit
    )
    sim = Simulator(fleet, publisher, interval=args.interval, backfill=backfill, count=args.count)
    runner = web.AppRunner(create_app(sim), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    publisher.start()
    log.info(
        "%d machines every %gs to %s; page on http://%s:%d/",
        args.machines,
        args.interval,
        args.broker,
        args.host,
        args.port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ticker = asyncio.create_task(sim.run())
    # A crashed ticker must end the process (and show why), not leave a page with no data.
    ticker.add_done_callback(lambda task: task.cancelled() or task.exception() and stop.set())
    await stop.wait()
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    stats = await asyncio.to_thread(publisher.stop)
    log.info("stopped: %s", stats.to_json())
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ValueError as error:  # a setting that does not parse
        print(error, file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.machines < 1:
        print("--machines must be at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        asyncio.run(serve(args))
    except HistoryCheckError as error:
        log.error("%s; nothing published (SIM_BACKFILL_IF_EMPTY=0 skips the check)", error)
        return 1
    except Exception:
        log.exception("simulator failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
