"""`influx-magic replay --since 6h`: what the pipeline would have alerted over stored history
with today's per-machine settings and feedback, written to an experiment's own tables.

A replay is an experiment: it reads `machine_data` of the window, scores it with fresh models
of the production configuration (the production models have learnt this history already;
learning it again would count every point twice), applies `machines.yaml` and the false-alarm
raises in force now, groups the flags into episodes as the pipeline does, and tells which
episodes would have alerted and which a mute would have held back. It writes to tables named
for the experiment, `anomaly_scores_replay_<id>` and `anomaly_episodes_replay_<id>` (the id
is a hash of the configuration, the rules and the window), and never to `anomaly_scores`,
`anomaly_episodes`, the production state, the operator state or the team's channel.

Fresh models need their first window (250 readings per machine, about 4 minutes at 1 Hz)
before they can flag anything, so a replay should start a little before what it is about.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from fleetwatch.detector import DetectorConfig
from fleetwatch.episodes import Episode
from fleetwatch.machine_rules import MachineRule
from fleetwatch.state import FleetState
from influx_magic.alerting import alerts_for
from influx_magic.influx import (
    EPISODES_TABLE,
    SCORE_FIELDS,
    SCORES_TABLE,
    TAGS,
    connect,
    load_machine_data,
    write_episodes,
    write_scores,
)
from influx_magic.operations.alert_gate import MUTED, decide
from influx_magic.operations.machine_names import MachineIdentity
from influx_magic.operations.policy import OperatorPolicy
from influx_magic.operations.production_state import load_production, state_root
from influx_magic.run_context import PipelineSettings
from influx_magic.telemetry import prepare_telemetry, record_identities
from magic_common.durations import format_duration


@dataclass(frozen=True)
class ReplayResult:
    """What a replay found and where it wrote it."""

    experiment: str
    scores_table: str
    episodes_table: str
    since: datetime
    until: datetime
    rows: int
    machines: int
    scores_written: int
    episodes: list[Episode]
    identities: dict[str, list[str]]
    would_alert: list[str]  # episode ids
    muted: dict[str, str]  # episode id -> why


def experiment_name(
    config: DetectorConfig, rules: Mapping[str, MachineRule], since: datetime, until: datetime
) -> str:
    """`replay_<8 hex>`: the same configuration, rules and window give the same tables."""
    described = {
        "config": config.to_json(),
        "rules": {k: asdict(v) for k, v in sorted(rules.items())},
        "since": since.isoformat(),
        "until": until.isoformat(),
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    return f"replay_{digest[:8]}"


def replay(
    settings: PipelineSettings, span: timedelta, now: datetime | None = None
) -> ReplayResult:
    """Replay the `span` before `now` (see the module doc)."""
    until = now or datetime.now(UTC)
    since = until - span
    root = state_root(settings.env)
    production = load_production(root).state
    config = production.detector.config if production is not None else DetectorConfig()
    policy = OperatorPolicy.load(root, settings.env)
    with contextlib.closing(connect(settings.influx)) as client:
        raw = load_machine_data(
            client, since=pd.Timestamp(since), until=pd.Timestamp(until), features=config.features
        )
    frame = prepare_telemetry(raw).frame
    state = FleetState.new(config)
    state.episodes.recur_gap_seconds = settings.recur_gap.total_seconds()
    record_identities(state, frame)
    identities = state.extra.get("machines", {})
    machines = [MachineIdentity(uid, *names) for uid, names in identities.items()]
    rules = policy.rules(machines, until, config.threshold)
    name = experiment_name(config, rules, since, until)
    scores_table, episodes_table = f"{SCORES_TABLE}_{name}", f"{EPISODES_TABLE}_{name}"
    assert scores_table != SCORES_TABLE and episodes_table != EPISODES_TABLE

    scored = state.detector.score_frame(frame, rules=rules)
    update = state.episodes.follow(scored, now=pd.Timestamp(until))
    alerts = alerts_for(update.events, state)
    # On a copy of the operator state: a replay records nothing for `ack` / `false-alarm`.
    screened = decide(alerts, copy.deepcopy(policy.state), policy.machines_file)
    muted = dict(screened.mute_reasons)
    announced = {a.episode_id for a in screened.send if a.kind == "opened"}
    written = 0
    rows = scored[scored["status"] == "scored"].assign(episode_id=update.episode_ids)
    if len(rows) or update.episodes:
        with contextlib.closing(connect(settings.influx)) as client:
            if len(rows):
                columns = ["time", *TAGS, *SCORE_FIELDS]
                columns += [c for c in rows.columns if c.startswith("dev_")]
                written = write_scores(
                    client, rows.assign(config_id=name)[columns], table=scores_table
                )
            write_episodes(
                client,
                update.episodes,
                identities,
                table=episodes_table,
                statuses=dict.fromkeys(muted, MUTED),
            )
    return ReplayResult(
        experiment=name,
        scores_table=scores_table,
        episodes_table=episodes_table,
        since=since,
        until=until,
        rows=len(frame),
        machines=len(identities),
        scores_written=written,
        episodes=list(update.episodes),
        identities={k: list(v) for k, v in identities.items()},
        would_alert=sorted(announced),
        muted=muted,
    )


def format_result(result: ReplayResult) -> str:
    """The replay's findings for people, with the SQL to look at them."""
    span = format_duration((result.until - result.since).total_seconds())
    lines = [
        f"replay of {span} ({result.since:%Y-%m-%d %H:%M} to {result.until:%H:%M} UTC) with "
        "the pipeline's configuration, machines.yaml and the feedback in force now",
        f"{result.rows} row(s) of {result.machines} machine(s), scored by fresh models (each "
        "machine's first 250 readings only warm them up)",
        f"episodes: {len(result.episodes)} ({len(result.would_alert)} would alert, "
        f"{len(result.muted)} muted)",
    ]
    for episode in sorted(result.episodes, key=lambda e: e.start):
        machine = (result.identities.get(episode.machine) or [episode.machine])[0]
        start = pd.Timestamp(episode.start, tz="UTC")
        if episode.episode_id in result.muted:
            verdict = f"muted: {result.muted[episode.episode_id]}"
        elif episode.episode_id in result.would_alert:
            verdict = "would alert"
        else:
            verdict = "held back"
        lines.append(
            f"  {episode.episode_id}  {machine}  {start:%Y-%m-%d %H:%M:%S}  "
            f"peak {episode.peak_score:.2f}  {','.join(episode.top_features) or '-'}  {verdict}"
        )
    lines += [
        f"written to {result.scores_table} ({result.scores_written} row(s)) and "
        f"{result.episodes_table}; anomaly_scores and anomaly_episodes are untouched",
        f'compare: SELECT * FROM "{result.episodes_table}" ORDER BY time',
    ]
    return "\n".join(lines)


def command_replay(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    result = replay(PipelineSettings.from_env(env), timedelta(seconds=args.since))
    print(format_result(result))
    return 0
