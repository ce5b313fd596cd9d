"""What a process of the daemon says about itself to the kernel (Linux ``prctl``).

``name`` sets the name ``ps -o comm``, ``top`` and ``/proc/PID/comm`` show (at most 15
bytes): the privileged helper is ``mailwright-priv``, worker N ``mailwright-wN``.
``die_with_parent`` asks for a signal when the parent process dies, so that a worker
never outlives the supervisor that would restart it. Both are best effort: elsewhere
than on Linux they do nothing. Trusts its caller; reads no settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

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
