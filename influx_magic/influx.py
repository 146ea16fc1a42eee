"""InfluxDB 3 I/O for the pipeline: read telemetry since a watermark, write scores and episodes.

Reading. A run reads only `[since, until)`, so its cost does not grow with the table: `since`
is the stored watermark minus a lateness allowance (Telegraf stamps points when it receives
them and flushes every ~10 s with jitter, so a point can land in the database up to ~15 s
after its timestamp), or `now - lookback` on the first run. The window is read in time slices, so a long catch-up after an
outage never asks for one unbounded result. Values travel as query parameters (`$since`,
`$until`), never pasted into the SQL; identifiers are quoted (`"machineID"`: unquoted names are
lower-cased). Rows read again because of the lateness allowance carry times the detector has
already seen; the caller drops those by its own per-machine watermark.

A database or table that does not exist yet is the normal first run (Telegraf creates both with
the first write), so it gives an empty frame; a server that does not answer is an
`InfluxUnavailable` error naming the host, so the run fails and its state stays as it was.

Writing. A frame becomes line protocol column by column (`influx_magic.line_protocol`: Arrow
compute, Core's escaping), split into bodies below `MAX_BODY_BYTES` (InfluxDB 3 Core rejects
bodies over 10 MiB), each handed to the official client as bytes and written synchronously: an
error raises, naming the table and how many rows were already written. The client's batching
mode is never used: it only logs write errors.

>>> sql_ident('machineID')
'"machineID"'
>>> machine_data_sql(["load"], bounded=True)
'SELECT time, "machineID", "provider", "load" FROM "machine_data" WHERE time >= $since AND time < $until ORDER BY time, "machineID"'
>>> time_param(pd.Timestamp("2024-05-01 10:00:00.000000001", tz="UTC"))
'2024-05-01T10:00:00.000000001Z'
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import pyarrow as pa
from influxdb_client_3 import InfluxDBClient3, WriteOptions, WritePrecision, WriteType
from influxdb_client_3.exceptions import InfluxDB3ClientQueryError, InfluxDBError
from pyarrow import flight
from urllib3.exceptions import HTTPError as Urllib3Error

from fleetwatch.detector import DEFAULT_FEATURES
from fleetwatch.episodes import Episode
from influx_magic.checks.findings import CheckEpisode
from influx_magic.line_protocol import bodies, iter_frame_lines
from influx_magic.settings import setting
from influx_magic.shards import Shard

log = logging.getLogger("influx_magic.influx")

MACHINE_TABLE = "machine_data"
SCORES_TABLE = "anomaly_scores"
EPISODES_TABLE = "anomaly_episodes"
#: The sensor fields of `machine_data` (Telegraf's json_v2 fields): the detector's default
#: features, in its order, so a query's columns and a default run's features are one list.
FEATURES: tuple[str, ...] = DEFAULT_FEATURES
TAGS: tuple[str, ...] = ("machineID", "provider")
MAX_BODY_BYTES = 8 * 1024 * 1024
WHOLE_FLEET = Shard()


class InfluxError(RuntimeError):
    """Something went wrong talking to InfluxDB; the message says what and where."""


class InfluxUnavailable(InfluxError):
    """The server did not answer (down, wrong host or port)."""


class InfluxNotFound(InfluxError):
    """The database or table does not exist (yet)."""


class InfluxWriteError(InfluxError):
    """A write was rejected; `rows_written` rows of the frame had been written before."""

    def __init__(self, message: str, rows_written: int) -> None:
        super().__init__(message)
        self.rows_written = rows_written


@dataclass(frozen=True)
class InfluxSettings:
    """Where to connect. The token is left out of the repr."""

    host: str
    database: str
    token: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> InfluxSettings:
        """From `INFLUX_HOST`, `INFLUX_DATABASE` and `INFLUX_TOKEN` (see `.env.example`)."""
        return cls(
            host=setting("INFLUX_HOST", env),
            database=setting("INFLUX_DATABASE", env),
            token=setting("INFLUX_TOKEN", env),
        )

    @property
    def url(self) -> str:
        """The host with scheme and an explicit port.

        The client would take a missing port as 443 even for http:// and crash without a
        scheme, so both are settled here, with an error that names the setting.

        >>> InfluxSettings("http://influxdb", "db").url
        'http://influxdb:80'
        >>> InfluxSettings("127.0.0.1:8181", "db").url
        Traceback (most recent call last):
        ...
        ValueError: INFLUX_HOST must be a URL like http://127.0.0.1:8181, got '127.0.0.1:8181'
        """
        parts = urlsplit(self.host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"INFLUX_HOST must be a URL like http://127.0.0.1:8181, got {self.host!r}"
            )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        netloc = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return urlunsplit((parts.scheme, f"{netloc}:{port}", "", "", ""))


def connect(
    settings: InfluxSettings | None = None,
    *,
    query_timeout: float = 120.0,
    write_timeout: float = 30.0,
) -> InfluxDBClient3:
    """A client for `settings` (default: from the environment), writing synchronously."""
    settings = settings or InfluxSettings.from_env()
    if not settings.database:
        raise ValueError("INFLUX_DATABASE must not be empty")
    return InfluxDBClient3(
        host=settings.url,
        database=settings.database,
        token=settings.token,
        write_client_options={
            "write_options": WriteOptions(write_type=WriteType.synchronous),
        },
        query_timeout=int(query_timeout * 1000),
        write_timeout=int(write_timeout * 1000),
    )


# --- reading ------------------------------------------------------------------------------


def sql_ident(name: str) -> str:
    """A double-quoted SQL identifier (embedded quotes doubled), for names we cannot bind."""
    return '"' + name.replace('"', '""') + '"'


def time_param(moment: datetime | pd.Timestamp) -> str:
    """An RFC 3339 UTC timestamp with nanoseconds, the form InfluxDB 3 takes as a parameter."""
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f") + f"{stamp.nanosecond:03d}Z"


# One machine's rows: its tags are bound as $machine and $provider, never pasted.
ONE_MACHINE = ' AND "machineID" = $machine AND provider = $provider'


def machine_data_sql(
    features: Sequence[str],
    *,
    bounded: bool,
    table: str = MACHINE_TABLE,
    one_machine: bool = False,
    shard: Shard = WHOLE_FLEET,
) -> str:
    """The telemetry query for one time slice; `bounded=False` leaves the end open,
    `one_machine` keeps the rows of the machine given as parameters, `shard` the rows of that
    shard's machines (its hash range as parameters `$shard_lo`/`$shard_hi`)."""
    columns = ", ".join(sql_ident(name) for name in [*TAGS, *features])
    where = "time >= $since AND time < $until" if bounded else "time >= $since"
    where += ONE_MACHINE if one_machine else ""
    where += shard.sql()
    return (
        f'SELECT time, {columns} FROM {sql_ident(table)} WHERE {where} ORDER BY time, "machineID"'
    )


def read_since(
    watermark: datetime | pd.Timestamp | None,
    *,
    lookback: timedelta,
    lateness: timedelta,
    now: datetime | pd.Timestamp | None = None,
) -> pd.Timestamp:
    """Where a run starts reading: watermark minus lateness, or now minus lookback at first.

    >>> read_since(None, lookback=timedelta(hours=1), lateness=timedelta(seconds=30),
    ...            now=pd.Timestamp("2024-05-01 10:00", tz="UTC"))
    Timestamp('2024-05-01 09:00:00+0000', tz='UTC')
    >>> read_since(pd.Timestamp("2024-05-01 09:59:50", tz="UTC"), lookback=timedelta(hours=1),
    ...            lateness=timedelta(seconds=30))
    Timestamp('2024-05-01 09:59:20+0000', tz='UTC')
    """
    if watermark is None:
        return _utc(now if now is not None else pd.Timestamp.now(tz="UTC")) - lookback
    return _utc(watermark) - lateness


def iter_machine_data(
    client: InfluxDBClient3,
    *,
    since: datetime | pd.Timestamp,
    until: datetime | pd.Timestamp | None = None,
    chunk: timedelta = timedelta(minutes=30),
    features: Sequence[str] = FEATURES,
    table: str = MACHINE_TABLE,
    shard: Shard = WHOLE_FLEET,
) -> Iterator[pd.DataFrame]:
    """Telemetry in `[since, until)` as one frame per time slice of at most `chunk`.

    Slices without data are not yielded, and a cheap `min(time)` query skips over them, so a
    window that starts long before the data (a large first-run lookback, an old watermark) or
    spans an outage costs one query per gap, not one per empty slice.
    `until=None` reads up to now and leaves the last slice open-ended, so points stamped a
    little ahead of this machine's clock are not skipped. Raises `InfluxNotFound` when the
    database or table does not exist, `InfluxUnavailable` when the server does not answer.
    """
    if chunk <= timedelta(0):
        raise ValueError(f"chunk must be positive, got {chunk}")
    end = _utc(until) if until is not None else None
    start: pd.Timestamp | None = _utc(since)
    probe = True
    while start is not None:
        if probe:  # jump over a stretch without data instead of querying it slice by slice
            start = _first_time(client, table, start, end)
            if start is None:
                return
        stop = end if end is not None else max(start, pd.Timestamp.now(tz="UTC"))
        slice_end = min(start + chunk, stop)
        last = slice_end >= stop
        bounded = not (last and end is None)
        params = {"since": time_param(start), **shard.params()}
        if bounded:
            params["until"] = time_param(slice_end)
        sql = machine_data_sql(features, bounded=bounded, table=table, shard=shard)
        frame = _machine_frame(_query(client, sql, params, what=f"reading {table}"), features)
        if len(frame):
            yield frame
        if last:
            return
        start, probe = slice_end, len(frame) == 0


def _first_time(
    client: InfluxDBClient3, table: str, since: pd.Timestamp, until: pd.Timestamp | None
) -> pd.Timestamp | None:
    """The earliest point time in the window, or None when the window is empty."""
    where = "time >= $since" + (" AND time < $until" if until is not None else "")
    params = {"since": time_param(since)}
    if until is not None:
        params["until"] = time_param(until)
    sql = f"SELECT min(time) AS first FROM {sql_ident(table)} WHERE {where}"
    result = _query(client, sql, params, what=f"reading {table}")
    if result.num_rows == 0:
        return None
    first = result.column("first")[0].as_py()
    return None if first is None else _utc(first)


def data_span(
    client: InfluxDBClient3, *, since: datetime | pd.Timestamp, table: str = MACHINE_TABLE
) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The oldest and newest point times at or after `since` across the whole fleet (None: no
    point, or no table yet), exact to the nanosecond. Every shard of a run reads up to the
    same newest point, so all reach the same data time."""
    sql = (
        f"SELECT min(time) AS first, max(time) AS latest FROM {sql_ident(table)} "
        "WHERE time >= $since"
    )
    try:
        result = _query(client, sql, {"since": time_param(since)}, what=f"reading {table}")
    except InfluxNotFound:
        return None
    if not result.num_rows or not result.column("latest").is_valid()[0].as_py():
        return None
    first, latest = (
        pd.Timestamp(
            result.column(name).cast(pa.timestamp("ns")).cast(pa.int64())[0].as_py(),
            unit="ns",
            tz="UTC",
        )
        for name in ("first", "latest")
    )
    return first, latest


def load_machine_data(
    client: InfluxDBClient3,
    *,
    since: datetime | pd.Timestamp,
    until: datetime | pd.Timestamp | None = None,
    chunk: timedelta = timedelta(minutes=30),
    features: Sequence[str] = FEATURES,
    table: str = MACHINE_TABLE,
    shard: Shard = WHOLE_FLEET,
) -> pd.DataFrame:
    """All telemetry in `[since, until)` (of `shard`'s machines): columns `time` (UTC),
    `machineID`, `provider` and the features as float64, sorted by time. Empty (same columns)
    when the database or table does not exist yet."""
    try:
        frames = list(
            iter_machine_data(
                client,
                since=since,
                until=until,
                chunk=chunk,
                features=features,
                table=table,
                shard=shard,
            )
        )
    except InfluxNotFound as missing:
        log.info("%s; nothing to read yet (first run?)", missing)
        return empty_machine_frame(features)
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_machine_frame(features)
    return pd.concat(frames, ignore_index=True)


def load_machine_history(
    client: InfluxDBClient3,
    *,
    machine: str,
    provider: str,
    since: datetime | pd.Timestamp,
    until: datetime | pd.Timestamp,
    features: Sequence[str] = FEATURES,
    scores_table: str = SCORES_TABLE,
) -> pd.DataFrame:
    """One machine's telemetry in `[since, until)` with the scores stored for it in
    `scores_table`: the loader's columns plus `score` (NaN where none was stored) and
    `is_anomaly`. For plots that show what came before a run. Tags are bound as parameters,
    never pasted."""
    params = {
        "since": time_param(since),
        "until": time_param(until),
        "machine": machine,
        "provider": provider,
    }
    sql = machine_data_sql(features, bounded=True, one_machine=True)
    data = _machine_frame(_query(client, sql, params, what=f"reading {MACHINE_TABLE}"), features)
    where = "time >= $since AND time < $until" + ONE_MACHINE
    try:
        stored = _query(
            client,
            f"SELECT time, score, is_anomaly FROM {sql_ident(scores_table)} WHERE {where}",
            params,
            what=f"reading {scores_table}",
        )
    except InfluxNotFound:  # no run has exported scores yet
        stored = pa.table({"time": [], "score": [], "is_anomaly": []})
    scores = pd.DataFrame(
        {
            "time": stored.column("time").cast(pa.timestamp("ns", tz="UTC")).to_pandas(),
            "score": stored.column("score").cast(pa.float64()).to_pandas(),
            "is_anomaly": stored.column("is_anomaly").cast(pa.bool_()).to_pandas(),
        }
    )
    merged = data.merge(scores.drop_duplicates("time", keep="last"), on="time", how="left")
    merged["is_anomaly"] = merged["is_anomaly"].eq(True)  # no stored score: not anomalous
    return merged


def empty_machine_frame(features: Sequence[str] = FEATURES) -> pd.DataFrame:
    """The loader's frame with no rows, with the same columns and dtypes.

    >>> empty_machine_frame(["load"]).dtypes.to_dict()
    {'time': datetime64[ns, UTC], 'machineID': dtype('O'), 'provider': dtype('O'), 'load': dtype('float64')}
    """
    frame = pd.DataFrame(
        {
            "time": pd.Series([], dtype="datetime64[ns, UTC]"),
            "machineID": pd.Series([], dtype=object),
            "provider": pd.Series([], dtype=object),
        }
    )
    for name in features:
        frame[name] = pd.Series([], dtype="float64")
    return frame


def _machine_frame(table: pa.Table, features: Sequence[str]) -> pd.DataFrame:
    """Arrow result -> the loader's frame. Types are settled in Arrow: tags arrive
    dictionary-encoded (possibly with repeated dictionary values across batches, which pandas'
    Categorical rejects), time without a zone, integer fields as Int64."""
    if table.num_rows == 0:
        return empty_machine_frame(features)
    columns = {
        "time": table.column("time").cast(pa.timestamp("ns", tz="UTC")),
        **{tag: table.column(tag).cast(pa.string()) for tag in TAGS},
        **{name: table.column(name).cast(pa.float64()) for name in features},
    }
    frame = pa.table(columns).to_pandas()
    for tag in TAGS:
        frame[tag] = frame[tag].astype(object)
    return frame


def query_table(
    client: InfluxDBClient3, sql: str, params: Mapping[str, Any], *, what: str
) -> pa.Table:
    """A parameterised SQL query (`$name` placeholders bound to `params` by the client, never
    pasted) as an Arrow table; failures are `InfluxError`s naming the server and `what`
    (`InfluxNotFound` for a missing table or database)."""
    return _query(client, sql, dict(params), what=what)


def _query(client: InfluxDBClient3, sql: str, params: dict[str, Any], *, what: str) -> pa.Table:
    try:
        return client.query(sql, language="sql", mode="all", query_parameters=params)
    except InfluxDB3ClientQueryError as error:
        raise _query_error(client, error, what) from None
    except flight.FlightError as error:  # not every Flight error is wrapped by the client
        raise _query_error(client, error, what) from None


def _query_error(client: InfluxDBClient3, error: Exception, what: str) -> InfluxError:
    cause = error.__context__ if error.__context__ is not None else error
    # gRPC appends pages of debug context; the first sentence says what happened.
    lines = str(cause).strip().split(". gRPC client debug context")[0].splitlines()
    text = lines[0] if lines else type(cause).__name__
    where = f"InfluxDB at {client.base_url} (database {getattr(client, '_database', '?')!r})"
    lowered = str(cause).lower()
    if isinstance(cause, flight.FlightUnavailableError) or "failed to connect" in lowered:
        return InfluxUnavailable(f"{where} is not reachable while {what}: {text}")
    if isinstance(cause, flight.FlightUnauthenticatedError | flight.FlightUnauthorizedError):
        return InfluxError(f"{where} refused the token while {what}: {text}")
    if isinstance(cause, KeyError) or "not found" in lowered:
        return InfluxNotFound(f"{where}: {text}")
    return InfluxError(f"{where} failed while {what}: {text}")


# --- writing ------------------------------------------------------------------------------


def write_frame(
    client: InfluxDBClient3,
    frame: pd.DataFrame,
    *,
    table: str,
    tags: Sequence[str],
    fields: Sequence[str],
    time_column: str = "time",
    max_body_bytes: int = MAX_BODY_BYTES,
) -> int:
    """Write `frame` to `table` in bodies below `max_body_bytes`; the number of lines written.

    Rows with no field value are skipped (line protocol needs one). Naive times are UTC.
    Names or tag values line protocol cannot carry raise `LineProtocolValueError` before
    anything is sent. The frame is encoded slice by slice while a writer thread sends the
    previous slice, so building line protocol overlaps with the server's work.
    """
    slices = iter_frame_lines(frame, table, tags=tags, fields=fields, time_column=time_column)
    written = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="influx-write") as writer:
        sending: Future[int] | None = None
        for part in slices:
            if sending is not None:
                written += _sent(sending, written)
            sending = writer.submit(
                write_lines, client, part.lines, table=table, max_body_bytes=max_body_bytes
            )
        if sending is not None:
            written += _sent(sending, written)
    return written


def _sent(sending: Future[int], before: int) -> int:
    """The lines a slice's write sent; its error counts the lines of earlier slices too."""
    try:
        return sending.result()
    except InfluxWriteError as error:
        raise InfluxWriteError(
            str(error).replace(
                f"after {error.rows_written} row(s)", f"after {before + error.rows_written} row(s)"
            ),
            before + error.rows_written,
        ) from None


def write_lines(
    client: InfluxDBClient3,
    lines: pa.ChunkedArray | pa.Array,
    *,
    table: str,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> int:
    """Write ready line protocol (`influx_magic.line_protocol`) in bodies below
    `max_body_bytes`, each acknowledged before the next; the number of lines written.

    The client writes synchronously: a rejected body raises `InfluxWriteError` (with the rows
    written before it), an unreachable server `InfluxUnavailable`.
    """
    lines_written = 0
    for body, count in bodies(lines, max_body_bytes):
        try:
            client.write(record=body, write_precision=WritePrecision.NS)
        except InfluxDBError as error:
            status = getattr(error, "status", None) or getattr(error.response, "status", "?")
            raise InfluxWriteError(
                f"InfluxDB at {client.base_url} rejected a write to {table!r} "
                f"(HTTP {status}) after {lines_written} row(s): {error.message}",
                lines_written,
            ) from None
        except (Urllib3Error, OSError) as error:
            raise InfluxUnavailable(
                f"InfluxDB at {client.base_url} is not reachable while writing {table!r} "
                f"after {lines_written} row(s): {type(error).__name__}"
            ) from None
        lines_written += count
    return lines_written


#: What a score row carries besides its tags: the score, whether it is anomalous, its episode,
#: the series key and configuration that produced it, whether the model was warm, and each
#: sensor's deviation (`dev_<feature>`, a signed z-score).
SCORE_FIELDS = ("score", "is_anomaly", "episode_id", "unique_id", "config_id", "warm")


def write_scores(
    client: InfluxDBClient3, scores: pd.DataFrame, *, table: str = SCORES_TABLE
) -> int:
    """Write per-point results to `table` (`anomaly_scores`): tags machineID, provider; fields
    score (float), is_anomaly (bool), episode_id (string, only inside an episode) and, when the
    frame has them, unique_id, config_id (strings), warm (bool) and dev_<feature> (floats)."""
    deviations = [c for c in scores.columns if c.startswith("dev_")]
    columns = ["time", *TAGS, *SCORE_FIELDS, *deviations]
    data = scores[[c for c in columns if c in scores.columns]].copy()  # not every column
    data["score"] = pd.to_numeric(data["score"], errors="coerce").astype("float64")
    data["is_anomaly"] = data["is_anomaly"].fillna(False).astype(bool)
    if "episode_id" not in data.columns:
        data["episode_id"] = None
    data["episode_id"] = data["episode_id"].astype(object).where(data["episode_id"].notna(), None)
    if "warm" in data.columns:
        data["warm"] = data["warm"].fillna(False).astype(bool)
    for column in deviations:
        data[column] = pd.to_numeric(data[column], errors="coerce").astype("float64")
    fields = [c for c in SCORE_FIELDS if c in data.columns] + deviations
    return write_frame(client, data, table=table, tags=TAGS, fields=fields)


def episodes_frame(
    episodes: Iterable[Episode],
    identities: Mapping[str, Sequence[str]],
    statuses: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One row per episode for `anomaly_episodes`, keyed by machine and start time.

    A run writes every episode it changed (held back by a cooldown, open, grown by a burst,
    resolved): same tags and time, so InfluxDB keeps one row per episode with its latest
    `status` (`held`, `open`, `resolved`), `bursts`, `points`, `end` (last anomalous point),
    `duration_s`, `peak_score`, `top_features` and `peak_<feature>` sensor values.
    `identities` maps a unique_id to its machineID and provider; `statuses` (episode id ->
    status) replaces the status of episodes an operator set apart (`muted`).
    """
    statuses = statuses or {}
    rows = []
    for episode in episodes:
        machine, provider = ([*identities.get(episode.machine, [])] + [None, None])[:2]
        start, end = _utc(pd.Timestamp(episode.start)), _utc(pd.Timestamp(episode.end))
        row: dict[str, Any] = {
            "time": start,
            "machineID": machine or episode.machine,
            "provider": provider,
            "episode_id": episode.episode_id,
            "unique_id": episode.machine,
            "status": statuses.get(episode.episode_id, episode.status),
            "bursts": int(episode.bursts),
            "points": int(episode.points),
            "end": time_param(end),
            "duration_s": float((end - start).total_seconds()),
            "resolved_at": None
            if episode.resolved_at is None
            else time_param(pd.Timestamp(episode.resolved_at)),
            "peak_score": float(episode.peak_score),
            "top_features": ",".join(episode.top_features) or None,
        }
        row.update({f"peak_{k}": float(v) for k, v in episode.peak_values.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def write_episodes(
    client: InfluxDBClient3,
    episodes: Iterable[Episode],
    identities: Mapping[str, Sequence[str]],
    *,
    table: str = EPISODES_TABLE,
    statuses: Mapping[str, str] | None = None,
) -> int:
    """Write episodes (as they are now) to `table` (`anomaly_episodes`)."""
    frame = episodes_frame(episodes, identities, statuses)
    if frame.empty:
        return 0
    fields = [c for c in frame.columns if c not in ("time", *TAGS)]
    return write_frame(client, frame, table=table, tags=TAGS, fields=fields)


def findings_frame(findings: Iterable[CheckEpisode]) -> pd.DataFrame:
    """Declared checks' findings as `anomaly_episodes` rows: the detector's columns where they
    mean the same (`status` open or resolved, `bursts`, `end`, `duration_s`, `resolved_at`,
    `episode_id`, `unique_id`, tags machineID and provider), and `check_name`, `check_kind`, `check_value`,
    `check_summary` and `check_details` (JSON: the numbers that decided it, a window test's
    formula among them).

    A check's episode can start at the very reading a detector episode of the same machine
    starts at, and rows with the same tags and time are one row in InfluxDB. So the row is
    stamped 1 ns to 1 ms after the start, by a fixed amount derived from the check's name:
    readings are stamped in milliseconds, so it never lands on a detector episode's row.
    """
    rows = []
    for episode in findings:
        resolved = episode.resolved_at is not None
        rows.append(
            {
                "time": pd.Timestamp(episode.start + check_row_offset(episode.check), tz="UTC"),
                "machineID": episode.machine_id,
                "provider": episode.provider,
                "episode_id": episode.episode_id,
                "unique_id": episode.unique_id,
                "status": "resolved" if resolved else "open",
                "bursts": int(episode.bursts),
                "end": time_param(pd.Timestamp(episode.end, tz="UTC")),
                "duration_s": (episode.end - episode.start) / 1e9,
                "resolved_at": time_param(pd.Timestamp(episode.resolved_at, tz="UTC"))
                if resolved
                else None,
                "check_name": episode.check,
                "check_kind": episode.check_kind,
                "check_value": episode.value,
                "check_summary": episode.summary,
                "check_details": json.dumps(episode.details, sort_keys=True, default=str),
            }
        )
    return pd.DataFrame(rows)


def check_row_offset(check: str) -> int:
    """Nanoseconds (1 to 999,999) a check's `anomaly_episodes` rows lie after their start.

    >>> check_row_offset("overload")
    164069
    """
    return 1 + int(hashlib.sha256(check.encode()).hexdigest()[:8], 16) % 999_999


def write_findings(
    client: InfluxDBClient3, findings: Iterable[CheckEpisode], *, table: str = EPISODES_TABLE
) -> int:
    """Write declared checks' findings (as they are now) to `table` (`anomaly_episodes`)."""
    frame = findings_frame(findings)
    if frame.empty:
        return 0
    fields = [c for c in frame.columns if c not in ("time", *TAGS)]
    return write_frame(client, frame, table=table, tags=TAGS, fields=fields)


def _utc(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
