"""Find and stop processes that outlived the component that started them (`make run`, Linux).

honcho signals each component's process group, but a component may start a child in a
session of its own (the Mage wrapper does, for `mage start` and its scheduler): when honcho
has to SIGKILL such a component, the child survives, holds honcho's output pipe open, and
honcho waits for it forever. So the launcher makes itself a *child subreaper*
(PR_SET_CHILD_SUBREAPER): orphans of every component are re-parented to it instead of to init,
which makes them easy to find (their parent is the launcher) and to stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Collection
from pathlib import Path

log = logging.getLogger("localsystem.run")

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants (Linux only); True when it worked."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone.

    >>> state, parent = _stat(os.getpid()); parent == os.getppid()
    True
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces or parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _children(exclude: Collection[int]) -> list[tuple[int, str]]:
    """(pid, state) of each child of this process, other than `exclude`."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        stat = _stat(int(entry))
        if stat is not None and stat[1] == me:
            found.append((int(entry), stat[0]))
    return found


def children(exclude: Collection[int] = ()) -> list[int]:
    """Live (not zombie) children of this process, other than `exclude`."""
    return [pid for pid, state in _children(exclude) if state != "Z"]


def reap(exclude: Collection[int] = ()) -> None:
    """Collect adopted orphans that have exited.

    A subreaper must do what init would: an exited orphan stays a zombie until its new parent
    collects it, and a zombie still counts as alive for `kill(pid, 0)`, which is how the
    components check that their own children are gone. `exclude` are honcho's workers, whose
    exit multiprocessing collects itself.
    """
    for pid, state in _children(exclude):
        if state == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def stop_orphans(exclude: Collection[int], grace: float = 5.0, rounds: int = 5) -> list[int]:
    """SIGTERM each orphan's process group, SIGKILL what is left after `grace` seconds.

    `exclude` are the children that are not orphans (honcho's workers). Stopping an
    orphan can orphan its own children, so this repeats a few rounds. Returns the pids seen.
    """
    own_group = os.getpgrp()
    seen: list[int] = []
    for _ in range(rounds):
        orphans = children(exclude)
        if not orphans:
            break
        seen += orphans
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in orphans:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    group = os.getpgid(pid)
                    if group != own_group:
                        os.killpg(group, sig)
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                reap(exclude)
                orphans = [p for p in orphans if (s := _stat(p)) is not None and s[0] != "Z"]
                if not orphans:
                    break
                time.sleep(0.1)
            if not orphans:
                break
    return seen
