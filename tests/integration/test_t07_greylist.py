"""Greylisting through the real daemon: 451 4.7.1 first, a retry after the delay queued,
trusted clients untouched, the database kept across a restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.support.daemon import Mailwright, running
from tests.support.security import Client

STRANGER = "127.0.0.9"
MSG = "From: a@x.test\r\nTo: user@mx.test\r\nSubject: grey\r\n\r\nhello\r\n.\r\n"


def config(**options: Any) -> dict[str, Any]:
    return {
        "relay": {"networks": []},
        "routing": {"local_domains": ["mx.test"]},
        "filters": [{"plugin": "greylist", "options": {"delay": 1, **options}}],
    }


def attempt(mw: Mailwright, source: str, sender: str = "a@x.test") -> tuple[str, str]:
    """(RCPT reply, DATA reply or "") for one message from ``source`` to user@mx.test."""
    client = Client(mw.port, source)
    try:
        assert client.cmd("EHLO client.test").startswith("250")
        assert client.cmd(f"MAIL FROM:<{sender}>").startswith("250")
        rcpt = client.cmd("RCPT TO:<user@mx.test>")
        if not rcpt.startswith("250"):
            return rcpt, ""
        assert client.cmd("DATA").startswith("354")
        return rcpt, client.cmd(MSG.removesuffix("\r\n"))
    finally:
        client.cmd("QUIT")
        client.close()


def retry_until_accepted(mw: Mailwright, source: str, timeout: float = 15) -> tuple[str, str]:
    """Retry as an MTA would (with back-off) until the greylist lets the message in."""
    deadline, pause = time.monotonic() + timeout, 0.05
    while True:
        rcpt, data = attempt(mw, source)
        if not rcpt.startswith("451"):
            return rcpt, data
        assert "4.7.1 Greylisted, please try again in 1 seconds" in rcpt, rcpt
        assert time.monotonic() < deadline, "still greylisted"
        time.sleep(pause)  # a client's retry interval, not synchronisation
        pause = min(pause * 2, 0.5)


def test_first_attempt_deferred_retry_queued_and_kept_across_restart(tmp_path: Path) -> None:
    mw = Mailwright(tmp_path / "mw", config())
    mw.start()
    try:
        rcpt, _ = attempt(mw, STRANGER)
        assert rcpt == "451 4.7.1 Greylisted, please try again in 1 seconds"
        mw.wait_log("reject=451 4.7.1 Greylisted")
        rcpt, data = retry_until_accepted(mw, STRANGER)
        assert rcpt.startswith("250") and data.startswith("250"), (rcpt, data)
        assert "greylist=passed after" in mw.wait_log("greylist=passed after")
        assert (tmp_path / "mw" / "queue" / "greylist.db").exists()
        mw.stop()
        mw.start()
        rcpt, data = attempt(mw, STRANGER)  # known triplet: accepted at once
        assert rcpt.startswith("250") and data.startswith("250"), (rcpt, data)
        rcpt, _ = attempt(mw, STRANGER, sender="other@x.test")  # a new triplet is not
        assert rcpt.startswith("451 4.7.1")
    finally:
        mw.stop()


def test_trusted_relay_client_never_greylisted(tmp_path: Path) -> None:
    settings = config(delay="1h")
    settings["relay"] = {"networks": ["127.0.0.1/32"]}
    with running(tmp_path / "mw", settings) as mw:
        rcpt, data = attempt(mw, "127.0.0.1")
        assert rcpt.startswith("250") and data.startswith("250"), (rcpt, data)
        rcpt, _ = attempt(mw, STRANGER)
        assert rcpt == "451 4.7.1 Greylisted, please try again in 3600 seconds"
