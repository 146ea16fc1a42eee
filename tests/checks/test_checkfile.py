"""The checks file: every kind parsed, every mistake named by its line, the shipped example valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from influx_magic.checks.checkfile import ChecksFileError, load_checks, parse_checks
from influx_magic.checks.spec import LimitCheck, NoDataCheck, Selection, SqlCheck, WindowTest
from tests.support import REPO_ROOT

ALL_KINDS = """\
version: 1
checks:
  - name: overload
    kind: limit
    description: load held far above its range
    sensor: load
    above: 150
    for: 30s
    machines: ["machine1", "machine[23]"]
  - name: silent
    kind: no_data
    for: 5m
    providers: "Tanaka*"
  - name: hotter-than-last-week
    kind: window_test
    sensor: temperature
    window: 1h
    k: 4
    direction: above
  - name: stuck_temperature
    kind: sql
    window: 2m
    query: |
      SELECT "machineID", provider, max(time) AS time,
             count(DISTINCT temperature) AS value
      FROM machine_data
      WHERE time >= $since AND time < $until AND provider <> $skip
      GROUP BY "machineID", provider
      HAVING count(DISTINCT temperature) <= $most;
    params:
      skip: "O'Brien, Sons'; DROP TABLE machine_data; --"
      most: 1
  - name: off
    kind: limit
    enabled: false
    sensor: power
    below: 10
"""


def test_every_kind_is_read_with_its_settings_and_defaults() -> None:
    limit, silent, window, sql = parse_checks(ALL_KINDS)

    assert limit == LimitCheck(
        name="overload",
        line=3,
        description="load held far above its range",
        sensor="load",
        direction="above",
        value=150.0,
        duration=30.0,
        selection=Selection(machines=("machine1", "machine[23]")),
    )
    assert isinstance(silent, NoDataCheck)
    assert (silent.duration, silent.seen_within) == (300.0, 86400.0)
    assert silent.selection == Selection(providers=("Tanaka*",))
    assert isinstance(window, WindowTest)
    assert (window.window, window.control_offset, window.k, window.direction) == (
        3600.0,
        7 * 86400.0,
        4.0,
        "above",
    )
    assert window.min_points == 10
    assert isinstance(sql, SqlCheck)
    assert sql.window == 120.0
    assert dict(sql.params) == {"skip": "O'Brien, Sons'; DROP TABLE machine_data; --", "most": 1}
    assert not sql.query.endswith(";")  # one statement, the trailing ';' dropped


def test_a_missing_or_empty_file_declares_no_checks(tmp_path: Path) -> None:
    assert load_checks(tmp_path / "absent.yaml") == []
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert load_checks(tmp_path / "empty.yaml") == []
    assert parse_checks("checks: []\n") == []
    assert parse_checks("version: 1\nchecks:\n") == []


BAD = [
    # (file text, line, message fragment)
    ("checks:\n  - name: hot\n    kind: limit\n   sensor: x\n", 4, "expected <block end>"),
    (
        "checks:\n  - name: hot\n    kind: limit\n    sensor: t\n    abve: 95\n",
        5,
        "did you mean 'above'",
    ),
    (
        "checks:\n  - name: hot\n    kind: limit\n    sensor: t\n    above: hot\n",
        5,
        "'above' must be a number, got 'hot'",
    ),
    (
        "checks:\n  - name: hot\n    kind: limit\n    sensor: t\n    above: 1\n    below: 0\n",
        6,
        "exactly one of 'above' or 'below'",
    ),
    (
        "checks:\n  - name: hot\n    kind: limit\n    sensor: t\n    above: 1\n    for: 2\n",
        6,
        "duration with a unit",
    ),
    (
        "checks:\n  - name: hot\n    kind: limit\n    sensor: t\n    above: 1\n    for: 2 fortnights\n",
        6,
        "not a duration",
    ),
    ("checks:\n  - name: hot\n    kind: limit\n    above: 1\n", 2, "needs 'sensor'"),
    (
        "checks:\n  - name: hot\n    kind: limt\n",
        3,
        "'kind' must be one of limit, no_data, window_test, sql",
    ),
    ("checks:\n  - kind: limit\n", 2, "needs 'name'"),
    ("checks:\n  - name: a b\n    kind: no_data\n    for: 1m\n", 2, "check name 'a b' must be"),
    (
        "checks:\n  - name: q\n    kind: no_data\n    for: 1m\n  - name: q\n    kind: no_data\n    for: 2m\n",
        5,
        "check name 'q' is used twice (first on line 2)",
    ),
    (
        "checks:\n  - name: q\n    kind: no_data\n    for: 1m\n    for: 2m\n",
        5,
        "the key 'for' is written twice",
    ),
    ("checks:\n  - name: q\n    kind: no_data\n", 2, "needs 'for'"),
    (
        "checks:\n  - name: w\n    kind: window_test\n    sensor: t\n    window: 2h\n    control_offset: 1h\n",
        6,
        "'control_offset' must be at least 'window'",
    ),
    (
        "checks:\n  - name: w\n    kind: window_test\n    sensor: t\n    window: 1h\n    k: -1\n",
        6,
        "'k' must be > 0",
    ),
    (
        "checks:\n  - name: w\n    kind: window_test\n    sensor: t\n    window: 1h\n    direction: up\n",
        6,
        "must be one of above, below, both",
    ),
    ("checks:\n  - name: s\n    kind: sql\n    query: DELETE FROM machine_data\n", 4, "one SELECT"),
    ("checks:\n  - name: s\n    kind: sql\n    query: SELECT 1; SELECT 2\n", 4, "one statement"),
    (
        "checks:\n  - name: s\n    kind: sql\n    query: SELECT 1 WHERE x = $limit\n",
        4,
        "uses $limit but 'params' does not give it",
    ),
    (
        "checks:\n  - name: s\n    kind: sql\n    query: SELECT 1\n    params:\n      limit: 3\n",
        6,
        "params.limit is not used",
    ),
    (
        "checks:\n  - name: s\n    kind: sql\n    query: SELECT $since\n    params:\n      since: 3\n",
        6,
        "bound by the check itself",
    ),
    (
        "checks:\n  - name: s\n    kind: sql\n    query: SELECT $v\n    params:\n      v: [1, 2]\n",
        6,
        "params.v must be a string, number or true/false",
    ),
    (
        "checks:\n  - name: s\n    kind: no_data\n    for: 1m\n    machines: []\n",
        5,
        "lists no pattern",
    ),
    ("version: 2\nchecks: []\n", 1, "'version' must be 1"),
    ("checks:\n  name: hot\n", 2, "'checks' must be a list"),
    ("chekcs: []\n", 1, "did you mean 'checks'"),
    ("base: &b {for: 1m}\n", 1, "unknown key 'base'"),
    (
        "checks:\n  - &b {name: a, kind: no_data, for: 1m}\n  - *b\n",
        3,
        "aliases (*name) are not supported",
    ),
]


@pytest.mark.parametrize(("text", "line", "fragment"), BAD)
def test_a_mistake_is_named_by_its_file_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ChecksFileError) as raised:
        parse_checks(text, "influx-magic/checks.yaml")
    message = str(raised.value)
    assert message.startswith(f"influx-magic/checks.yaml line {line}"), message
    assert fragment in message, message


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "checks.yaml"
    path.write_bytes(b"checks: \xff\xfe\n")
    with pytest.raises(ChecksFileError, match="checks.yaml: cannot read the checks file"):
        load_checks(path)


def test_the_shipped_example_is_valid_and_declares_every_kind() -> None:
    path = REPO_ROOT / "influx-magic" / "checks.yaml"
    checks = load_checks(path)
    assert {check.kind for check in checks} == {"limit", "no_data", "window_test", "sql"}
