"""influx-magic/machines.yaml: what an entry sets for which machines, mute windows, and errors
that name the file and the line."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleetwatch.machine_rules import MachineRule
from influx_magic.operations.machine_names import MachineIdentity
from influx_magic.operations.machines_file import MachinesFile, MachinesFileError
from tests.support import REPO_ROOT

M2 = MachineIdentity("nordhoff-weiss-partner-machine2", "machine2", "Nordhoff, Weiss & Partner")
M3 = MachineIdentity("tanaka-seiki-machine3", "machine3", "Tanaka Seiki")


def parse(text: str) -> MachinesFile:
    return MachinesFile.parse(text, "machines.yaml")


def test_the_shipped_file_and_its_commented_example_are_valid() -> None:
    path = REPO_ROOT / "influx-magic" / "machines.yaml"
    assert MachinesFile.load(path).entries == ()
    lines = path.read_text(encoding="utf-8").splitlines()
    start = lines.index("# machines:")
    example = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        example.append(line[2:])
    parsed = parse("\n".join(example))
    assert [e.machine or e.provider for e in parsed.entries] == ["machine2", "Nordhoff*"]
    assert parsed.rule_for(M2) == MachineRule(threshold=0.85, persistence=5)
    assert len(parsed.windows_for(M2)) == 2  # its own window and its provider's weekly one


def test_machine_entries_beat_provider_globs_and_later_entries_win() -> None:
    parsed = parse(
        """
machines:
  - machine: machine2
    threshold: 0.9
  - provider: "Nordhoff*"
    threshold: 0.82
    persistence: 4
  - machine: nordhoff-weiss-partner-machine2
    persistence: 6
"""
    )
    assert parsed.rule_for(M2) == MachineRule(threshold=0.9, persistence=6)
    assert parsed.rule_for(M3) == MachineRule()
    assert parsed.rules([M2, M3]) == {M2.unique_id: MachineRule(threshold=0.9, persistence=6)}
    assert parsed.overrides(M2) == [
        "threshold 0.82 (line 5)",
        "persistence 4 (line 5)",
        "threshold 0.9 (line 3)",
        "persistence 6 (line 8)",
    ]


def test_names_with_spaces_quotes_and_commas_match_as_written() -> None:
    odd = MachineIdentity("o-brien-co-press-2", "press 2, left", 'O\'Brien "& Co"')
    parsed = parse(
        """
machines:
  - machine: "press 2, left"
    provider: 'O''Brien "& Co"'
    threshold: 0.7
"""
    )
    assert parsed.rule_for(odd).threshold == 0.7
    assert parsed.rule_for(M2).threshold is None


def test_mute_windows_one_off_and_weekly_across_midnight_in_a_timezone() -> None:
    parsed = parse(
        """
machines:
  - machine: machine2
    mute:
      - from: 2025-06-02T06:00:00+02:00
        until: 2025-06-02T10:00:00+02:00
        reason: bearing replacement
      - every: [sun]
        from: "23:00"
        until: "01:30"
        timezone: Europe/Berlin
"""
    )
    one_off, weekly = parsed.windows_for(M2)
    assert one_off.line == 5 and one_off.reason == "bearing replacement"
    assert one_off.occurrence(datetime(2025, 6, 2, 5, 0, tzinfo=UTC)) is not None  # 07:00 CEST
    assert one_off.occurrence(datetime(2025, 6, 2, 8, 0, tzinfo=UTC)) is None  # 10:00 CEST
    # Sunday 2025-06-01 23:00 CEST = 21:00 UTC, until Monday 01:30 CEST = Sunday 23:30 UTC.
    assert weekly.occurrence(datetime(2025, 6, 1, 20, 59, tzinfo=UTC)) is None
    span = weekly.occurrence(datetime(2025, 6, 1, 23, 0, tzinfo=UTC))
    assert span == (
        datetime(2025, 6, 1, 21, 0, tzinfo=UTC),
        datetime(2025, 6, 1, 23, 30, tzinfo=UTC),
    )
    assert weekly.occurrence(datetime(2025, 6, 8, 22, 0, tzinfo=UTC)) is not None  # next Sunday
    assert weekly.occurrence(datetime(2025, 6, 2, 21, 30, tzinfo=UTC)) is None  # a Monday
    assert weekly.reason == "planned"


def test_no_file_or_an_empty_list_means_no_settings(tmp_path: Path) -> None:
    assert MachinesFile.load(tmp_path / "missing.yaml").entries == ()
    assert parse("").entries == ()
    assert parse("machines:\n").entries == ()


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("machines:\n  - machine: m2\n    threshold: high\n", 3, "threshold must be a number"),
        ("machines:\n  - machine: m2\n    threshold: 1.5\n", 3, "threshold must be in [0, 1)"),
        ("machines:\n  - machine: m2\n    persistence: 0\n", 3, "persistence must be a whole"),
        ("machines:\n  - machine: m2\n    treshold: 0.9\n", 3, "unknown key 'treshold'"),
        ("machines:\n  - threshold: 0.9\n", 2, "needs machine"),
        (
            "machines:\n  - machine: m2\n    features: [load]\n",
            3,
            "features cannot be set per machine",
        ),
        ("machines:\n  - machine: m2\n    mute:\n      - from: 2025-06-02\n", 4, "needs until"),
        (
            "machines:\n  - machine: m2\n    mute:\n      - from: 2025-06-02T10:00\n"
            "        until: 2025-06-02T09:00\n",
            5,
            "is not after from",
        ),
        (
            "machines:\n  - machine: m2\n    mute:\n      - every: [mon]\n        from: 6am\n"
            "        until: '08:00'\n",
            5,
            "time of day like 06:00",
        ),
        (
            "machines:\n  - machine: m2\n    mute:\n      - every: [someday]\n"
            "        from: '06:00'\n        until: '08:00'\n",
            4,
            "every takes days",
        ),
        (
            "machines:\n  - machine: m2\n    mute:\n      - from: 2025-06-02\n"
            "        until: 2025-06-03\n        timezone: Mars/Olympus\n",
            6,
            "unknown timezone",
        ),
        ("machines:\n  - machine: m2\n    threshold: [0.9\n", 4, "not valid YAML"),
        ("machines:\n  - machine: m2\n   threshold: 0.9\n", 3, "not valid YAML"),
        ("machines: {machine: m2}\n", 1, "machines must be a list"),
        ("machine:\n  - machine: m2\n", 1, "unknown key 'machine' in the file"),
    ],
)
def test_mistakes_are_errors_naming_the_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(MachinesFileError) as caught:
        parse(text)
    text_of_error = str(caught.value)
    assert text_of_error.startswith(f"machines.yaml, line {line}: "), text_of_error
    assert message in text_of_error


def test_an_unreadable_file_names_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "machines.yaml"
    folder.mkdir()
    with pytest.raises(MachinesFileError, match=re.escape(str(folder))):
        MachinesFile.load(folder)


def test_the_products_feedback_settings_default_to_the_cores_and_bad_ones_are_named() -> None:
    from fleetwatch.feedback import FeedbackSettings
    from influx_magic.operations.policy import feedback_settings

    assert feedback_settings({}) == FeedbackSettings()
    assert feedback_settings({"FALSE_ALARM_DECAY": "36h"}).decay_seconds == 36 * 3600
    with pytest.raises(ValueError, match="FALSE_ALARM_DECAY: invalid duration 'a week'"):
        feedback_settings({"FALSE_ALARM_DECAY": "a week"})
    with pytest.raises(ValueError, match="step <= most"):
        feedback_settings({"FALSE_ALARM_STEP": "0.2"})
