"""Issue 12, operations: one daemon per queue (the master lock), ``status`` denied the
control socket, the log file target and its reopening, a submission listener that can
never accept mail, and the mail log lines of queue administration from the command line.

Real daemons, real sockets, the real CLI as a subprocess."""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
from pathlib import Path

from tests.support.daemon import Mailwright, render_toml
from tests.support.opentmp import open_tmp


def second_daemon_config(first: Mailwright, port: int) -> Path:
    """The first daemon's configuration on another port: the same queue directory."""
    config = dict(first.config)
    config["listeners"] = [{"address": "127.0.0.1", "port": port, "kind": "smtp"}]
    path = first.root / "second.toml"
    path.write_text(render_toml(config) + "\n")
    return path


# ---- item 8: a second daemon on the same queue is refused ------------------------------------


def test_a_second_daemon_on_the_same_queue_exits_75_naming_the_first(tmp_path: Path) -> None:
    from tests.support.daemon import free_port

    first = Mailwright(tmp_path).start()
    try:
        assert first.proc is not None
        pid = first.proc.pid
        queue = tmp_path / "queue"
        sockets = {name: os.stat(queue / name).st_ino for name in ("control.sock", "submit.sock")}
        other = second_daemon_config(first, free_port())
        second = subprocess.run(
            [sys.executable, "-m", "mailwright", "--config", str(other), "serve"],
            env=first.env(),
            capture_output=True,
            timeout=60,
        )
        assert second.returncode == 75, second.stderr.decode()
        err = second.stderr.decode()
        assert f"pid {pid}" in err and "already running" in err
        # the first daemon keeps its sockets and still answers on them
        assert {name: os.stat(queue / name).st_ino for name in sockets} == sockets
        assert first.cli("status").returncode == 0
        with smtplib.SMTP("127.0.0.1", first.port, timeout=30) as client:
            assert client.noop()[0] == 250
        assert (queue / "master.lock").read_text().strip() == str(pid)
    finally:
        first.stop()
    # once the first is gone, the lock is free again: a new daemon starts on the queue
    again = Mailwright(tmp_path)
    again.port = first.port
    again.start()
    again.stop()


# ---- item 25: a submission listener that could never accept mail is refused ------------------


def test_a_submission_listener_without_tls_is_refused_by_config_check_and_serve(
    tmp_path: Path,
) -> None:
    mw = Mailwright(tmp_path)
    mw.config["listeners"] = [
        {"address": "127.0.0.1", "port": mw.port, "kind": "submission", "tls": "none"}
    ]
    mw.write_config()
    check = mw.cli("config", "check")
    assert check.returncode == 78
    problem = check.stderr.decode()
    assert f'listener submission-{mw.port} has tls = "none"' in problem
    assert "could never accept mail" in problem and "Traceback" not in problem
    serve = subprocess.run(mw.command("serve"), env=mw.env(), capture_output=True, timeout=60)
    assert serve.returncode == 78
    assert "could never accept mail" in serve.stderr.decode()
    # nothing was bound or created: the configuration was refused before start-up
    assert not (tmp_path / "queue" / "control.sock").exists()


def test_a_plaintext_submission_listener_is_fine_when_it_can_accept_mail(tmp_path: Path) -> None:
    """``require_tls = false`` (or loopback clients allowed without TLS) makes it usable."""
    mw = Mailwright(tmp_path)
    plain = {"address": "127.0.0.1", "port": mw.port, "kind": "submission", "tls": "none"}
    mw.config["listeners"] = [{**plain, "require_tls": False}]
    mw.write_config()
    assert mw.cli("config", "check").returncode == 0
    mw.config["listeners"] = [plain]
    mw.config["auth"] = {"plaintext_on_loopback": True}
    mw.write_config()
    assert mw.cli("config", "check").returncode == 0
    mw.config["listeners"] = [{**plain, "kind": "smtp", "require_tls": True}]
    del mw.config["auth"]
    mw.write_config()
    check = mw.cli("config", "check")
    assert check.returncode == 78 and "require_tls = true" in check.stderr.decode()


# ---- item 10: status denied the control socket says so ---------------------------------------


def as_nobody(mw: Mailwright, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``mailwright ARGS`` run by an ordinary user (nobody)."""
    command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    return subprocess.run(
        [*command, *mw.command(*args)], env=mw.env(), capture_output=True, timeout=60, cwd="/"
    )


def test_status_by_an_ordinary_user_says_permission_denied_not_down() -> None:
    with open_tmp() as root:
        mw = Mailwright(root).start()
        try:
            assert mw.cli("status").returncode == 0  # root may ask
            for args in (("status",), ("status", "--json")):
                denied = as_nobody(mw, *args)
                out = denied.stdout.decode()
                assert denied.returncode == 77, (out, denied.stderr)
                assert "permission denied" in out and "down" not in out
            assert json.loads(denied.stdout)["up"] is None
        finally:
            mw.stop()
        # a daemon that is really gone is "down", for root and for the ordinary user alike
        down = mw.cli("status")
        assert down.returncode == 69 and b"mailwright: down (" in down.stdout
