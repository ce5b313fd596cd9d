"""T09 sd_notify without root: READY=1 once accepting, RELOADING=1 with MONOTONIC_USEC
and READY=1 again around a SIGHUP, STOPPING=1 at SIGTERM; to a socket path and to an
abstract socket name (``@name``), both bound by the test."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.support.service import ServiceDaemon


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_readiness_reload_and_stop_are_reported(tmp_path: Path, abstract: bool) -> None:
    name = f"@mailwright-t09-{os.getpid()}" if abstract else None
    mw = ServiceDaemon(tmp_path, {}, notify=name)
    try:
        mw.start()
        ready = mw.wait_notify(lambda f: f.get("READY") == "1")
        assert ready["STATUS"] == f"accepting mail on 127.0.0.1:{mw.port}"
        assert ready["MAINPID"] == str(mw.proc.pid)  # type: ignore[union-attr]

        before = len(mw.notify)
        mw.signal(signal.SIGHUP)
        reloading = mw.wait_notify(lambda f: f.get("RELOADING") == "1", after=before)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        again = mw.wait_notify(lambda f: f.get("READY") == "1", after=before)
        assert again["STATUS"].startswith("accepting mail")

        before = len(mw.notify)
        assert mw.stop() == 0
        stopping = mw.wait_notify(lambda f: f.get("STOPPING") == "1", after=before)
        assert stopping["STATUS"].startswith("stopping")
        assert not any("NOTIFY_SOCKET" in line for line in mw.log)
    finally:
        mw.close()
