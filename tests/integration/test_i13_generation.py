"""SIGHUP swaps the daemon's generation of parts as a whole: a session opened before keeps
the policy of its connect to its end, a new session gets the new one, and a reload that
cannot be built keeps the old generation (issue 13 section 2)."""

from __future__ import annotations

import signal
import smtplib
from pathlib import Path

from tests.support.daemon import Mailwright

RELAYED = "someone@elsewhere.test"  # neither local nor a relay domain: only trusted clients


def hup(mw: Mailwright, outcome: str, occurrence: int = 1) -> None:
    assert mw.proc is not None
    mw.proc.send_signal(signal.SIGHUP)
    mw.wait_log(outcome, occurrence=occurrence)


def open_session(mw: Mailwright) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", mw.port)
    client.ehlo("client.test")
    return client


def relay_code(client: smtplib.SMTP) -> int:
    """RCPT to a remote domain in a fresh transaction of ``client``'s session."""
    assert client.mail("a@x.test")[0] == 250
    code = client.rcpt(RELAYED)[0]
    assert client.rset()[0] == 250
    return code


def test_a_session_keeps_its_generation_across_sighup(tmp_path: Path) -> None:
    mw = Mailwright(tmp_path / "mw", {"relay": {"networks": []}})
    mw.start()
    try:
        before = open_session(mw)
        assert relay_code(before) == 550  # not a trusted network: no relaying (550 5.7.1)
        mw.config["relay"]["networks"] = ["127.0.0.0/8"]
        mw.write_config()
        hup(mw, "SIGHUP: configuration reloaded")
        after = open_session(mw)
        assert relay_code(after) == 250  # the new generation trusts 127.0.0.0/8
        assert relay_code(before) == 550  # the session opened before keeps the old one
        before.quit()
        assert relay_code(open_session(mw)) == 250
        after.quit()
    finally:
        mw.stop()


def test_a_bad_reload_keeps_the_old_generation(tmp_path: Path) -> None:
    mw = Mailwright(tmp_path / "mw", {"relay": {"networks": ["127.0.0.0/8"]}})
    mw.start()
    try:
        # a new relay policy together with a transport table line that does not parse
        (tmp_path / "transport").write_text("example.org nonsense:[\n")
        mw.config["relay"]["networks"] = []
        mw.config["routing"]["transport_table"] = str(tmp_path / "transport")
        mw.write_config()
        hup(mw, "SIGHUP: configuration refused, the previous one stays in use")
        assert "unknown transport 'nonsense'" in mw.wait_log("configuration refused")
        client = open_session(mw)
        assert relay_code(client) == 250  # the old policy is still the one in use
        client.quit()
        # fixed: the next SIGHUP puts the new generation in place
        (tmp_path / "transport").write_text("example.org smtp:[127.0.0.1]\n")
        hup(mw, "SIGHUP: configuration reloaded")
        client = open_session(mw)
        assert relay_code(client) == 550
        client.quit()
    finally:
        mw.stop()


def test_an_unknown_filter_plugin_is_refused_at_start_and_on_reload(tmp_path: Path) -> None:
    bad = {"filters": [{"plugin": "no-such-filter"}]}
    refused = Mailwright(tmp_path / "refused", bad)
    refused.write_config()
    started = refused.cli("serve")
    assert started.returncode == 78, started.stderr.decode()
    problem = "filters[1] (no-such-filter): no filter plugin named 'no-such-filter'"
    assert problem in started.stderr.decode()
    checked = refused.cli("config", "check")  # the same check, the same message
    assert checked.returncode == 78, checked.stderr.decode()
    assert checked.stderr.decode().startswith(f"mailwright: {problem}")
    mw = Mailwright(tmp_path / "mw", {"relay": {"networks": ["127.0.0.0/8"]}})
    mw.start()
    try:
        mw.config.update(bad)
        mw.config["relay"]["networks"] = []
        mw.write_config()
        hup(mw, "SIGHUP: configuration refused")
        assert "no filter plugin named 'no-such-filter'" in mw.wait_log("configuration refused")
        client = open_session(mw)
        assert relay_code(client) == 250
        client.quit()
    finally:
        mw.stop()
