"""Every module path and module name that docs/*.md mention exists (issue 13 section 6).

Three forms are checked: paths under the package (``src/mailwright/queue/store.py``, or
``queue/store.py`` in a backticked name as docs/architecture.md writes them, with
``{a,b}.py`` and ``dir/*`` expanded), ``module.function`` after such a path
(``daemon/delivery.build_scheduler``), test paths (``tests/unit/...``), and dotted
names (``mailwright.routing.resolution.verify_lines``: a module, then attributes).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "src" / "mailwright"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LAYERS = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")

# Paths the docs name that are not source files: places in the queue directory at run time.
RUNTIME_PATHS = {"queue/tmp/"}
# Dotted names that are not modules: files, a unit name, a host name, an entry point group.
NOT_MODULES = {"toml", "pid", "service", "log", "localhost", "filters"}

PATH = re.compile(
    r"(?<![\w/.-])(?:src/mailwright/)?((?:" + "|".join(LAYERS) + r")/[\w/{},*.-]*[\w/*}])"
)
TEST_PATH = re.compile(r"(?<![\w/.-])(tests/[\w/.-]*[\w/])")
DOTTED = re.compile(r"(?<![\w.])mailwright((?:\.\w+)+)")


def mentions(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    return sorted(
        {(doc.name, m.group(1)) for doc in DOCS for m in pattern.finditer(doc.read_text())}
    )


def expand(path: str) -> list[str]:
    """``a/{b,c}.py`` -> ``a/b.py``, ``a/c.py``."""
    match = re.search(r"\{([^}]*)\}", path)
    if match is None:
        return [path]
    return [
        expanded
        for part in match.group(1).split(",")
        for expanded in expand(path[: match.start()] + part + path[match.end() :])
    ]


def source_exists(path: str) -> bool:
    if path in RUNTIME_PATHS:
        return True
    if path.endswith("/*") or path.endswith("/"):
        return (PACKAGE / path.rstrip("/*")).is_dir()
    if path.endswith(".py"):
        return (PACKAGE / path).is_file()
    module, _, attribute = path.rpartition(".")  # daemon/delivery.build_scheduler
    if (PACKAGE / f"{module}.py").is_file():
        dotted = "mailwright." + module.replace("/", ".")
        return hasattr(importlib.import_module(dotted), attribute)
    return (PACKAGE / path).is_dir()


def dotted_exists(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = "/".join(parts[:cut])
        if (PACKAGE / f"{module}.py").is_file() or (PACKAGE / module / "__init__.py").is_file():
            found: object = importlib.import_module("mailwright." + ".".join(parts[:cut]))
            for attribute in parts[cut:]:
                if not hasattr(found, attribute):
                    return False
                found = getattr(found, attribute)
            return True
    return False


def test_the_docs_mention_modules() -> None:
    """The patterns find something: a regex that matches nothing would check nothing."""
    assert len(mentions(PATH)) > 50 and mentions(DOTTED) and mentions(TEST_PATH)


@pytest.mark.parametrize(("doc", "path"), mentions(PATH))
def test_source_paths_exist(doc: str, path: str) -> None:
    missing = [each for each in expand(path) if not source_exists(each)]
    assert not missing, f"docs/{doc} names {missing}, not under src/mailwright"


@pytest.mark.parametrize(("doc", "path"), mentions(TEST_PATH))
def test_test_paths_exist(doc: str, path: str) -> None:
    assert (ROOT / path).exists(), f"docs/{doc} names {path}, which does not exist"


@pytest.mark.parametrize(("doc", "name"), mentions(DOTTED))
def test_module_names_exist(doc: str, name: str) -> None:
    if name.lstrip(".") in NOT_MODULES:
        return
    assert dotted_exists(name.lstrip(".")), f"docs/{doc} names mailwright{name}"
