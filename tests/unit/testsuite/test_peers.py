"""A missing test peer fails the run under CI=true and is a visible skip otherwise.

A tiny test module (a ``peer`` mark, ``require_peer`` in a test, ``require_module``) runs in a
fresh pytest subprocess with and without ``CI=true``; scripts/install-test-deps.sh, unable to
install (not root, no sudo), exits 1 under ``CI=true`` and 0 otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.peers import is_root, require_peer

ROOT = Path(__file__).resolve().parents[3]
TINY = """
import pytest
from tests.support.peers import peer, require_module, require_peer

@peer("no-such-peer", False, "made up for this test")
def test_marked():
    pass

def test_required_inside():
    require_peer("another-peer", False, "also made up")

def test_module():
    require_module("no_such_module_for_peers", "made up too")

@peer("python", True, "present")
def test_present():
    require_peer("python again", True, "present")
"""
CONFTEST = "from tests.support.peers import pytest_configure, pytest_runtest_setup  # noqa: F401\n"


def run_tiny(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_tiny.py").write_text(TINY)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsfE", "-p", "no:cacheprovider",
         "--strict-markers", "test_tiny.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_a_missing_peer_fails_under_ci(tmp_path: Path, ci: str) -> None:
    done = run_tiny(tmp_path, ci)
    assert done.returncode == 1, done.stdout + done.stderr
    summary = done.stdout.splitlines()[-1]
    assert re.search(r"\b2 failed, 1 passed, 1 error\b", summary), done.stdout
    for reason in ("needs no-such-peer: made up for this test",
                   "needs another-peer: also made up",
                   "needs the Python package no_such_module_for_peers: made up too"):  # fmt: skip
        assert reason in done.stdout
    assert "CI=true: a missing test peer is a failure" in done.stdout
    assert "skipped" not in summary


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_a_missing_peer_is_a_visible_skip_elsewhere(tmp_path: Path, ci: str | None) -> None:
    done = run_tiny(tmp_path, ci)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b1 passed, 3 skipped\b", done.stdout.splitlines()[-1]), done.stdout
    skips = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 3, done.stdout
    assert any("needs no-such-peer: made up for this test" in line for line in skips)
    assert any("needs another-peer: also made up" in line for line in skips)
    assert any("no_such_module_for_peers: made up too" in line for line in skips)


def install_deps_as_nobody(ci: str | None) -> subprocess.CompletedProcess[str]:
    """The script as an unprivileged user, with every package reported missing."""
    place = Path(tempfile.mkdtemp(prefix="deps.", dir="/tmp"))  # pytest's tmp is closed to others
    try:
        place.chmod(0o755)
        stub = place / "dpkg-query"
        stub.write_text("#!/bin/sh\nexit 1\n")  # nothing is installed
        stub.chmod(0o755)
        script = place / "install-test-deps.sh"
        shutil.copy(ROOT / "scripts" / "install-test-deps.sh", script)
        env = {"PATH": f"{place}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/"}
        if ci is not None:
            env["CI"] = ci
        return subprocess.run(
            ["runuser", "-u", "nobody", "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
             "bash", str(script)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        shutil.rmtree(place)


def test_install_test_deps_fails_under_ci_when_it_cannot_install() -> None:
    require_peer("root", is_root(), "runs the script as nobody, who cannot install")
    done = install_deps_as_nobody("true")
    assert done.returncode == 1, done.stderr
    assert "missing postfix swaks" in done.stderr and "CI=true" in done.stderr
    done = install_deps_as_nobody(None)
    assert done.returncode == 0, done.stderr
    assert "will be skipped" in done.stderr
