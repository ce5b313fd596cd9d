"""What a process of the daemon says about itself to the kernel (Linux ``prctl``).

``name`` sets the name ``ps -o comm``, ``top`` and ``/proc/PID/comm`` show (at most 15
bytes): the privileged helper is ``mailwright-priv``, worker N ``mailwright-wN``.
``die_with_parent`` asks for a signal when the parent process dies, so that a worker
never outlives the supervisor that would restart it. Both are best effort: elsewhere
than on Linux they do nothing. ``keep_to_cpu`` keeps a worker on one CPU, and
``spawn_anywhere`` gives the programs it starts the CPUs it had before (a child takes
the CPUs of the thread that starts it); ``spread_out`` lets every thread of the process
run anywhere again for a while, ``keep_home`` keeps them to that one CPU again.
``run_as_batch`` puts the calling thread under ``SCHED_BATCH``. Trusts its caller; reads
no settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def _prctl(option: int, value: int | bytes) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        arg = ctypes.c_char_p(value) if isinstance(value, bytes) else ctypes.c_ulong(value)
        libc.prctl(option, arg, 0, 0, 0)


def name(text: bytes) -> None:
    """The process's short name (15 bytes at most; longer is cut)."""
    _prctl(PR_SET_NAME, text[:15])


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """Get ``sig`` when the parent dies; at once if ``parent`` has died already."""
    _prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), sig)


_spawn_cpus: set[int] | None = None  # what programs this process starts may run on
_home: int | None = None  # the CPU of keep_to_cpu
_at_home = False  # every thread is kept to _home now


def keep_to_cpu(cpu: int) -> None:
    """This process runs on ``cpu`` only: the calling thread now, threads it starts
    later too (call it before there are others). Raises OSError when the kernel refuses."""
    global _spawn_cpus, _home, _at_home
    everywhere = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    _spawn_cpus, _home, _at_home = everywhere, cpu, True


def keep_home() -> None:
    """Every thread of the process back on the CPU of ``keep_to_cpu`` (if it was called)."""
    global _at_home
    if _home is not None and not _at_home:
        _at_home = True
        _every_thread({_home})


def spread_out() -> None:
    """Every thread of the process may run on the CPUs it had before ``keep_to_cpu``."""
    global _at_home
    if _spawn_cpus is not None and _at_home:
        _at_home = False
        _every_thread(_spawn_cpus)


def _every_thread(cpus: set[int]) -> None:
    # a thread started later takes the CPUs of the thread that starts it
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # it ended meanwhile, or a cgroup refuses
                os.sched_setaffinity(int(task), cpus)


def run_as_batch() -> None:
    """The calling thread under ``SCHED_BATCH`` (Linux; elsewhere, as it was): its
    wake-ups no longer preempt other threads, CPU-bound work as it is for the rest."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return
    with contextlib.suppress(OSError):  # a sandbox may refuse it: nothing changes then
        os.sched_setscheduler(0, policy, os.sched_param(0))


@contextlib.contextmanager
def spawn_anywhere() -> Iterator[None]:
    """Around starting a program: the calling thread has the CPUs the process had before
    ``keep_to_cpu`` for the moment, so that the program is not kept to one CPU too."""
    wide = _spawn_cpus
    if wide is None:
        yield
        return
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, wide)
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)
