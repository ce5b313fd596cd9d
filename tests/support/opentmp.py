"""A temporary directory other users can reach (pytest's own live under a 0700 dir).

Tests that run deliveries as another user (nobody) need the paths they write to be
reachable by that user.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def open_tmp(prefix: str = "mw-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
