"""Peers the tests drive: a missing one is a visible skip on a workstation, a failure in CI.

Many tests need something outside Python: a program (dnsmasq, smtp-sink, Dovecot, OpenDKIM,
swaks, miltertest, spamd, chromium, ...), an optional Python package (pymilter, psycopg), root,
network namespaces, a tmpfs mount. On a developer's machine without one, such a test is
skipped with a reason (``-ra`` prints it). With ``CI=true`` in the environment (``.ci/run`` and
the usual CI services set it), a missing peer fails the test instead, so a CI machine that
lacks peers cannot go quietly green with whole modules skipped.

Never write ``pytest.skip``, ``pytest.mark.skipif`` or ``pytest.importorskip`` for a peer in
tests/; use one of these:

- a whole module, class or test::

      from tests.support.peers import peer
      pytestmark = peer("dnsmasq", dnsmasq_available(), "dnsmasq-base is not installed")

      @peer("root", os.geteuid() == 0, "mounts a tmpfs")
      def test_disk_full(...): ...

  (a ``peer`` mark is checked when the test is set up, by the hooks that tests/conftest.py
  imports from here; the module still imports and collects without the peer)

- inside a test or fixture, when the need is found out there, or for a cross-check at the
  end of a test (put the check after the assertions that need no peer)::

      require_peer("spamd", shutil.which("spamd") is not None, "spamassassin's spamd is missing")

- an optional Python package: ``psycopg = require_module("psycopg", "pip install '.[dev]'")``;
  for a module-level mark, ``peer("pymilter", has_module("Milter"), "...")``.

``name`` is what is missing, ``why`` how to get it or why it is needed; both appear in the
skip reason and the failure. What it trusts: the ``CI`` environment variable (``true``,
``1`` or ``yes``, any case, means CI). Reads no settings.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest

CI_VALUES = frozenset({"true", "1", "yes"})
MARK = "peer"


def in_ci() -> bool:
    """True when ``CI`` says this run is continuous integration."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def missing(name: str, why: str) -> NoReturn:
    """Skip the current test (or module, at import), or fail it under CI=true."""
    reason = f"needs {name}: {why}"
    if in_ci():
        pytest.fail(
            f"{reason} (CI=true: a missing test peer is a failure; "
            "scripts/install-test-deps.sh installs the Debian ones)",
            pytrace=False,
        )
    pytest.skip(reason, allow_module_level=True)


def require_peer(name: str, available: bool, why: str) -> None:
    """Go on if ``available``; else skip (workstation) or fail (CI) the current test."""
    if not available:
        missing(name, why)


def require_module(module: str, why: str) -> ModuleType:
    """Import an optional package, or skip/fail like ``require_peer``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing(f"the Python package {module}", f"{why} ({exc})")


def has_module(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def have_programs(*programs: str) -> bool:
    """Every program is on PATH (or, given as a path, exists and is executable)."""
    return all(shutil.which(p) is not None for p in programs)


def is_root() -> bool:
    return os.geteuid() == 0


def peer(name: str, available: bool, why: str) -> pytest.MarkDecorator:
    """A mark for ``pytestmark`` or a decorator: ``require_peer`` at the test's set-up."""
    return pytest.mark.peer(name, available, why)


# ---- the hooks (tests/conftest.py imports them) -----------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARK}(name, available, why): needs a test peer (skipped without it; failed if CI=true)",
    )


@pytest.hookimpl(tryfirst=True)  # before any fixture starts, like pytest's own skip marks
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(MARK):
        name, available, why = mark.args
        require_peer(name, bool(available), why)
