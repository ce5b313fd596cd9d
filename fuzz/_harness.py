"""What every fuzz target shares: instrumentation only when fuzzing, and the libFuzzer loop.

A target is a script ``fuzz/<name>.py`` with a ``check(data: bytes) -> None`` that
raises (an ``AssertionError`` for a broken invariant, anything else for a crash) when
the code under test misbehaves on ``data``. Run as a script it fuzzes with atheris
(``python fuzz/<name>.py fuzz/corpus/<name> -max_total_time=60``: any libFuzzer
flag); imported (by ``tests/unit/fuzz/test_corpus.py``) it is plain Python, so the
corpus replays fast and without atheris. Importing this module puts the checkout's
``src`` first on ``sys.path``, so the code fuzzed is this tree's, not an installed copy.
libFuzzer's ``-merge=1`` (corpus minimisation, ``make fuzz-merge``), ``-fork`` and
``-jobs`` run the target again as a child, through the shell, by its ``argv[0]``: that
is made this interpreter and this script, so the children run with the same Python
(the venv's, with atheris) whether or not the file is executable. Reads no settings.
"""

from __future__ import annotations

import contextlib
import shlex
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

    atheris.Setup(relaunchable(sys.argv), check)
    atheris.Fuzz()


def relaunchable(argv: list[str]) -> list[str]:
    """``argv`` with ``argv[0]`` made a shell command that runs this script again with this
    interpreter: libFuzzer joins a child's arguments with spaces and hands them to
    system(3), so one argument may hold the two words (quoted)."""
    script = str(Path(argv[0]).resolve())
    return [f"{shlex.quote(sys.executable)} {shlex.quote(script)}", *argv[1:]]
