"""`python -m localflux <command>`: one subcommand per local stand-in service.

Each command lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`;
modules are imported only when their command runs, so `serve` never pays for the MQTT stack.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (
        "localflux.influxdb.server",
        "InfluxDB 3 Core-compatible server (HTTP + Arrow Flight)",
    ),
    "bridge": ("localflux.telegraf.bridge", "MQTT -> InfluxDB bridge driven by telegraf.conf"),
    "broker": (
        "localflux.broker.launcher",
        "MQTT broker: Mosquitto when installed, else embedded amqtt",
    ),
    "inbox": ("localflux.inbox.server", "Slack-compatible webhook receiver with a web page"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localflux", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG logs one line per request")
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if a in COMMANDS), None)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if name == chosen:
            modules[name] = importlib.import_module(module_name)
            modules[name].add_arguments(command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    return modules[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
