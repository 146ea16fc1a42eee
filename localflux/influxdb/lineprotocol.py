"""InfluxDB line protocol, parsed the way InfluxDB 3 Core parses it, into Arrow columns.

Two parsers share one grammar (Core's `influxdb_line_protocol` crate):

* a columnar fast path: lines that share a shape (measurement, tag keys, field keys and
  field types, written the same way) are matched by one regular expression built from the
  first such line and converted with pyarrow.compute, so a 50k-line body costs a few
  vectorised passes instead of 50k Python calls. Escaped names are literals of that
  pattern, and escaped tag values are matched as runs of plain characters and `\\x` pairs
  and unescaped with one vectorised replace: clients escape the spaces and commas of real
  company names, so that is a production path, not a corner case;
* a per-line parser (`parse_line`) for everything else: odd whitespace, bad lines, bodies too
  varied to share shapes. It defines the grammar; the fast path only ever accepts lines it
  would parse the same way and leaves the rest (a tag value ending in a backslash, one over
  64 KiB) to it, so errors carry the per-line parser's message.

Both produce `LineGroup`s (lines of one shape, as Arrow arrays) and `LineError`s (line number,
message, start of the line). Nothing here knows about tables' existing schemas; type
conflicts against the catalog are decided by the storage layer.

>>> line = parse_line('cpu,host=a\\\\ b usage=0.5,n=3i,ok=T,msg="say \\\\"hi\\\\"" 1700000000')
>>> line.table, line.tags, line.timestamp
('cpu', [('host', 'a b')], 1700000000)
>>> [(key, kind.value, value) for key, kind, value in line.fields]
[('usage', 'float', 0.5), ('n', 'integer', 3), ('ok', 'boolean', True), ('msg', 'string', 'say "hi"')]
>>> parse_line("cpu usage=NaN")
Traceback (most recent call last):
...
localflux.influxdb.lineprotocol.LineProtocolError: No fields were provided
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from localflux.influxdb.model import TIME, Kind, type_conflict

# Core limits a string field value to 64 KiB.
STRING_LIMIT = 65536
# Error reports quote the start of the offending line, as Core does.
ORIGINAL_LINE_CHARS = 20
# Give up on the fast path after this many shapes, or when a shape matches fewer lines:
# each round is a full regex pass over the lines still unmatched.
MAX_SHAPES = 16
MIN_SHAPE_LINES = 32
# Lines tried (and left to the per-line parser) while looking for a columnar shape.
MAX_PROBES = 64
# Wider lines (tags + fields) go to the per-line parser: a shape's pattern has a group per
# column, and compiling and matching thousands of groups costs more than it saves.
MAX_SHAPE_COLUMNS = 64

_TRUE = ("true", "True", "TRUE", "t", "T")
_FALSE = ("false", "False", "FALSE", "f", "F")
# Field-value patterns in the order Core tries them (integer, unsigned, float, string, bool).
_INT = re.compile(r"-?[0-9]+i")
_UINT = re.compile(r"[0-9]+u")
_FLOAT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_SIGNED = re.compile(r"-?[0-9]+")
_SPACES = re.compile(r" +")
# Runs of characters that need no escape handling, per position in a line.
_MEASUREMENT_RUN = re.compile(r"[^ \t\n\x00,\\]+")
_KEY_RUN = re.compile(r"[^ \t\n=\\]+")
_TAG_VALUE_RUN = re.compile(r"[^ \t\n,\\]+")
_STRING_RUN = re.compile(r'[^"\\]+')
_MEASUREMENT_ESCAPES = frozenset(", \\")
_KEY_ESCAPES = frozenset(",= \\")


class LineProtocolError(ValueError):
    """One line is not valid line protocol; the message is Core's wording where known."""


class BodyError(ValueError):
    """The whole request body is unusable (for example not UTF-8)."""


@dataclass
class ParsedLine:
    """One line, unescaped. `raw_*` keep the escaped spelling for building fast-path patterns."""

    table: str
    tags: list[tuple[str, str]]
    fields: list[tuple[str, Kind, object]]
    timestamp: int | None
    raw_table: str = ""
    raw_tag_keys: list[str] = field(default_factory=list)
    raw_field_keys: list[str] = field(default_factory=list)


@dataclass
class LineError:
    line_number: int
    message: str
    original_line: str

    def as_json(self) -> dict[str, object]:
        return {
            "error_message": self.message,
            "line_number": self.line_number,
            "original_line": self.original_line,
        }


@dataclass
class LineGroup:
    """Lines of one shape as columns. `rows` index `Parsed.lines` (line number = row + 1)."""

    table: str
    rows: np.ndarray
    tags: dict[str, pa.Array]
    fields: dict[str, tuple[Kind, pa.Array]]
    timestamps: pa.Array  # int64 in the request's precision, null where the line had none

    def kinds(self) -> dict[str, Kind]:
        kinds = {name: Kind.TAG for name in self.tags}
        kinds.update({name: kind for name, (kind, _) in self.fields.items()})
        return kinds

    def take(self, keep: np.ndarray) -> LineGroup:
        """The subset of lines where `keep` (a boolean mask) is true."""
        mask = pa.array(keep)
        return LineGroup(
            self.table,
            self.rows[keep],
            {k: v.filter(mask) for k, v in self.tags.items()},
            {k: (kind, v.filter(mask)) for k, (kind, v) in self.fields.items()},
            self.timestamps.filter(mask),
        )


@dataclass
class Parsed:
    lines: pa.Array  # every line of the body as sent (string), for error reports
    groups: list[LineGroup]
    errors: list[LineError]

    @property
    def line_count(self) -> int:
        return sum(len(g.rows) for g in self.groups) + len(self.errors)

    def error_for(self, row: int, message: str) -> LineError:
        return LineError(row + 1, message, original_line(self.lines[row].as_py()))


def original_line(line: str) -> str:
    return line[:ORIGINAL_LINE_CHARS]


# ---------------------------------------------------------------------------------------------
# Per-line parser: Core's grammar, character by character.


def parse_line(text: str) -> ParsedLine:
    """Parse one line (leading whitespace already removed); raise LineProtocolError."""
    name = _escaped(text, 0, _MEASUREMENT_RUN, _MEASUREMENT_ESCAPES)
    if name is None:
        raise LineProtocolError("Invalid measurement was provided")
    measurement, raw_measurement, pos = name
    tags: list[tuple[str, str]] = []
    raw_tag_keys: list[str] = []
    if text.startswith(",", pos):
        pos += 1
        while True:
            parsed = _pair(text, pos)
            if parsed is None:
                raise LineProtocolError("Tag Set Malformed")
            key, raw_key, value, pos = parsed
            tags.append((key, value))
            raw_tag_keys.append(raw_key)
            if not text.startswith(",", pos):
                break
            pos += 1
    spaces = _SPACES.match(text, pos)
    if spaces is None:
        rest = text[pos:]
        raise LineProtocolError(
            f"Could not parse entire line. Found trailing content: '{rest}'"
            if rest
            else "No fields were provided"
        )
    pos = spaces.end()
    fields: list[tuple[str, Kind, object]] = []
    raw_field_keys: list[str] = []
    while True:
        parsed_field = _field(text, pos)
        if parsed_field is None:
            if not fields:
                raise LineProtocolError("No fields were provided")
            pos -= 1
            break
        key, raw_key, kind, value, pos = parsed_field
        fields.append((key, kind, value))
        raw_field_keys.append(raw_key)
        if not text.startswith(",", pos):
            break
        pos += 1
    timestamp = None
    spaces = _SPACES.match(text, pos)
    if spaces is not None:
        digits = _SIGNED.match(text, spaces.end())
        if digits is not None:
            timestamp = int(digits.group())
            if not -(2**63) <= timestamp < 2**63:
                raise LineProtocolError(f"Unable to parse timestamp value '{digits.group()}'")
            pos = digits.end()
            trailing = _SPACES.match(text, pos)
            if trailing is not None:
                pos = trailing.end()
    if pos != len(text):
        raise LineProtocolError(
            f"Could not parse entire line. Found trailing content: '{text[pos:]}'"
        )
    line = ParsedLine(
        measurement, tags, fields, timestamp, raw_measurement, raw_tag_keys, raw_field_keys
    )
    _check_names(line)
    return line


def _check_names(line: ParsedLine) -> None:
    """Duplicates and clashes: Core's validator rejects these after parsing."""
    seen: set[str] = set()
    for key, _ in line.tags:
        if key in seen:
            raise LineProtocolError(
                f"invalid line protocol - multiple instances of '{key}' tag found"
            )
        seen.add(key)
    fields: set[str] = set()
    for key, kind, _ in line.fields:
        if key in fields:
            raise LineProtocolError(
                f"invalid line protocol - multiple instances of '{key}' field found"
            )
        fields.add(key)
        if key in seen:
            raise LineProtocolError(type_conflict(key, Kind.TAG, kind))
    if TIME in seen:
        raise LineProtocolError(type_conflict(TIME, Kind.TIME, Kind.TAG))
    for key, kind, _ in line.fields:
        if key == TIME:
            raise LineProtocolError(type_conflict(TIME, Kind.TIME, kind))


def _escaped(
    text: str, pos: int, run: re.Pattern[str], escapes: frozenset[str]
) -> tuple[str, str, int] | None:
    """A name or tag value: runs of plain characters and backslash escapes; None if empty.

    An escape of a character outside `escapes` keeps the backslash (Go's parser does the
    same), and a value that ends with a backslash is an error.
    """
    parts: list[str] = []
    start = pos
    length = len(text)
    while pos < length:
        match = run.match(text, pos)
        if match is not None:
            parts.append(match.group())
            pos = match.end()
            continue
        if text[pos] != "\\":
            break
        if pos + 1 < length and text[pos + 1] in escapes:
            parts.append(text[pos + 1])
            pos += 2
        else:
            parts.append(text[pos : pos + 2])
            pos += 2 if pos + 1 < length else 1
    if pos == start:
        return None
    value = "".join(parts)
    if value.endswith("\\"):
        raise LineProtocolError(
            "Measurements, tag keys and values, and field keys may not end with a backslash"
        )
    if len(value.encode()) > STRING_LIMIT:
        raise LineProtocolError("String is greater than 64KB")
    return value, text[start:pos], pos


def _pair(text: str, pos: int) -> tuple[str, str, str, int] | None:
    """`key=value` of a tag, or None when there is none at `pos`."""
    key = _escaped(text, pos, _KEY_RUN, _KEY_ESCAPES)
    if key is None or not text.startswith("=", key[2]):
        return None
    value = _escaped(text, key[2] + 1, _TAG_VALUE_RUN, _KEY_ESCAPES)
    if value is None:
        return None
    return key[0], key[1], value[0], value[2]


def _field(text: str, pos: int) -> tuple[str, str, Kind, object, int] | None:
    key = _escaped(text, pos, _KEY_RUN, _KEY_ESCAPES)
    if key is None or not text.startswith("=", key[2]):
        return None
    parsed = _field_value(text, key[2] + 1)
    if parsed is None:
        return None
    kind, value, end = parsed
    return key[0], key[1], kind, value, end


def _field_value(text: str, pos: int) -> tuple[Kind, object, int] | None:
    if match := _INT.match(text, pos):
        digits = match.group()[:-1]
        value = int(digits)
        if not -(2**63) <= value < 2**63:
            raise LineProtocolError(f"Unable to parse integer value '{digits}'")
        return Kind.INTEGER, value, match.end()
    if match := _UINT.match(text, pos):
        digits = match.group()[:-1]
        value = int(digits)
        if value >= 2**64:
            raise LineProtocolError(f"Unable to parse unsigned integer value '{digits}'")
        return Kind.UINTEGER, value, match.end()
    if match := _FLOAT.match(text, pos):
        value = float(match.group())
        if math.isinf(value):  # 1e400: no finite float64; Core stores no inf
            raise LineProtocolError(f"Unable to parse floating-point value '{match.group()}'")
        return Kind.FLOAT, value, match.end()
    if text.startswith('"', pos):
        return _string_value(text, pos)
    for spelling in _TRUE:
        if text.startswith(spelling, pos):
            return Kind.BOOLEAN, True, pos + len(spelling)
    for spelling in _FALSE:
        if text.startswith(spelling, pos):
            return Kind.BOOLEAN, False, pos + len(spelling)
    return None


def _string_value(text: str, pos: int) -> tuple[Kind, object, int] | None:
    """A quoted string: only `\\"` and `\\\\` are escapes, other backslashes are literal."""
    parts: list[str] = []
    pos += 1
    length = len(text)
    while pos < length:
        char = text[pos]
        if char == '"':
            value = "".join(parts)
            if len(value.encode()) > STRING_LIMIT:
                raise LineProtocolError("String is greater than 64KB")
            return Kind.STRING, value, pos + 1
        if char == "\\":
            following = text[pos + 1 : pos + 2]
            if following in ('"', "\\"):
                parts.append(following)
                pos += 2
            else:
                parts.append("\\")
                pos += 1
            continue
        match = _STRING_RUN.match(text, pos)
        assert match is not None
        parts.append(match.group())
        pos = match.end()
    return None


# ---------------------------------------------------------------------------------------------
# Splitting a body into lines.

_WELL_FORMED_LINE = re.compile(
    r"^(?:[^ \t\n\x00,\\]|\\[\s\S])+"
    r"(?:,(?:[^ \t\n=\\]|\\[\s\S])+=(?:[^ \t\n,\\]|\\[\s\S])+)*"
    r" +(?:[^ \t\n=\\]|\\[\s\S])+="
    r'(?:-?\d+i|\d+u|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|"(?:[^"\\]|\\[\s\S])*"'
    r"|t|T|true|True|TRUE|f|F|false|False|FALSE)"
    r"(?:,(?:[^ \t\n=\\]|\\[\s\S])+="
    r'(?:-?\d+i|\d+u|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|"(?:[^"\\]|\\[\s\S])*"'
    r"|t|T|true|True|TRUE|f|F|false|False|FALSE))*"
    r"(?: +-?\d+ *)?$"
)


def split_lines(body: str) -> list[str]:
    """Core's line splitter: a newline inside a quoted field value does not end the line.

    A port of `influxdb_line_protocol::split_lines` (itself Go's `scanLine`): quotes count
    only in the field section and only after a key's `=`; a backslash escapes the next
    character, including a newline.

    >>> split_lines('a s="x\\ny" 1\\nb f=1')
    ['a s="x\\ny" 1', 'b f=1']
    """
    lines: list[str] = []
    start = 0
    quoted = fields = in_escape = False
    equals = commas = 0
    for index, char in enumerate(body):
        if in_escape:
            in_escape = False
        elif char == "\\":
            in_escape = True
        elif char == " ":
            fields = True
        elif fields and not quoted and char == "=":
            equals += 1
        elif fields and not quoted and char == ",":
            commas += 1
        elif fields and char == '"' and equals > commas:
            quoted = not quoted
        elif char == "\n" and not quoted:
            lines.append(body[start:index])
            start = index + 1
            quoted = fields = False
            equals = commas = 0
    lines.append(body[start:])
    return lines


def _split_body(body: bytes) -> pa.Array:
    """All lines of the body (as a string array), split as Core splits them."""
    # One string over the body's own memory (no copy); full validation checks the UTF-8.
    offsets = pa.py_buffer(np.array([0, len(body)], dtype=np.int64))
    text_array = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(body)])
    try:
        text_array.validate(full=True)
    except pa.ArrowInvalid:
        try:
            body.decode()
        except UnicodeDecodeError as error:
            raise BodyError(f"body content is not valid utf8: {error}") from None
        raise
    lines = pc.split_pattern(text_array, "\n").flatten().cast(pa.string())
    if b'"' not in body and b"\\\n" not in body:
        return lines
    if b"\\\n" not in body:
        # Quoted newlines are the only way the plain split can be wrong; a line that is
        # well-formed on its own never ends inside a quoted string.
        quoted = lines.filter(pc.match_substring(lines, '"'))
        if pc.all(pc.match_substring_regex(quoted, _WELL_FORMED_LINE.pattern)).as_py():
            return lines
    return pa.array(split_lines(body.decode()), pa.string())


# ---------------------------------------------------------------------------------------------
# The columnar fast path.

_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}")
_VALUE_PATTERNS = {
    Kind.FLOAT: r"(?P<{name}>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)",
    Kind.INTEGER: r"(?P<{name}>-?\d+)i",
    Kind.UINTEGER: r"(?P<{name}>\d+)u",
    Kind.BOOLEAN: r"(?P<{name}>t|T|true|True|TRUE|f|F|false|False|FALSE)",
    Kind.STRING: r'"(?P<{name}>(?:[^"\\]|\\[\s\S])*)"',
}
# A tag value in the capturing pattern: plain characters and backslash pairs. Every backslash
# starts a pair, so the value ends where `_escaped` ends it (the first unescaped space, tab,
# newline or comma); pairs that are no escape (`\d`) stay as they are in `_unescape_tags`.
_TAG_VALUE_PATTERN = r"(?P<{name}>(?:[^ \t\n,\\]|\\[\s\S])+)"
# The split path cuts lines at commas and spaces, so there tag values must be plain.
_PLAIN_TAG_VALUE_PATTERN = r"(?P<{name}>[^ \t\n,\\]+)"
_TAG_ESCAPE = r"\\([,= \\])"


def _literal(text: str) -> str:
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def _shape_pattern(line: ParsedLine, *, strict: bool = False) -> str:
    """A regex matching exactly the lines spelled like `line` apart from values.

    `strict` (for the split path) wants single spaces and a timestamp, and captures nothing.
    """
    space = " " if strict else " +"
    tag_value = _PLAIN_TAG_VALUE_PATTERN if strict else _TAG_VALUE_PATTERN
    parts = ["^", _literal(line.raw_table)]
    for index, raw_key in enumerate(line.raw_tag_keys):
        parts += [",", _literal(raw_key), "=", tag_value.format(name=f"t{index}")]
    parts.append(space)
    for index, (raw_key, (_, kind, _)) in enumerate(
        zip(line.raw_field_keys, line.fields, strict=True)
    ):
        parts += ["," if index else "", _literal(raw_key), "="]
        parts.append(_VALUE_PATTERNS[kind].format(name=f"f{index}"))
    parts.append(" -?[0-9]+$" if strict else r"(?: +(?P<ts>-?\d+) *)?$")
    pattern = "".join(parts)
    return re.sub(r"\(\?P<\w+>", "(?:", pattern) if strict else pattern


def _convert_field(kind: Kind, text: pa.Array) -> pa.Array:
    """Cast captured field text to its column type; raises ArrowInvalid on overflow."""
    if kind is Kind.FLOAT:
        return text.cast(pa.float64())
    if kind is Kind.INTEGER:
        return text.cast(pa.int64())
    if kind is Kind.UINTEGER:
        return text.cast(pa.uint64())
    if kind is Kind.BOOLEAN:
        return pc.is_in(text, value_set=pa.array(_TRUE))
    unescaped = pc.replace_substring_regex(text, pattern=r'\\(["\\])', replacement=r"\1")
    if (pc.max(pc.binary_length(unescaped)).as_py() or 0) > STRING_LIMIT:
        raise pa.ArrowInvalid("string field over the limit")
    return unescaped


def _unescape_tags(values: pa.Array) -> pa.Array:
    r"""Tag values as `_escaped` reads them: `\,` `\=` `\ ` `\\` lose their backslash.

    One left-to-right regex pass pairs backslashes as the per-line parser does, because the
    second character of a pair that is no escape is never a backslash.

    >>> values = pa.array([r"Acme\ Corp\,\ Inc", r"a\\\=b", r"x\\\,y", r"c\d", "plain"])
    >>> print(*_unescape_tags(values).to_pylist(), sep=" | ")
    Acme Corp, Inc | a\=b | x\,y | c\d | plain
    """
    if not pc.any(pc.match_substring(values, "\\")).as_py():
        return values
    return pc.replace_substring_regex(values, pattern=_TAG_ESCAPE, replacement=r"\1")


def _refused_rows(group: LineGroup) -> np.ndarray | None:
    """Rows whose values the per-line parser refuses, or None if there are none: a tag value
    ending with a backslash or over Core's 64 KiB limit, a float out of range (`1e400`)."""
    bad = None
    checks = [
        pc.or_(pc.ends_with(values, "\\"), pc.greater(pc.binary_length(values), STRING_LIMIT))
        for values in group.tags.values()
    ]
    checks += [pc.is_inf(values) for kind, values in group.fields.values() if kind is Kind.FLOAT]
    for refused in checks:
        if pc.any(refused).as_py():
            mask = refused.to_numpy(zero_copy_only=False)
            bad = mask if bad is None else bad | mask
    return bad


def _columnar_group(line: ParsedLine, lines: pa.Array, rows: np.ndarray) -> LineGroup | None:
    """The lines matching `line`'s shape as one group (None if a value did not convert).

    `lines` starts with `line`'s own text, so the group is never empty.

    Lines with values the per-line parser refuses are left out of the group, so they reach
    it and get its error message.
    """
    try:
        group = _split_group(line, lines, rows) if _splittable(line) else None
        if group is None:
            group = _extract_group(line, lines, rows)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Overflow or an over-long string somewhere: the per-line parser reports which line.
        return None
    bad = _refused_rows(group)
    return group if bad is None else group.take(~bad)


def _splittable(line: ParsedLine) -> bool:
    """Whether values can be cut out by splitting at commas and spaces (the common case):
    no string fields, a timestamp, and names without commas or escapes."""
    names = [line.raw_table, *line.raw_tag_keys, *line.raw_field_keys]
    return (
        line.timestamp is not None
        and all(kind is not Kind.STRING for _, kind, _ in line.fields)
        and not any("," in name or "\\" in name for name in names)
    )


def _split_group(line: ParsedLine, lines: pa.Array, rows: np.ndarray) -> LineGroup | None:
    """Match without captures (a fast DFA pass), then split every line into its tokens."""
    matched = pc.match_substring_regex(lines, _shape_pattern(line, strict=True))
    mask = matched.to_numpy(zero_copy_only=False)
    if not mask[0]:
        # The shape's own line has escaped tag values: the capturing pass takes every line.
        return None
    count = int(mask.sum())
    chosen = lines if count == len(lines) else lines.filter(matched)
    width = 2 + len(line.tags) + len(line.fields)
    tokens = pc.split_pattern(pc.replace_substring(chosen, " ", ","), ",").flatten()

    def token(position: int, key: str, kind: Kind | None = None) -> pa.Array:
        values = tokens.take(pa.array(np.arange(position, count * width, width)))
        if not key:
            return values
        # Cut off "key=" (the slice counts code points, as len() does) and an i/u suffix.
        suffixed = kind in (Kind.INTEGER, Kind.UINTEGER)
        return pc.utf8_slice_codeunits(values, len(key) + 1, -1 if suffixed else 2**31 - 1)

    tags = {
        key: token(1 + i, raw)
        for i, ((key, _), raw) in enumerate(zip(line.tags, line.raw_tag_keys, strict=True))
    }
    offset = 1 + len(line.tags)
    fields = {
        key: (kind, _convert_field(kind, token(offset + i, raw, kind)))
        for i, ((key, kind, _), raw) in enumerate(
            zip(line.fields, line.raw_field_keys, strict=True)
        )
    }
    timestamps = token(width - 1, "").cast(pa.int64())
    return LineGroup(line.table, rows[mask], tags, fields, timestamps)


def _extract_group(line: ParsedLine, lines: pa.Array, rows: np.ndarray) -> LineGroup:
    """One regex pass with a capture group per value."""
    captured = pc.extract_regex(lines, _shape_pattern(line))
    matched = captured.is_valid()
    if captured.null_count:
        captured = captured.filter(matched)
    tags = {key: _unescape_tags(captured.field(f"t{i}")) for i, (key, _) in enumerate(line.tags)}
    fields = {
        key: (kind, _convert_field(kind, captured.field(f"f{i}")))
        for i, (key, kind, _) in enumerate(line.fields)
    }
    raw_ts = captured.field("ts")
    # An absent timestamp captures as an empty string, not null.
    raw_ts = pc.if_else(pc.equal(raw_ts, ""), pa.scalar(None, pa.string()), raw_ts)
    timestamps = raw_ts.cast(pa.int64())
    return LineGroup(
        line.table, rows[matched.to_numpy(zero_copy_only=False)], tags, fields, timestamps
    )


def _fast_shape(text: str) -> ParsedLine | None:
    """The parsed line if its shape can be matched columnar (its own pattern matches it)."""
    try:
        line = parse_line(text)
    except LineProtocolError:
        return None
    if len(line.tags) + len(line.fields) > MAX_SHAPE_COLUMNS:
        return None
    return line if re.match(_shape_pattern(line), text) else None


def _shape_key(line: ParsedLine) -> tuple[object, ...]:
    """Lines with equal keys (in the same order) and kinds form one group."""
    return (
        line.table,
        tuple(key for key, _ in line.tags),
        tuple((key, kind) for key, kind, _ in line.fields),
    )


def _groups_from_lines(parsed: Iterable[tuple[int, ParsedLine]]) -> list[LineGroup]:
    """Group per-line results by shape and turn each group into arrays."""
    by_shape: dict[tuple[object, ...], list[tuple[int, ParsedLine]]] = {}
    for row, line in parsed:
        by_shape.setdefault(_shape_key(line), []).append((row, line))
    groups = []
    for (table, tag_keys, field_kinds), members in by_shape.items():
        tag_columns: dict[str, list[str]] = {key: [] for key in tag_keys}
        field_columns: dict[str, list[object]] = {key: [] for key, _ in field_kinds}
        for _, line in members:
            for key, value in line.tags:
                tag_columns[key].append(value)
            for key, _, value in line.fields:
                field_columns[key].append(value)
        groups.append(
            LineGroup(
                table,
                np.array([row for row, _ in members], dtype=np.int64),
                {key: pa.array(values, pa.string()) for key, values in tag_columns.items()},
                {
                    key: (kind, pa.array(field_columns[key], kind.arrow_type))
                    for key, kind in field_kinds
                },
                pa.array([line.timestamp for _, line in members], pa.int64()),
            )
        )
    return groups


def parse(body: bytes) -> Parsed:
    """Parse a whole request body into shape groups and per-line errors."""
    lines = _split_body(body)
    indented = pc.or_(pc.starts_with(lines, " "), pc.starts_with(lines, "\t"))
    stripped = pc.utf8_ltrim(lines, characters=" \t\n") if pc.any(indented).as_py() else lines
    content = pc.and_(
        pc.greater(pc.binary_length(stripped), 0),
        pc.invert(pc.starts_with(stripped, "#")),
    )
    rows = np.flatnonzero(content.to_numpy(zero_copy_only=False))
    candidates = stripped.take(pa.array(rows)) if len(rows) < len(lines) else stripped
    groups: list[LineGroup] = []
    # Lines in front of `head` are left to the per-line parser (their shape is not columnar).
    head = 0
    for _ in range(MAX_SHAPES):
        first = None
        while first is None and head < len(candidates) and head < MAX_PROBES:
            first = _fast_shape(candidates[head].as_py())
            head += first is None
        if first is None:
            break
        group = _columnar_group(first, candidates.slice(head), rows[head:])
        if group is None:
            break
        groups.append(group)
        left = np.ones(len(rows), dtype=bool)
        left[np.searchsorted(rows, group.rows)] = False
        rows = rows[left]
        candidates = candidates.filter(pa.array(left))
        if len(group.rows) < MIN_SHAPE_LINES:
            break  # the rest is too varied for a regex pass per shape to pay off
    errors: list[LineError] = []
    good: list[tuple[int, ParsedLine]] = []
    for row, text in zip(rows.tolist(), candidates.to_pylist(), strict=True):
        try:
            good.append((row, parse_line(text)))
        except LineProtocolError as error:
            errors.append(LineError(row + 1, str(error), original_line(lines[row].as_py())))
    groups.extend(_groups_from_lines(good))
    return Parsed(lines, groups, errors)


# ---------------------------------------------------------------------------------------------
# Timestamps: precision, Core's "auto" guess, and server time for lines without one.

PRECISION_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_PRECISION_NAMES = {
    "second": "s",
    "s": "s",
    "millisecond": "ms",
    "ms": "ms",
    "microsecond": "us",
    "us": "us",
    "u": "us",
    "µ": "us",
    "nanosecond": "ns",
    "ns": "ns",
    "n": "ns",
    "auto": "auto",
}


def precision_name(value: str | None, default: str) -> str:
    """Normalise a precision parameter ('second', 'ms', 'u', 'auto', ...) or raise ValueError.

    >>> precision_name("millisecond", "ns"), precision_name(None, "auto")
    ('ms', 'auto')
    """
    if value is None or value == "":
        return default
    try:
        return _PRECISION_NAMES[value]
    except KeyError:
        raise ValueError(f"invalid precision '{value}'") from None


def _auto_multiplier(values: np.ndarray) -> np.ndarray:
    """Core's guess from magnitude: seconds, ms, us or ns, whichever puts it near now."""
    seconds = np.abs(values) // 10**9
    return np.select(
        [seconds < 5, seconds < 5_000, seconds < 5_000_000],
        [10**9, 10**6, 10**3],
        default=1,
    ).astype(np.int64)


def to_nanoseconds(
    parsed: Parsed, precision: str, now_ns: int
) -> list[tuple[LineGroup, np.ndarray]]:
    """Each group with its line times in ns; lines whose time overflows become errors."""
    result = []
    for group in parsed.groups:
        raw = group.timestamps
        present = raw.is_valid().to_numpy(zero_copy_only=False)
        values = raw.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        if precision == "auto":
            multiplier = _auto_multiplier(values)
        else:
            multiplier = np.full(len(values), PRECISION_NS[precision], dtype=np.int64)
        limit = np.iinfo(np.int64).max // multiplier
        # Compared on both sides: np.abs of the smallest int64 overflows to itself.
        fits = (values <= limit) & (values >= -limit)
        times = np.where(present, values * np.where(fits, multiplier, 1), now_ns)
        bad = present & ~fits
        if bad.any():
            for row in group.rows[bad].tolist():
                parsed.errors.append(parsed.error_for(row, "timestamp out of range"))
            group = group.take(~bad)
            times = times[~bad]
        if len(group.rows):  # every line of the group may have been refused
            result.append((group, times))
    return result
