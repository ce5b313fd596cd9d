"""What every fuzz target shares: instrumentation only when fuzzing, and the libFuzzer loop.

A target is a script ``fuzz/<name>.py`` with a ``check(data: bytes) -> None`` that
raises (an ``AssertionError`` for a broken invariant, anything else for a crash) when
the code under test misbehaves on ``data``. Run as a script it fuzzes with atheris
(``python fuzz/<name>.py fuzz/corpus/<name> -max_total_time=60``: any libFuzzer
flag); imported (by ``tests/unit/fuzz/test_corpus.py``) it is plain Python, so the
corpus replays fast and without atheris. Importing this module puts the checkout's
``src`` first on ``sys.path``, so the code fuzzed is this tree's, not an installed copy.
Reads no settings.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

_SRC = str(Path(__file__).resolve().parent.parent / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)


def instrumented(module_name: str) -> contextlib.AbstractContextManager[Any]:
    """Around a target's ``mailwright`` imports: coverage instrumentation when it runs as
    ``__main__`` (fuzzing), nothing when it is imported (corpus replay)."""
    if module_name != "__main__":
        return contextlib.nullcontext()
    import atheris  # type: ignore[import-untyped]

    return atheris.instrument_imports(include=["mailwright"])  # type: ignore[no-any-return]


def fuzz(check: Callable[[bytes], None]) -> None:
    """Hand ``check`` to libFuzzer with the command line's corpus directories and flags."""
    import atheris

    atheris.Setup(sys.argv, check)
    atheris.Fuzz()
