"""Replays the fuzz corpora (``fuzz/corpus/<target>/*``) through their targets' checks.

Each ``fuzz/<target>.py`` is imported as plain Python (no atheris, no instrumentation)
and every file of its corpus, seeds, inputs the fuzzer kept and crash reproducers alike,
goes through its ``check``: a corpus input that makes the code raise or break an
invariant fails here, in ``make test``, without fuzzing. Inputs under
``fuzz/known/<target>/`` reproduce bugs found in code owned elsewhere and not fixed yet:
they must still fail (strict xfail), so a fix is noticed and the input moves to the
corpus.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parents[3] / "fuzz"
TARGETS = sorted(p.stem for p in FUZZ.glob("[a-z]*.py"))
KNOWN = sorted(FUZZ.glob("known/*/*"))


def load(target: str) -> ModuleType:
    if str(FUZZ) not in sys.path:
        sys.path.append(str(FUZZ))  # for the targets' ``_harness``
    name = f"mailwright_fuzz_{target}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FUZZ / f"{target}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def failures(check: Callable[[bytes], None], inputs: list[Path]) -> list[str]:
    out = []
    for path in inputs:
        try:
            check(path.read_bytes())
        except Exception as exc:  # any exception is what the fuzzer calls a crash
            out.append(f"{path.relative_to(FUZZ)}: {type(exc).__name__}: {str(exc)[:300]}")
    return out


def test_every_target_has_a_corpus_and_says_what_it_checks() -> None:
    assert TARGETS, "no fuzz targets found"
    for target in TARGETS:
        module = load(target)
        assert module.__doc__ and "Checks:" in module.__doc__, target
        assert len(list((FUZZ / "corpus" / target).iterdir())) >= 10, target


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_replays_cleanly(target: str) -> None:
    inputs = sorted((FUZZ / "corpus" / target).iterdir())
    problems = failures(load(target).check, inputs)
    assert not problems, "\n".join(problems)


if KNOWN:  # no test at all (rather than an empty parameter set) when every bug is fixed

    @pytest.mark.parametrize("path", KNOWN, ids=[str(p.relative_to(FUZZ)) for p in KNOWN])
    @pytest.mark.xfail(strict=True, reason="a known bug in code owned elsewhere")
    def test_known_bugs_still_fail(path: Path) -> None:
        assert not failures(load(path.parent.name).check, [path])
