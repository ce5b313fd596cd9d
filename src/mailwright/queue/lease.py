"""Who holds a lease: owner names for queue runners, and telling whether one is dead.

A lease owner is ``host:pid:start:n``: the host name, the process id, when the process
started (the kernel's boot id and the process start time in clock ticks since boot,
from ``/proc``; elsewhere the wall clock at import) and a counter for the runners of
one process. The process part is made once per process, so a restarted daemon is a new
owner even with the same pid. ``owner_is_dead`` tells a lease left by a process of this
host that no longer runs (its pid is gone, is a zombie, or is another process now, or the
host has rebooted since); for an owner on another host, or one it cannot parse, it cannot tell
and answers False: such leases are left to expire.

Trusts: ``/proc`` of this host. Settings read: none.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from functools import cache

_counter = itertools.count(1)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip().replace("-", "")[:12]
    except OSError:
        return ""


def _start_ticks(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot; None: no such process,
    only its zombie, or no ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields and fields[0] in (b"Z", b"X"):
        # a zombie has exited and holds no work; it stays in /proc until its parent (or,
        # after the parent was killed too, whichever process adopts it) waits for it
        return None
    return fields[19].decode("ascii") if len(fields) > 19 else None


@cache
def process_id() -> str:
    """``host:pid:start`` of this process (made once)."""
    ticks = _start_ticks(os.getpid())
    start = f"{_boot_id()}.{ticks}" if ticks is not None else f"t{time.time_ns()}"
    return f"{socket.gethostname()}:{os.getpid()}:{start}"


def new_owner() -> str:
    """A lease owner name for one queue runner of this process."""
    if process_id().split(":")[1] != str(os.getpid()):
        process_id.cache_clear()  # a forked child is another process: a new name
    return f"{process_id()}:{next(_counter)}"


def owner_is_dead(owner: str) -> bool:
    """Whether ``owner`` names a runner of a process of this host that no longer runs."""
    parts = owner.split(":")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False  # another host's, or not ours to judge: it expires
    pid, start = int(parts[1]), parts[2]
    if pid == os.getpid():
        return start != process_id().split(":")[2]
    boot, dot, ticks = start.partition(".")
    if not dot or not ticks.isdigit():
        return False  # made without /proc: cannot tell
    if boot != _boot_id():
        return True  # the host has rebooted since
    return _start_ticks(pid) != ticks
