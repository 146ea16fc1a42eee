"""A Grafana dashboard's SQL as it reaches InfluxDB: variables, then macros, expanded like Grafana.

Grafana's frontend replaces template variables (`${machine:sqlstring}` quotes each value and
doubles quotes inside it); its backend then expands the macros of the InfluxDB data source's SQL
mode (`pkg/tsdb/influxdb/fsql/macro.go`, over the plugin SDK's `sqlutil`): `$__timeFilter(col)`,
`$__timeRange(col)`, `$__timeRangeFrom(col)`, `$__timeRangeTo(col)`, `$__timeFrom`, `$__timeTo`,
`$__interval`, `$__dateBin(col)`, `$__dateBinAlias(col)`. Anything else is an error here, so a
dashboard cannot use a form these tests do not know.

>>> from datetime import datetime, timedelta, timezone
>>> start = datetime(2023, 1, 1, tzinfo=timezone.utc)
>>> expand_macros("select $__dateBin(time) where $__timeFilter(time)", start,
...               start + timedelta(minutes=10), timedelta(seconds=10))
"select date_bin(interval '10 second', time, timestamp '1970-01-01T00:00:00Z') where time >= '2023-01-01T00:00:00Z' AND time <= '2023-01-01T00:10:00Z'"
>>> expand_variables("x IN (${m:sqlstring})", {"m": ["a", "o'b"]})
"x IN ('a','o''b')"
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)")
_MACRO = re.compile(r"\$__(\w+)(?:\(([^)]*)\))?")


def _rfc3339(moment: datetime) -> str:
    """Go's time.RFC3339 for a UTC time: seconds, `Z`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def expand_variables(sql: str, variables: Mapping[str, Sequence[str]]) -> str:
    """Template variables: `${name:sqlstring}` for any number of values, `${name}` / `$name`
    for exactly one."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        values = list(variables[name])
        fmt = match.group(2)
        if fmt == "sqlstring":
            return ",".join("'" + value.replace("'", "''") + "'" for value in values)
        if fmt is None and len(values) == 1:
            return values[0]
        raise ValueError(f"variable {match.group(0)} with {len(values)} values is not supported")

    return _VARIABLE.sub(substitute, sql)


def expand_macros(sql: str, start: datetime, end: datetime, interval: timedelta) -> str:
    """The data source's SQL macros for the time range [start, end] and the panel interval."""
    frm, to = _rfc3339(start), _rfc3339(end)
    seconds = int(interval.total_seconds())

    def substitute(match: re.Match[str]) -> str:
        name, raw = match.group(1), match.group(2)
        args = [a.strip() for a in raw.split(",")] if raw is not None else []
        if name in ("timeFilter", "timeRange") and len(args) == 1:
            return f"{args[0]} >= '{frm}' AND {args[0]} <= '{to}'"
        if name == "timeRangeFrom" and len(args) == 1:
            return f"{args[0]} >= '{frm}'"
        if name == "timeRangeTo" and len(args) == 1:
            return f"{args[0]} <= '{to}'"
        if name in ("timeFrom", "timeTo") and raw is None:
            return f"cast('{frm if name == 'timeFrom' else to}' as timestamp)"
        if name == "interval" and raw is None:
            return f"interval '{seconds} second'"
        if name in ("dateBin", "dateBinAlias") and len(args) == 1:
            alias = f" as {args[0]}_binned" if name == "dateBinAlias" else ""
            return (
                f"date_bin(interval '{seconds} second', {args[0]}, "
                f"timestamp '1970-01-01T00:00:00Z'){alias}"
            )
        raise ValueError(f"macro {match.group(0)} is not one Grafana's InfluxDB SQL mode expands")

    return _MACRO.sub(substitute, sql)
