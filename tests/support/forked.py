"""Code run in a forked child, as a worker process of the daemon is (shared memory made
before the fork is seen by both). Trusts its callers; reads no settings."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable


def child(action: Callable[[], None]) -> int:
    """Fork; the child runs ``action`` and exits 0, or 1 with the traceback on stderr.
    Returns the child's pid to the parent."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            action()
            code = 0
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(code)
    return pid


def in_worker(action: Callable[[], None]) -> None:
    """Run ``action`` in a forked process and wait for it; it must succeed."""
    _, status = os.waitpid(child(action), 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked worker failed"
