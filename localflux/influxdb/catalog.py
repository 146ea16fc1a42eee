"""The catalog: databases, tables and column kinds, persisted as one JSON file.

Tables and databases get numeric ids so their directories never depend on names (a table
name can hold any character; a database dropped and created again must not meet its old
files). A table's `columns` dict is replaced, never mutated, when the table grows, so a
query holding a reference sees one consistent schema.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "catalog.json"
>>> catalog = Catalog.load(path)
>>> db = catalog.create_database("machines")
>>> table = catalog.add_columns(db, "cpu", {"host": Kind.TAG, "usage": Kind.FLOAT})
>>> catalog.save()
>>> Catalog.load(path).databases["machines"].tables["cpu"].columns["usage"]
<Kind.FLOAT: 'float'>
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from localflux.influxdb.model import Kind, sorted_schema
from magic_common.atomic import write_atomically

FORMAT_VERSION = 1


@dataclass
class TableDef:
    id: int
    name: str
    columns: Mapping[str, Kind]  # every column but `time`

    def schema(self) -> pa.Schema:
        return sorted_schema(self.columns)

    def tag_names(self) -> list[str]:
        return sorted(name for name, kind in self.columns.items() if kind is Kind.TAG)

    def field_names(self) -> list[str]:
        return sorted(name for name, kind in self.columns.items() if kind is not Kind.TAG)


@dataclass
class DatabaseDef:
    id: int
    name: str
    tables: dict[str, TableDef] = field(default_factory=dict)


class Catalog:
    """In-memory catalog; the caller serialises changes (the store holds its lock)."""

    def __init__(self, path: Path, databases: dict[str, DatabaseDef], next_id: int) -> None:
        self.path = path
        self.databases = databases
        self.next_id = next_id

    @classmethod
    def load(cls, path: Path) -> Catalog:
        if not path.exists():
            return cls(path, {}, 1)
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: unknown catalog format {data.get('format')!r}")
        databases = {}
        for db in data["databases"]:
            tables = {
                t["name"]: TableDef(
                    t["id"], t["name"], {k: Kind(v) for k, v in t["columns"].items()}
                )
                for t in db["tables"]
            }
            databases[db["name"]] = DatabaseDef(db["id"], db["name"], tables)
        return cls(path, databases, data["next_id"])

    def save(self) -> None:
        """Replace the file atomically (write, fsync, rename, fsync the directory)."""
        data = {
            "format": FORMAT_VERSION,
            "next_id": self.next_id,
            "databases": [
                {
                    "id": db.id,
                    "name": db.name,
                    "tables": [
                        {
                            "id": t.id,
                            "name": t.name,
                            "columns": {k: v.value for k, v in sorted(t.columns.items())},
                        }
                        for t in db.tables.values()
                    ],
                }
                for db in self.databases.values()
            ],
        }
        write_atomically(self.path, json.dumps(data, indent=1).encode())

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def create_database(self, name: str) -> DatabaseDef:
        db = DatabaseDef(self._new_id(), name)
        self.databases[name] = db
        return db

    def drop_database(self, name: str) -> DatabaseDef:
        return self.databases.pop(name)

    def add_columns(self, db: DatabaseDef, table: str, columns: Mapping[str, Kind]) -> TableDef:
        """Create the table or add columns to it (kinds were checked by the caller)."""
        existing = db.tables.get(table)
        if existing is None:
            existing = db.tables[table] = TableDef(self._new_id(), table, dict(columns))
        elif not columns.keys() <= existing.columns.keys():
            existing.columns = {**existing.columns, **columns}
        return existing
