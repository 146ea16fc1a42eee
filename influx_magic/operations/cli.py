"""`influx-magic`: the operator's command-line tool (installed by `make setup` as
`.venv/bin/influx-magic`), on the same settings, state and InfluxDB as the pipeline (the
environment, then what a running `make run` wired, then `.env`).

    influx-magic status [--json]
    influx-magic mute MACHINE --for 2h [--reason TEXT]
    influx-magic unmute MACHINE [--reason TEXT]
    influx-magic ack EPISODE [--reason TEXT]
    influx-magic false-alarm EPISODE [--note TEXT]
    influx-magic replay --since 6h [--until TIME]

MACHINE is a machineID or a unique_id; EPISODE an episode id (from the alert, `status` or
`anomaly_episodes`) or a unique prefix of at least 6 characters. Every action is recorded with
when, who (`$USER`) and why in the operator state and written to InfluxDB's `anomaly_feedback`
(by the next pipeline run when InfluxDB does not answer now); it takes effect from the next
pipeline run either way. Exit status: 0 done, 1 refused or failed (the message says why),
2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from fleetwatch.state import FleetState, StateError
from influx_magic.influx import InfluxError, InfluxSettings
from influx_magic.operations import fleet_status
from influx_magic.operations.feedback_table import FEEDBACK_TABLE, flush
from influx_magic.operations.machine_names import (
    MachineIdentity,
    UnknownMachine,
    identities_from_state,
    resolve,
)
from influx_magic.operations.machines_file import MachinesFileError
from influx_magic.operations.operator_store import (
    Action,
    OperatorStateError,
    OperatorStore,
    who_is_acting,
)
from influx_magic.operations.policy import OperatorPolicy
from influx_magic.operations.production_state import (
    NoSharedStateDir,
    load_production,
    state_root,
)
from influx_magic.settings import load_environment
from influx_magic.shards import ShardLayoutError
from magic_common.durations import format_duration, parse_duration

FEEDBACK_TIMEOUT = 5.0  # seconds the tool waits for InfluxDB before leaving it to the next run


class CommandError(RuntimeError):
    """Refused or failed; the message says why and what to do."""


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than 0, got {text!r}")
    return seconds


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="influx-magic",
        description="Operate the anomaly pipeline: fleet status, mutes, acknowledgements, "
        "false alarms, replays.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = sub.add_parser("status", help="per machine: scored, warm, lagging, muted, overrides")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    mute = sub.add_parser("mute", help="stop alerts for a machine for a while (still scored)")
    mute.add_argument("machine", help="machineID or unique_id")
    mute.add_argument("--for", dest="duration", type=_duration, required=True, help="e.g. 2h")
    mute.add_argument("--reason", default="", help="why (recorded and shown in status)")
    unmute = sub.add_parser("unmute", help="end a machine's mutes given with `mute`")
    unmute.add_argument("machine", help="machineID or unique_id")
    unmute.add_argument("--reason", default="", help="why (recorded)")
    ack = sub.add_parser("ack", help="acknowledge an episode: no follow-up messages for it")
    ack.add_argument("episode", help="episode id (or a unique prefix of 6+ characters)")
    ack.add_argument("--reason", default="", help="why (recorded)")
    false = sub.add_parser(
        "false-alarm", help="mark an episode a false alarm: its pattern stops alerting"
    )
    false.add_argument("episode", help="episode id (or a unique prefix of 6+ characters)")
    false.add_argument("--note", default="", help="what it was (recorded)")
    replay = sub.add_parser(
        "replay", help="re-score stored history into an experiment's tables (never production's)"
    )
    replay.add_argument("--since", type=_duration, required=True, help="how far back, e.g. 6h")
    return top


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    if env is None:
        load_environment()
        env = os.environ
    try:
        if args.command == "status":
            return command_status(args, env)
        if args.command == "replay":
            from influx_magic.operations.replay import command_replay

            return command_replay(args, env)
        return command_action(args, env)
    except (
        CommandError,
        UnknownMachine,
        OperatorStateError,
        MachinesFileError,
        NoSharedStateDir,
        ShardLayoutError,
        StateError,
        ValueError,
    ) as error:
        print(f"influx-magic {args.command}: {error}", file=sys.stderr)
        return 1


def command_status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    status = fleet_status.collect(state_root(env), InfluxSettings.from_env(env), env)
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        print(fleet_status.format_table(status))
    return 0


def _production(env: Mapping[str, str]) -> FleetState:
    """The fleet's committed state (every shard's), or why there is none."""
    production = load_production(state_root(env))
    if production.state is None:
        raise CommandError(
            f"no machine is known yet: no pipeline run has committed ({production.describe()})"
        )
    return production.state


def _machines(env: Mapping[str, str]) -> list[MachineIdentity]:
    return identities_from_state(_production(env).extra.get("machines", {}))


def command_action(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    state_dir = state_root(env)
    store = OperatorStore(state_dir)
    now = datetime.now(UTC)
    by = who_is_acting()
    lines: list[str]
    if args.command == "mute":
        who = resolve(args.machine, _machines(env))
        until = now + timedelta(seconds=args.duration)
        with store.change() as state:
            action = state.mute(who, until, args.reason, by, now)
        lines = [
            f"muted {who.label} until {until:%Y-%m-%d %H:%M} UTC "
            f"({format_duration(args.duration)}){': ' + args.reason if args.reason else ''}",
            "it is still scored; episodes that start before then are stored as muted and not "
            f"alerted; `influx-magic unmute {_quoted(args.machine)}` ends it early",
        ]
    elif args.command == "unmute":
        who = resolve(args.machine, _machines(env))
        with store.change() as state:
            action = state.unmute(who, args.reason, by, now)
        policy = OperatorPolicy.load(state_dir, env)
        left = [m for m in policy.mutes(who, now) if not m.source.startswith("influx-magic")]
        lines = [f"unmuted {who.label}: its next episode alerts"]
        lines += [
            f"note: still muted until {m.until:%Y-%m-%d %H:%M} UTC by {m.source} ({m.reason}); "
            "edit the file to change that"
            for m in left
        ]
    elif args.command == "ack":
        with store.change() as state:
            episode = state.find_episode(args.episode)
            action = state.ack(episode, args.reason, by, now)
        lines = [
            f"acknowledged episode {episode.episode_id} on {episode.machine_id} "
            f'({episode.unique_id}): no follow-up messages for it; its "Resolved" still comes'
        ]
    else:  # false-alarm
        threshold = _production(env).detector.config.threshold
        policy = OperatorPolicy.load(state_dir, env)
        episode = policy.state.find_episode(args.episode)
        who = MachineIdentity(episode.unique_id, episode.machine_id, episode.provider)
        amount, limit = policy.false_alarm_raise(
            who, episode.lead, episode.peak_score, now, threshold
        )
        with store.change() as state:
            episode = state.find_episode(args.episode)
            action = state.false_alarm(episode, amount, args.note, by, now)
        led = f"{episode.lead}-led points" if episode.lead else "all points"
        decay = format_duration(policy.feedback.decay_seconds)
        if amount > 0:
            effect = (
                f"threshold for {led} of {episode.machine_id} raised {limit:.3f} -> "
                f"{limit + amount:.3f} (peak was {episode.peak_score:.3f}), fading back over "
                f"{decay}"
            )
        else:
            effect = (
                f"no raise: the threshold for {led} ({limit:.3f}) is already above the "
                f"episode's peak ({episode.peak_score:.3f})"
            )
        lines = [
            f"false alarm recorded for episode {episode.episode_id} on {episode.machine_id} "
            f"({episode.unique_id})",
            effect,
            "no follow-up messages for this episode",
        ]
    for line in lines:
        print(line)
    print(_recorded(action, store, InfluxSettings.from_env(env)))
    return 0


def _recorded(action: Action, store: OperatorStore, influx: InfluxSettings) -> str:
    """Write the action (and any left from earlier) to anomaly_feedback now, if InfluxDB
    answers; say where it is."""
    start = f"recorded {action.action} by {action.who} at {action.at[:19]}Z in {store.path}"
    try:
        flush(store, influx, timeout=FEEDBACK_TIMEOUT)
    except InfluxError as error:
        return (
            f"{start}; InfluxDB did not take it ({error}): it is in effect, and the next "
            f"pipeline run writes it to {FEEDBACK_TABLE}"
        )
    return f"{start} and in {FEEDBACK_TABLE}"


def _quoted(name: str) -> str:
    """A machine name as a shell word (names may hold spaces, quotes, commas)."""
    return shlex.quote(name)


if __name__ == "__main__":
    sys.exit(main())
