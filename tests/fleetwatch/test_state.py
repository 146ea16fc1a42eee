"""fleetwatch.state: one file for detector + episodes + watermark, safe to load, never reset."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from detection_eval.river_engine import RiverEngine
from fleetwatch import state as state_module
from fleetwatch.detector import DetectorConfig, FleetDetector
from fleetwatch.episodes import EpisodeTracker
from fleetwatch.state import STATE_VERSION, FleetState, StateError, defaults_fingerprint
from influx_magic import state_file
from tests.fleetwatch.test_detector import CONFIG, telemetry
from tests.fleetwatch.test_views import VIEWS_CONFIG


def rewrite(data: bytes, change, fix_checksum: bool = True) -> bytes:
    """The state's zip with entries changed by `change(entries)` (and the header's checksum
    recomputed, so only the content check can catch it)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    header = json.loads(entries.pop("header.json"))
    change(entries, header)
    if fix_checksum:
        header["sha256"] = state_module._digest(entries)
    header["entries"] = sorted(entries)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("header.json", json.dumps(header))
        for name, blob in entries.items():
            archive.writestr(name, blob)
    return out.getvalue()


def events_as_dicts(events):
    return [e.to_dict() for e in events]


@pytest.mark.parametrize("config", [CONFIG, VIEWS_CONFIG], ids=["raw", "views"])
def test_a_stream_split_across_runs_with_save_and_load_equals_one_run(tmp_path, config):
    data = telemetry(3, 500, faults=[(0, 200, 320), (2, 100, 104)])
    whole = FleetState.new(config)
    expected, expected_events = whole.process(data)

    path = tmp_path / "state.zip"
    cuts = [0, 5, 300, 301, 777, 1200, len(data)]
    parts, events = [], []
    for a, b in zip(cuts, cuts[1:], strict=False):
        state = state_file.load_or_new(path, config)
        scored, new_events = state.process(data.iloc[a:b])
        state_file.save(state, path)
        parts.append(scored)
        events += new_events
    pd.testing.assert_frame_equal(pd.concat(parts), expected)
    assert events_as_dicts(events) == events_as_dicts(expected_events)
    # machine0's fault ended at 320 s; it resolves 10 min (recur_gap) later, after the data.
    assert [e.kind for e in events if e.episode.machine == "machine0"] == ["opened"]
    assert whole.episodes.open["machine0"].status == "open"
    final = state_file.load(path)
    assert final.watermark == data["time"].max() == whole.watermark
    assert final.to_bytes() == whole.to_bytes()  # same content, byte for byte


def test_pending_state_passes_between_blocks_as_bytes():
    data = telemetry(2, 200)
    state = FleetState.new(CONFIG)
    state.process(data.iloc[:150])
    state.extra["last_query_end"] = "2024-03-01T00:01:15Z"
    pending = FleetState.from_bytes(state.to_bytes())
    assert pending.extra == state.extra
    a, _ = pending.process(data.iloc[150:])
    b, _ = state.process(data.iloc[150:])
    pd.testing.assert_frame_equal(a, b)


def test_no_file_means_a_new_state_and_an_open_episode_survives_a_restart(tmp_path):
    path = tmp_path / "nested" / "state.zip"
    state = state_file.load_or_new(path, CONFIG)
    assert state.watermark is None and not path.exists()
    data = telemetry(1, 300, faults=[(0, 200, 300)])
    _, events = state.process(data)
    assert [e.kind for e in events] == ["opened"]
    state_file.save(state, path)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    restored = state_file.load(path)
    assert list(restored.episodes.open) == ["machine0"]
    assert restored.episodes.open["machine0"].episode_id == events[0].episode.episode_id


def corrupt_cases(good: bytes) -> dict[str, bytes]:
    # A byte in the middle of the largest entry's data (a byte of a zip header's timestamp
    # would change nothing the state reads).
    with zipfile.ZipFile(io.BytesIO(good)) as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size)
        data_start = largest.header_offset + 30 + len(largest.filename.encode())
    middle = data_start + largest.file_size // 2
    flipped = good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1 :]

    def tamper_array(entries, header):
        name = "arrays/masses_counter.npy"
        array = np.lib.format.read_array(io.BytesIO(entries[name]))
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array + 1)
        entries[name] = buffer.getvalue()

    def pickled(entries, header):
        buffer = io.BytesIO()
        np.lib.format.write_array(
            buffer, np.array([{"code": "x"}], dtype=object), allow_pickle=True
        )
        entries["arrays/last_time.npy"] = buffer.getvalue()

    def wrong_shape(entries, header):
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.zeros(99, np.int64))
        entries["arrays/last_time.npy"] = buffer.getvalue()

    return {
        "flipped byte": flipped,
        "truncated": good[: len(good) // 3],
        "empty": b"",
        "not a zip": b"machine,score\n",
        "content changed, old checksum": rewrite(good, tamper_array, fix_checksum=False),
        "pickled array": rewrite(good, pickled),
        "inconsistent arrays": rewrite(good, wrong_shape),
        "foreign zip": rewrite(good, lambda e, h: h.update(format="something-else")),
    }


@pytest.mark.parametrize(
    "case",
    [
        "flipped byte",
        "truncated",
        "empty",
        "not a zip",
        "content changed, old checksum",
        "pickled array",
        "inconsistent arrays",
        "foreign zip",
    ],
)
def test_a_damaged_file_is_a_clear_error_that_says_how_to_reset(tmp_path, case):
    state = FleetState.new(CONFIG)
    state.process(telemetry(2, 120))
    path = tmp_path / "state.zip"
    path.write_bytes(corrupt_cases(state.to_bytes())[case])
    with pytest.raises(StateError) as error:
        state_file.load_or_new(path, CONFIG)
    message = str(error.value)
    assert str(path) in message and "delete" in message and "FLEETWATCH_STATE_DIR" in message
    assert path.exists()  # never reset silently


def test_another_version_is_refused(tmp_path):
    good = FleetState.new(CONFIG).to_bytes()
    old = rewrite(good, lambda e, h: h.update(version="0.deadbeef"))
    path = tmp_path / "state.zip"
    path.write_bytes(old)
    with pytest.raises(StateError, match="0.deadbeef.*not migrated.*delete"):
        state_file.load(path)
    assert STATE_VERSION.startswith(f"{state_module.FORMAT}.")


def test_the_version_follows_the_defaults():
    defaults = DetectorConfig()
    tracker = EpisodeTracker(defaults.features)
    assert f"{state_module.FORMAT}.{defaults_fingerprint(defaults, tracker)}" == STATE_VERSION
    changed = DetectorConfig(threshold=0.85)
    assert defaults_fingerprint(changed, tracker) != defaults_fingerprint(defaults, tracker)
    tracker.cooldown_seconds += 1
    assert defaults_fingerprint(defaults, tracker) != defaults_fingerprint(
        defaults, EpisodeTracker(defaults.features)
    )


def test_a_state_for_another_configuration_is_refused(tmp_path):
    path = tmp_path / "state.zip"
    state_file.save(FleetState.new(CONFIG), path)
    other = DetectorConfig(**{**CONFIG.to_json(), "threshold": 0.9})
    with pytest.raises(StateError, match="another configuration"):
        state_file.load_or_new(path, other)
    assert state_file.load_or_new(path).detector.config == CONFIG


def test_a_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "state.zip"
    state = FleetState.new(CONFIG)
    state_file.save(state, path)
    before = path.read_bytes()
    state.process(telemetry(1, 60))
    state.extra["bad"] = object()  # not JSON: the save fails before anything is written
    with pytest.raises(TypeError):
        state_file.save(state, path)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_the_river_engine_is_not_saved():
    state = FleetState(FleetDetector(CONFIG, engine=RiverEngine), EpisodeTracker(CONFIG.features))
    with pytest.raises(TypeError, match="numpy engine"):
        state.to_bytes()


def test_a_state_of_the_previous_format_is_refused_with_the_reset_message(tmp_path):
    """A real file written by state format 3 (the release before the news path)."""
    from pathlib import Path

    path = tmp_path / "fleetwatch-state.zip"
    path.write_bytes((Path(__file__).parent / "data" / "state-format3.zip").read_bytes())
    with pytest.raises(StateError) as error:
        state_file.load(path)
    message = str(error.value)
    assert "'3." in message and "not migrated" in message
    assert "delete" in message and "FLEETWATCH_STATE_DIR" in message
    assert path.exists()  # never reset silently
