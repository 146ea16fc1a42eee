"""The data model InfluxDB 3 Core exposes, in one place: column kinds, Arrow types, Core's names.

Every table has a `time` column (timestamp[ns], never null), tag columns stored as
dictionary<int32, utf8>, and field columns of one of five types. A column's kind is fixed by
the first write that creates it; later writes with another kind are rejected per line with
Core's message, which names the kinds as `iox::column_type::...`.

>>> Kind.FLOAT.iox_name
'iox::column_type::field::float'
>>> Kind.from_arrow(pa.dictionary(pa.int32(), pa.string()))
<Kind.TAG: 'tag'>
>>> sorted_schema({"b": Kind.FLOAT, "a": Kind.TAG}).names
['a', 'b', 'time']
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import pyarrow as pa

TIME = "time"
TAG_TYPE = pa.dictionary(pa.int32(), pa.string())
TIME_TYPE = pa.timestamp("ns")


class Kind(enum.Enum):
    """What a column holds; the value is the name used in the catalog file."""

    TAG = "tag"
    FLOAT = "float"
    INTEGER = "integer"
    UINTEGER = "uinteger"
    STRING = "string"
    BOOLEAN = "boolean"
    TIME = "time"

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self]

    @property
    def iox_name(self) -> str:
        """Core's spelling of the kind, as it appears in type-conflict messages."""
        if self is Kind.TAG:
            return "iox::column_type::tag"
        if self is Kind.TIME:
            return "iox::column_type::timestamp"
        return f"iox::column_type::field::{self.value}"

    @classmethod
    def from_arrow(cls, data_type: pa.DataType) -> Kind:
        for kind, arrow_type in _ARROW_TYPES.items():
            if arrow_type == data_type:
                return kind
        raise ValueError(f"no column kind stores Arrow type {data_type}")


_ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.TAG: TAG_TYPE,
    Kind.FLOAT: pa.float64(),
    Kind.INTEGER: pa.int64(),
    Kind.UINTEGER: pa.uint64(),
    Kind.STRING: pa.string(),
    Kind.BOOLEAN: pa.bool_(),
    Kind.TIME: TIME_TYPE,
}


def sorted_schema(columns: Mapping[str, Kind]) -> pa.Schema:
    """The Arrow schema of a table: its columns sorted by name, `time` not nullable."""
    names = sorted({*columns, TIME})
    return pa.schema(
        [
            pa.field(TIME, TIME_TYPE, nullable=False)
            if name == TIME
            else pa.field(name, columns[name].arrow_type)
            for name in names
        ]
    )


def type_conflict(column: str, expected: Kind, got: Kind) -> str:
    """Core's per-line message for a column written with another kind than it has."""
    return (
        f"invalid column type for column '{column}', "
        f"expected {expected.iox_name}, got {got.iox_name}"
    )
