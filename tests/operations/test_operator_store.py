"""The operator state file (mutes, acks, false alarms, the action log), machine names, and the
alert gate, on a real state dir; concurrent writers in separate processes lose nothing."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetwatch.detector import DetectorConfig
from fleetwatch.state import FleetState
from influx_magic import state_file
from influx_magic.operations.alert_gate import screen
from influx_magic.operations.cli import main
from influx_magic.operations.machine_names import MachineIdentity, UnknownMachine, resolve
from influx_magic.operations.machines_file import MachinesFile
from influx_magic.operations.operator_store import (
    MUTE_LOOKBEHIND,
    EpisodeRecord,
    OperatorStateError,
    OperatorStore,
    who_is_acting,
)
from influx_magic.operations.policy import OperatorPolicy

NOW = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
ACME = MachineIdentity("acme-machine2", "machine2", "ACME")
ZETA = MachineIdentity("zeta-machine2", "machine2", "Zeta")
ODD = MachineIdentity("o-brien-co-press-2-left", "press 2, left", 'O\'Brien "& Co"')


def test_machine_names_resolve_exactly_and_refuse_ambiguity() -> None:
    fleet = [ACME, ZETA, ODD]
    assert resolve("press 2, left", fleet) == ODD
    assert resolve("PRESS 2, LEFT", fleet) == ODD  # case only as a fallback
    assert resolve("zeta-machine2", fleet) == ZETA
    with pytest.raises(UnknownMachine) as ambiguous:
        resolve("machine2", fleet)
    assert "acme-machine2 (provider ACME)" in str(ambiguous.value)
    assert "zeta-machine2 (provider Zeta)" in str(ambiguous.value)
    with pytest.raises(UnknownMachine, match="known machines: acme-machine2, zeta-machine2"):
        resolve("machine9", [ACME, ZETA])


def test_mutes_cover_their_window_with_a_lookbehind_and_unmute_cuts_them(tmp_path: Path) -> None:
    store = OperatorStore(tmp_path)
    with store.change() as state:
        state.mute(ACME, NOW + timedelta(hours=2), 'oil, "change"', "ana", NOW)
    state = store.read()
    assert state.mutes_at(ACME.unique_id, NOW - MUTE_LOOKBEHIND)
    assert not state.mutes_at(ACME.unique_id, NOW - MUTE_LOOKBEHIND - timedelta(seconds=1))
    assert not state.mutes_at(ZETA.unique_id, NOW)
    later = NOW + timedelta(minutes=30)
    with store.change() as state:
        state.unmute(ACME, "done early", "bo", later)
    state = store.read()
    assert state.mutes_at(ACME.unique_id, later - timedelta(seconds=1))
    assert not state.mutes_at(ACME.unique_id, later)
    assert [(a.action, a.who, a.reason) for a in state.actions] == [
        ("mute", "ana", 'oil, "change"'),
        ("unmute", "bo", "done early"),
    ]
    with pytest.raises(OperatorStateError, match="no mute given with"), store.change() as state:
        state.unmute(ACME, "", "bo", later)


def test_a_failed_change_writes_nothing(tmp_path: Path) -> None:
    store = OperatorStore(tmp_path)
    with pytest.raises(OperatorStateError), store.change() as state:
        state.mute(ACME, NOW + timedelta(hours=1), "", "ana", NOW)
        state.mute(ACME, NOW - timedelta(hours=1), "", "ana", NOW)  # refused: in the past
    assert store.read().actions == []


def _mute_many(folder: str, worker: int, count: int) -> None:
    store = OperatorStore(Path(folder))
    for i in range(count):
        with store.change() as state:
            state.mute(ACME, NOW + timedelta(hours=1), f"{worker}-{i}", f"w{worker}", NOW)


def test_two_processes_changing_the_file_at_once_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_mute_many, args=(str(tmp_path), w, 25)) for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    reasons = {a.reason for a in OperatorStore(tmp_path).read().actions}
    assert len(reasons) == 50


def test_a_corrupt_file_is_an_error_saying_what_it_holds(tmp_path: Path) -> None:
    store = OperatorStore(tmp_path)
    store.folder.mkdir(parents=True)
    store.path.write_text("{not json", encoding="utf-8")
    with pytest.raises(OperatorStateError, match="every mute, acknowledgement and false alarm"):
        store.read()


def test_episodes_are_found_by_id_or_unique_prefix(tmp_path: Path) -> None:
    store = OperatorStore(tmp_path)
    with store.change() as state:
        for episode_id in ("3fa2c01d9e8b7a65", "3fa2c0ffee000000", "77aa00bb11cc22dd"):
            state.episodes[episode_id] = EpisodeRecord(
                episode_id,
                ACME.unique_id,
                "machine2",
                "ACME",
                NOW.isoformat(),
                0.84,
                "load",
                "open",
            )
    state = store.read()
    assert state.find_episode("77aa00").episode_id == "77aa00bb11cc22dd"
    with pytest.raises(OperatorStateError, match="starts 2 episode ids"):
        state.find_episode("3fa2c0")
    with pytest.raises(OperatorStateError, match="no episode '3fa'"):
        state.find_episode("3fa")  # too short to be a prefix


def event(kind: str, episode_id: str, start: datetime, who: MachineIdentity = ACME) -> dict:
    return {
        "unique_id": who.unique_id,
        "machine_id": who.machine_id,
        "provider": who.provider,
        "episode_id": episode_id,
        "kind": kind,
        "start": start.isoformat(),
        "end": None if kind == "opened" else (start + timedelta(minutes=2)).isoformat(),
        "peak_score": 0.84,
        "top_features": [["vibration", 22.0], ["power", 3.0]],
    }


def test_the_gate_mutes_a_muted_machines_episode_for_its_whole_life(tmp_path: Path) -> None:
    store = OperatorStore(tmp_path)
    none = MachinesFile("none")
    with store.change() as state:
        state.mute(ACME, NOW + timedelta(hours=1), "maintenance", "ana", NOW)
    muted = screen([event("opened", "e1", NOW + timedelta(minutes=1))], store, none)
    assert muted.send == [] and list(muted.mute_reasons) == ["e1"]
    assert "maintenance (influx-magic mute by ana)" in muted.mute_reasons["e1"]
    other = screen([event("opened", "z1", NOW + timedelta(minutes=1), ZETA)], store, none)
    assert len(other.send) == 1  # another machine is not muted
    with store.change() as state:
        state.unmute(ACME, "", "ana", NOW + timedelta(minutes=5))
    # The muted episode resolves after the unmute: still muted; the next episode alerts.
    later = screen(
        [
            event("resolved", "e1", NOW + timedelta(minutes=1)),
            event("opened", "e2", NOW + timedelta(minutes=20)),
        ],
        store,
        none,
    )
    assert [e["episode_id"] for e in later.send] == ["e2"]
    assert [e["episode_id"] for e in later.muted] == ["e1"]
    record = store.read().episodes["e1"]
    assert record.status == "resolved" and record.lead == "vibration"


def test_the_gate_holds_follow_ups_of_acknowledged_episodes_only(tmp_path: Path) -> None:
    store = OperatorStore(tmp_path)
    none = MachinesFile("none")
    screen([event("opened", "e1", NOW), event("opened", "z1", NOW, ZETA)], store, none)
    with store.change() as state:
        state.ack(state.find_episode("e1"), "on it", "ana", NOW)
    follow_ups = [event("recurring", "e1", NOW), event("recurring", "z1", NOW, ZETA)]
    result = screen([*follow_ups, event("resolved", "e1", NOW)], store, none)
    assert [(e["episode_id"], e["kind"]) for e in result.acknowledged] == [("e1", "recurring")]
    assert [(e["episode_id"], e["kind"]) for e in result.send] == [
        ("z1", "recurring"),
        ("e1", "resolved"),
    ]


def test_a_machines_file_window_mutes_like_the_tool(tmp_path: Path) -> None:
    windows = MachinesFile.parse(
        "machines:\n  - provider: AC*\n    mute:\n      - from: 2025-06-02T07:00:00Z\n"
        "        until: 2025-06-02T09:00:00Z\n        reason: calibration\n",
        "machines.yaml",
    )
    result = screen([event("opened", "e1", NOW)], OperatorStore(tmp_path), windows)
    assert result.mute_reasons == {"e1": "calibration (machines.yaml line 4)"}


def test_file_and_tool_mutes_add_up_and_unmute_ends_only_the_tools(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "state"
    state = FleetState.new(DetectorConfig())
    state.extra["machines"] = {ACME.unique_id: [ACME.machine_id, ACME.provider]}
    state_dir.mkdir()
    state_file.save(state, state_dir / state_file.FILENAME)
    machines = tmp_path / "machines.yaml"
    machines.write_text(
        "machines:\n  - machine: machine2\n    mute:\n      - from: 2000-01-01T00:00:00Z\n"
        "        until: 2100-01-01T00:00:00Z\n        reason: calibration\n",
        encoding="utf-8",
    )
    env = {
        "FLEETWATCH_STATE_DIR": str(state_dir),
        "MACHINES_FILE": str(machines),
        "INFLUX_HOST": "http://127.0.0.1:9",  # nothing listens: the actions wait for a run
    }

    assert main(["mute", "machine2", "--for", "2h", "--reason", "belt"], env=env) == 0
    now = datetime.now(UTC)
    policy = OperatorPolicy.load(state_dir, env)
    assert [(m.reason, m.source) for m in policy.mutes(ACME, now)] == [
        ("belt", f"influx-magic mute by {who_is_acting()}"),
        ("calibration", "machines.yaml line 4"),
    ]
    capsys.readouterr()

    assert main(["unmute", "machine2"], env=env) == 0
    said = capsys.readouterr().out
    assert "note: still muted until 2100-01-01 00:00 UTC by machines.yaml line 4" in said
    policy = OperatorPolicy.load(state_dir, env)
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert [m.source for m in policy.mutes(ACME, later)] == ["machines.yaml line 4"]
    assert [a.action for a in OperatorStore(state_dir).read().unwritten()] == ["mute", "unmute"]


def test_an_object_store_state_dir_is_refused_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"FLEETWATCH_STATE_DIR": "s3://fleet-bucket/state"}
    for argv in (["status"], ["mute", "machine2", "--for", "1h"], ["ack", "abcdef12"]):
        assert main(argv, env=env) == 1
        said = capsys.readouterr().err
        assert "FLEETWATCH_STATE_DIR is an object-store URL (s3://fleet-bucket/state)" in said
        assert "need a state dir on a filesystem they share with the pipeline" in said
