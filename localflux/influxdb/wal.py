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

import contextlib
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
    """The open segment of one database's log.

    A record is written with plain `os.write` calls and no buffer, so a failed write (a full
    disk, a file-size limit) leaves nothing queued to be written later: the segment is cut
    back to its last whole record and the error raised, so the next write after space frees
    up does not follow a torn record (which would end the log on replay and lose it).
    """

    def __init__(self, directory: Path, number: int) -> None:
        self.directory = directory
        self.number = number
        self._fd = _open_segment(directory, number)
        self._size = os.fstat(self._fd).st_size

    @classmethod
    def open(cls, directory: Path, after: int = 0) -> Wal:
        """A new segment numbered after every existing one (and after `after`)."""
        directory.mkdir(parents=True, exist_ok=True)
        existing = segments(directory)
        last = max([after] + [number for number, _ in existing])
        return cls(directory, last + 1)

    def append(self, payload: bytes, *, sync: bool) -> None:
        """Write one record (and fsync it unless `sync` is off); OSError leaves the segment
        as it was before the call."""
        start = self._size
        try:
            _write_all(self._fd, _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)))
            _write_all(self._fd, payload)
            if sync:
                os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):  # cutting a file back needs no space
                os.ftruncate(self._fd, start)
            raise
        self._size = start + _HEADER.size + len(payload)

    def rotate(self) -> int:
        """Close the current segment (synced) and start the next; returns the closed number.
        On an error the current segment stays open for writes."""
        os.fsync(self._fd)
        fresh = _open_segment(self.directory, self.number + 1)
        os.close(self._fd)
        closed = self.number
        self.number += 1
        self._fd = fresh
        self._size = 0
        return closed

    def delete_through(self, number: int) -> None:
        """Remove closed segments up to `number`: their data is in Parquet now."""
        for segment, path in segments(self.directory):
            if segment <= number and segment != self.number:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def _open_segment(directory: Path, number: int) -> int:
    fd = os.open(
        segment_path(directory, number),
        os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
        0o644,
    )
    fsync_dir(directory)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
