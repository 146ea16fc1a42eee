"""Run each query in a forked child process, so that it can be stopped.

DataFusion's Python API cannot cancel a running query from another thread, and a query can
run as long as it likes (`SELECT count(*) FROM range(1000000000000)`) or overflow the native
stack. So every query runs in a child forked from the server: the child inherits the store's
state copy-on-write (the fork happens under the caller's locks, so it sees each write whole
or not at all), computes the answer into an anonymous memory file (memfd), writes one byte to
a pipe and exits. The parent waits for that byte, the time limit and the client, and kills the
child when the time is up or the client has gone; a child that dies without answering (a
crash) becomes an error. A child running longer than `DEMOTE_AFTER` seconds is lowered in CPU
priority, so a heavy query cannot slow the short ones that arrive meanwhile.

The parent must never run DataFusion itself: its thread pool would not exist in the children.
The answer's layout in the memfd is `payload | meta (JSON) | len(meta) as u64`.

Costs, measured by `make bench BENCH=localflux`: a fork and one copy of the answer per query.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib._bootstrap
import json
import logging
import mmap
import os
import queue
import select
import signal
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO

import pyarrow as pa

log = logging.getLogger(__name__)

DEMOTE_AFTER = 1.0
DEMOTED_NICE = 10
_POLL = 0.1
_TRAILER = struct.Struct("<Q")
_PR_SET_PDEATHSIG = 1
_DONE = b"."
# The child ends itself this long after the time limit, should the parent be stuck.
_SELF_DESTRUCT_GRACE = 5


class QueryTimedOut(Exception):
    """The query ran longer than the time limit and was stopped."""


class ClientGone(Exception):
    """The client closed its connection while the query ran; the query was stopped."""


class ProcessFailed(Exception):
    """The query's process ended without an answer (a crash in native code)."""


Work = Callable[[BinaryIO], dict[str, object]]


class Finished:
    """A child's answer: its meta dict and its payload in a memfd (close it when done)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        end = os.fstat(fd).st_size
        (meta_length,) = _TRAILER.unpack(os.pread(fd, _TRAILER.size, end - _TRAILER.size))
        self.size = end - _TRAILER.size - meta_length
        self.meta: dict[str, object] = json.loads(os.pread(fd, meta_length, self.size))

    def buffer(self) -> pa.Buffer:
        """The payload, memory-mapped (no copy); it stays valid after `close`."""
        if not self.size:
            return pa.py_buffer(b"")
        return pa.py_buffer(
            mmap.mmap(
                self._fd, self.size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ
            )
        )

    def send(self, sock: socket.socket) -> None:
        """Send the payload to a socket from the kernel's side (sendfile)."""
        with open(self._fd, "rb", closefd=False) as payload:
            sock.sendfile(payload, 0, self.size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class QueryProcesses:
    """Forks, watches and reaps the query children of one server."""

    def __init__(
        self,
        fork_guard: Callable[[], AbstractContextManager[None]],
        *,
        timeout: float,
        max_running: int,
    ) -> None:
        """`fork_guard` holds every lock a child may take, so none is held by another thread
        in the child's copy of memory; `timeout` 0 means no limit."""
        self.fork_guard = fork_guard
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(max_running)
        self._reap: queue.SimpleQueue[int] = queue.SimpleQueue()
        threading.Thread(target=self._reaper, name="query-reaper", daemon=True).start()

    def run(
        self,
        work: Work,
        *,
        client: socket.socket | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Finished:
        """Run `work(out)` in a child; raise QueryTimedOut, ClientGone or ProcessFailed.

        `work` writes the payload to `out` and returns the meta dict; it runs in the child
        and must catch what it wants to report (anything else is logged there and reported
        as {"error": {"type": "internal"}}). `client` (an HTTP connection) and `cancelled`
        (Flight's call context) tell when the asker has gone.
        """
        deadline = time.monotonic() + self.timeout if self.timeout else None
        if not self._slots.acquire(timeout=None if deadline is None else self.timeout):
            raise QueryTimedOut(self._timeout_message())
        try:
            return self._run(work, deadline, client, cancelled)
        finally:
            self._slots.release()

    def _timeout_message(self) -> str:
        return (
            f"query stopped: it ran longer than {self.timeout:g} s (LOCALFLUX_QUERY_TIMEOUT); "
            "narrow its time range or raise the limit"
        )

    def _run(
        self,
        work: Work,
        deadline: float | None,
        client: socket.socket | None,
        cancelled: Callable[[], bool] | None,
    ) -> Finished:
        answer = os.memfd_create("localflux-query", os.MFD_CLOEXEC)
        done_read, done_write = os.pipe()
        parent = os.getpid()
        try:
            _wait_for_imports()
            with self.fork_guard():
                pid = os.fork()
        except BaseException:
            for fd in (answer, done_read, done_write):
                os.close(fd)
            raise
        if pid == 0:
            _child(work, answer, done_write, parent, self.timeout)
        os.close(done_write)
        pidfd = os.pidfd_open(pid)
        try:
            self._wait(pid, pidfd, done_read, deadline, client, cancelled)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):  # it may have ended by itself
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(answer)
            raise
        finally:
            os.close(done_read)
            os.close(pidfd)
            self._reap.put(pid)
        return Finished(answer)

    def _wait(
        self,
        pid: int,
        pidfd: int,
        done: int,
        deadline: float | None,
        client: socket.socket | None,
        cancelled: Callable[[], bool] | None,
    ) -> None:
        started = time.monotonic()
        demoted = False
        watched = [done, pidfd] + ([client] if client is not None else [])
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise QueryTimedOut(self._timeout_message())
            if not demoted and now - started >= DEMOTE_AFTER:
                _demote(pid)
                demoted = True
            wait = _POLL if deadline is None else min(_POLL, deadline - now)
            ready, _, _ = select.select(watched, [], [], max(wait, 0))
            if done in ready and os.read(done, 1) == _DONE:
                return
            if pidfd in ready:
                _, status = os.waitpid(pid, os.WNOHANG)
                raise ProcessFailed(_ended(status))
            if client is not None and client in ready:
                if _closed(client):
                    raise ClientGone()
                watched.remove(client)  # a pipelined request: nothing to watch any more
            if cancelled is not None and cancelled():
                raise ClientGone()

    def _reaper(self) -> None:
        while True:
            pid = self._reap.get()
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _wait_for_imports(limit: float = 1.0) -> None:
    """Wait (briefly) while another thread is importing a module: a child would inherit that
    module's import lock held by a thread it does not have, and hang on its first import of
    it. The server imports what queries use before the first fork (`Answers.warm_up`), so
    this is a guard for the rare late import, not a normal wait."""
    locks = importlib._bootstrap._module_locks  # type: ignore[attr-defined]
    deadline = time.monotonic() + limit
    while locks and time.monotonic() < deadline:
        time.sleep(0.001)


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return f"the query's process was ended by {name} (a crash in the query engine)"
    return f"the query's process exited with status {os.waitstatus_to_exitcode(status)}"


def _closed(sock: socket.socket) -> bool:
    """Whether a readable socket was closed by its peer (rather than sending more)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _demote(pid: int) -> None:
    """Lower the CPU priority of every thread of a long-running child (Linux nice is per
    thread; threads it starts later inherit it)."""
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, int(tid), DEMOTED_NICE)


# --- in the child ----------------------------------------------------------------------------


def _child(work: Work, answer: int, done: int, parent: int, timeout: float) -> None:
    """Compute, write, signal, exit; never returns, never runs the parent's cleanup."""
    code = 0
    try:
        gc.disable()
        _detach(parent, timeout)
        with open(answer, "wb", closefd=False) as out:
            try:
                meta = work(out)
            except Exception as error:
                log.exception("query failed in its process")
                out.seek(0)
                out.truncate()
                meta = {"error": {"type": "internal", "message": type(error).__name__}}
            encoded = json.dumps(meta).encode()
            out.write(encoded)
            out.write(_TRAILER.pack(len(encoded)))
            out.truncate()  # the payload may have reserved more (posix_fallocate)
        os.write(done, _DONE)
    except BaseException:
        code = 70
    finally:
        os._exit(code)


def _detach(parent: int, timeout: float) -> None:
    """Make the child independent of the parent's resources and die with the parent."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(70)
    if timeout:
        signal.alarm(int(timeout) + _SELF_DESTRUCT_GRACE)
    for fd in _sockets():
        # Replace (not close) inherited sockets, so the parent's close really closes a
        # connection and no fd number is reused under an object that still owns it.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, fd)
        os.close(devnull)


def _sockets() -> Iterator[int]:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                yield fd
