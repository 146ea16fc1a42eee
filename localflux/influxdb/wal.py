"""Write-ahead log: numbered segment files of length-prefixed, checksummed records.

A write is acknowledged only after its record is in the current segment and (unless the
client asked for `no_sync`) fsynced. Compaction rotates to a new segment, persists the data
of the closed ones as Parquet, then deletes them. After a crash, replay reads every remaining
segment; a record cut short by the crash (it was never acknowledged) ends the segment and is
truncated away.

Record layout: magic `LFW1`, payload length (u64 LE), CRC32 of the payload (u32 LE), payload.

>>> import tempfile, pathlib
>>> wal = Wal.open(pathlib.Path(tempfile.mkdtemp()))
>>> wal.append(b"first", sync=True); wal.append(b"second", sync=False)
>>> closed = wal.rotate()
>>> [list(read_segment(path)) for number, path in segments(wal.directory) if number <= closed]
[[b'first', b'second']]
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from magic_common.atomic import fsync_dir

log = logging.getLogger(__name__)

MAGIC = b"LFW1"
_HEADER = struct.Struct("<4sQI")
SUFFIX = ".wal"


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"{number:012d}{SUFFIX}"


def segments(directory: Path) -> list[tuple[int, Path]]:
    """The segment files in `directory`, oldest first."""
    found = []
    for path in directory.glob(f"*{SUFFIX}"):
        try:
            found.append((int(path.stem), path))
        except ValueError:
            continue
    return sorted(found)


def read_segment(path: Path) -> Iterator[bytes]:
    """Every intact record; truncates the file after the last one if its tail is torn."""
    with open(path, "rb") as handle:
        data = handle.read()
    offset = 0
    while offset + _HEADER.size <= len(data):
        magic, length, crc = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + length
        if magic != MAGIC or end > len(data):
            break
        payload = data[offset + _HEADER.size : end]
        if zlib.crc32(payload) != crc:
            break
        yield payload
        offset = end
    if offset < len(data):
        log.warning("%s: dropping %d bytes of a torn record at the end", path, len(data) - offset)
        with open(path, "r+b") as handle:
            handle.truncate(offset)
            os.fsync(handle.fileno())


class Wal:
    """The open segment of one database's log."""

    def __init__(self, directory: Path, number: int) -> None:
        self.directory = directory
        self.number = number
        self.bytes = 0
        self._file = open(segment_path(directory, number), "ab")  # noqa: SIM115 - held open
        fsync_dir(directory)

    @classmethod
    def open(cls, directory: Path, after: int = 0) -> Wal:
        """A new segment numbered after every existing one (and after `after`)."""
        directory.mkdir(parents=True, exist_ok=True)
        existing = segments(directory)
        last = max([after] + [number for number, _ in existing])
        return cls(directory, last + 1)

    def append(self, payload: bytes, *, sync: bool) -> None:
        self._file.write(_HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)))
        self._file.write(payload)
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())
        self.bytes += _HEADER.size + len(payload)

    def rotate(self) -> int:
        """Close the current segment (synced) and start the next; returns the closed number."""
        closed = self.number
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.number += 1
        self.bytes = 0
        self._file = open(segment_path(self.directory, self.number), "ab")  # noqa: SIM115
        fsync_dir(self.directory)
        return closed

    def delete_through(self, number: int) -> None:
        """Remove closed segments up to `number`: their data is in Parquet now."""
        for segment, path in segments(self.directory):
            if segment <= number and segment != self.number:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def encode_tables(tables: dict[int, pa.Table]) -> bytes:
    """A WAL payload: a JSON header naming table ids and lengths, then one IPC stream each."""
    streams = []
    for table in tables.values():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        streams.append(sink.getvalue())
    header = json.dumps(
        [[table_id, stream.size] for table_id, stream in zip(tables, streams, strict=True)]
    ).encode()
    return b"".join([struct.pack("<I", len(header)), header, *[s.to_pybytes() for s in streams]])


def decode_tables(payload: bytes) -> dict[int, pa.Table]:
    """The tables of a payload written by `encode_tables`, by table id."""
    (length,) = struct.unpack_from("<I", payload)
    offset = 4 + length
    tables = {}
    for table_id, size in json.loads(payload[4:offset]):
        tables[table_id] = pa.ipc.open_stream(
            pa.py_buffer(payload[offset : offset + size])
        ).read_all()
        offset += size
    return tables
