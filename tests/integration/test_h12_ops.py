"""Issue 12, operations: one daemon per queue (the master lock), ``status`` denied the
control socket, the log file target and its reopening, a submission listener that can
never accept mail, and the mail log lines of queue administration from the command line.

Real daemons, real sockets, the real CLI as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.support.daemon import Mailwright, free_port, render_toml, wait_until
from tests.support.opentmp import open_tmp
from tests.support.peers import peer
from tests.support.service import ServiceDaemon, system_user
from tests.support.web import Web, value


def second_daemon_config(first: Mailwright, port: int) -> Path:
    """The first daemon's configuration on another port: the same queue directory."""
    config = dict(first.config)
    config["listeners"] = [{"address": "127.0.0.1", "port": port, "kind": "smtp"}]
    path = first.root / "second.toml"
    path.write_text(render_toml(config) + "\n")
    return path


# ---- item 8: a second daemon on the same queue is refused ------------------------------------


def test_a_second_daemon_on_the_same_queue_exits_75_naming_the_first(tmp_path: Path) -> None:
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


class MultiLineRefuser:
    """A server that answers every RCPT with a three-line 451 (one client at a time)."""

    RCPT = (
        b"451-4.3.0 Try later, line one\r\n451-4.3.0 Try later, line two\r\n"
        b"451 4.3.0 Try later, line three\r\n"
    )

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> MultiLineRefuser:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                with conn, conn.makefile("rwb") as stream:
                    self._session(stream)

    def _session(self, stream: Any) -> None:
        stream.write(b"220 far.test ESMTP\r\n")
        stream.flush()
        for line in stream:
            verb = line[:4].upper()
            if verb == b"QUIT":
                stream.write(b"221 bye\r\n")
                stream.flush()
                return
            stream.write(self.RCPT if verb == b"RCPT" else b"250 ok\r\n")
            stream.flush()


def transport(root: Path, port: int) -> Path:
    path = root / "transport"
    path.write_text(f"far.test smtp:[127.0.0.1]:{port}\n")
    return path


# ---- item 18 (administration) and item 23 (flush of a held message, show) ---------------------

QID = re.compile(r"\b([0-9A-HJKMNP-TV-Z]{15})\b")


def queue_one(port: int, subject: str) -> str:
    """A message queued for a local recipient (the test daemons run in queue-only mode)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail("sender@x.test")[0] == 250
        assert client.rcpt("user@mx.test")[0] == 250
        code, text = client.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())
        assert code == 250
    match = QID.search(text.decode())
    assert match is not None
    return match.group(1)


def test_queue_administration_through_a_running_daemon_is_logged_and_counted(
    tmp_path: Path,
) -> None:
    mw = Mailwright(tmp_path, {"http": {"port": free_port()}}).start()
    try:
        web = Web(mw.config["http"]["port"])
        kept, bounced = queue_one(mw.port, "kept"), queue_one(mw.port, "bounced")

        held = mw.cli("queue", "hold", kept, "--reason", "spam?")
        assert held.returncode == 0 and b"held: 1 message(s)" in held.stdout
        mw.wait_log(f"{kept}: admin=hold, by=root, via=mailwright queue, reason=spam?")

        # item 23: a flush of a held message says it is held and was not scheduled
        flushed = mw.cli("queue", "flush", kept)
        out = flushed.stdout.decode()
        assert flushed.returncode == 0
        assert "0 recipient(s) scheduled" in out
        assert f"{kept}: on hold, not scheduled (mailwright queue release {kept} first)" in out
        mw.wait_log(f"{kept}: admin=flush, by=root, via=mailwright queue, stat=on hold")

        assert mw.cli("queue", "release", kept).returncode == 0
        mw.wait_log(f"{kept}: admin=release, by=root, via=mailwright queue")

        gone = mw.cli("queue", "bounce", bounced)
        assert gone.returncode == 0 and b"bounced: 1 message(s)" in gone.stdout
        mw.wait_log(f"{bounced}: admin=bounce, by=root, via=mailwright queue, reason=Message")
        dsn = mw.wait_log(": DSN: ")
        assert re.search(
            rf"{bounced}: [0-9A-Z]{{15}}: DSN: 550 5\.0\.0 Message bounced by administrator",
            dsn,
        ), dsn

        assert mw.cli("queue", "delete", kept).returncode == 0
        mw.wait_log(f"{kept}: admin=delete, by=root, via=mailwright queue")

        samples = web.scrape()
        for action in ("hold", "flush", "release", "bounce", "delete"):
            got = value(
                samples, "mailwright_admin_actions_total", action=action, via="mailwright queue"
            )
            assert got == 1, (action, got)
    finally:
        mw.stop()


def test_queue_administration_without_a_daemon_is_logged_where_the_daemon_logs(
    tmp_path: Path,
) -> None:
    mw = Mailwright(tmp_path, {"log": {"format": "text"}}).start()
    try:
        first, second = queue_one(mw.port, "first"), queue_one(mw.port, "second")
    finally:
        mw.stop()
    held = mw.cli("queue", "hold", first)
    assert held.returncode == 0, held.stderr
    assert f"{first}: admin=hold, by=root, via=mailwright queue" in held.stderr.decode()
    flushed = mw.cli("queue", "flush", first)
    assert f"{first}: on hold, not scheduled" in flushed.stdout.decode()
    assert f"{first}: admin=flush, by=root" in flushed.stderr.decode()
    bounced = mw.cli("queue", "bounce", second)
    err = bounced.stderr.decode()
    assert bounced.returncode == 0, err
    assert f"{second}: admin=bounce, by=root, via=mailwright queue" in err
    assert re.search(rf"{second}: [0-9A-Z]{{15}}: DSN: 550 5\.0\.0 Message bounced", err), err
    deleted = mw.cli("queue", "delete", first)
    assert f"{first}: admin=delete, by=root" in deleted.stderr.decode()


def test_queue_show_keeps_its_indentation_for_a_multi_line_reply(tmp_path: Path) -> None:
    """A deferred recipient whose server answered with three lines."""
    with MultiLineRefuser() as refuser:
        mw = Mailwright(
            tmp_path,
            {
                "delivery": {"mode": "background"},
                "routing": {"transport_table": str(transport(tmp_path, refuser.port))},
            },
        ).start()
        try:
            with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as client:
                client.sendmail("a@x.test", ["b@far.test"], b"Subject: s\r\n\r\nx\r\n")
            line = mw.wait_log("to=<b@far.test>")
            qid = QID.search(line)
            assert qid is not None
            shown = mw.cli("queue", "show", qid.group(1)).stdout.decode().splitlines()
        finally:
            mw.stop()
    at = next(i for i, text in enumerate(shown) if text.startswith("      last: "))
    first = shown[at]
    indent = " " * (first.index("Try later, line one"))
    assert shown[at + 1] == indent + "Try later, line two"
    assert shown[at + 2].startswith(indent + "Try later, line three")
    assert shown[at + 3] == "Headers:"


# ---- item 19: a log file target, reopened for logrotate; a missing syslog socket is warned about


def file_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def wait_file(path: Path, text: str) -> str:
    found: list[str] = []

    def seen() -> bool:
        found[:] = [line for line in file_lines(path) if text in line]
        return bool(found)

    wait_until(seen, timeout=30, what=f"{text!r} in {path}")
    return found[0]


def test_the_log_file_is_reopened_after_rotation_on_sigusr1_and_sighup(tmp_path: Path) -> None:
    log_file = tmp_path / "log" / "mailwright.log"
    mw = Mailwright(tmp_path, {"log": {"file": str(log_file), "syslog_ident": "sm-mta"}})
    mw.write_config()
    proc = subprocess.Popen(
        mw.command("serve"), env=mw.env(), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        ready = wait_file(log_file, "mailwright ready")
        assert re.match(rf"\d{{4}}-\d\d-\d\d [\d:,]+ sm-mta\[{proc.pid}\]: mailwright ready", ready)
        first = queue_one(mw.port, "before rotation")
        wait_file(log_file, f"{first}: from=<sender@x.test>")

        for rotation, sig in enumerate((signal.SIGUSR1, signal.SIGHUP), start=1):
            rotated = log_file.with_name(f"mailwright.log.{rotation}")
            log_file.rename(rotated)  # what logrotate does, before its postrotate signal
            proc.send_signal(sig)
            wait_file(log_file, "reopened" if sig == signal.SIGUSR1 else "SIGHUP: reloading")
            later = queue_one(mw.port, f"after rotation {rotation}")
            wait_file(log_file, f"{later}: from=<sender@x.test>")
            assert not any(later in line for line in file_lines(rotated))
        assert any(first in line for line in file_lines(tmp_path / "log" / "mailwright.log.1"))
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert b"mailwright ready" not in err  # the file target, not stderr
    wait_file(log_file, "stopped")


def test_a_detached_daemon_logs_to_its_file(tmp_path: Path) -> None:
    log_file = tmp_path / "mailwright.log"
    pid_file = tmp_path / "mailwright.pid"
    mw = Mailwright(tmp_path, {"log": {"target": "file", "file": str(log_file)}})
    mw.write_config()
    started = subprocess.run(
        mw.command("serve", "--daemon", "--pid-file", str(pid_file)),
        env=mw.env(),
        capture_output=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    pid = int(pid_file.read_text())
    try:
        wait_file(log_file, f"[{pid}]: mailwright ready")
        qid = queue_one(mw.port, "detached")
        wait_file(log_file, f"{qid}: from=<sender@x.test>")
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the daemon to exit")


def test_a_missing_syslog_socket_is_warned_about_on_stderr(tmp_path: Path) -> None:
    pid_file = tmp_path / "mailwright.pid"
    nowhere = tmp_path / "no-syslog-here"
    mw = Mailwright(tmp_path, {"log": {"target": "syslog", "syslog_socket": str(nowhere)}})
    mw.write_config()
    started = subprocess.run(
        mw.command("serve", "--daemon", "--pid-file", str(pid_file)),
        env=mw.env(),
        capture_output=True,
        timeout=60,
    )
    try:
        assert started.returncode == 0, started.stderr
        err = started.stderr.decode()
        assert f"warning: syslog socket {nowhere} cannot be used" in err
        assert "log lines will be lost" in err and '[log] file = "' in err
    finally:
        if pid_file.exists():
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the daemon to exit")


def test_log_file_settings_are_checked(tmp_path: Path) -> None:
    mw = Mailwright(tmp_path, {"log": {"target": "file"}})
    mw.write_config()
    check = mw.cli("config", "check")
    assert check.returncode == 78 and b'target = "file" needs file' in check.stderr
    mw.config["log"] = {"target": "syslog", "file": str(tmp_path / "x.log")}
    mw.write_config()
    check = mw.cli("config", "check")
    assert check.returncode == 78 and b'file is set but target = "syslog"' in check.stderr
    (tmp_path / "not-a-dir").write_text("")
    mw.config["log"] = {"file": str(tmp_path / "not-a-dir" / "x.log")}
    mw.write_config()
    serve = subprocess.run(mw.command("serve"), env=mw.env(), capture_output=True, timeout=60)
    assert serve.returncode == 78
    assert b"log.file: cannot open" in serve.stderr and b"Traceback" not in serve.stderr


@peer("root", os.geteuid() == 0, "creates a service account")
def test_a_daemon_without_root_and_its_helper_follow_a_rotated_log_file() -> None:
    """Started as root with a service account: the log file is given to the account, so
    the daemon reopens it without root after logrotate (``create`` with the account as
    owner); the privileged helper, which nobody can signal, follows the new file alone."""
    with (
        open_tmp("mw-h12-") as root,
        system_user(f"mwlog{os.getpid() % 100000}", system=True) as service,
    ):
        (root / "mail").mkdir()
        (root / "log").mkdir()
        log_file = root / "log" / "mailwright.log"
        mw = ServiceDaemon(
            root,
            {
                "delivery": {"mode": "background"},
                "service": {"user": service.pw_name},
                "local_delivery": {"mail_spool": str(root / "mail")},
                "log": {"file": str(log_file), "level": "debug"},
            },
        )
        try:
            mw.start()
            assert mw.proc is not None
            wait_file(log_file, "mailwright ready")
            assert log_file.stat().st_uid == service.pw_uid
            first = queue_one(mw.port, "before")
            wait_file(log_file, f"{first}: helper: mailbox of root")

            log_file.rename(log_file.with_name("mailwright.log.1"))
            fd = os.open(log_file, os.O_CREAT | os.O_WRONLY, 0o640)  # logrotate's "create"
            os.fchown(fd, service.pw_uid, service.pw_gid)
            os.close(fd)
            mw.proc.send_signal(signal.SIGUSR1)
            wait_file(log_file, "SIGUSR1: log file")
            later = queue_one(mw.port, "after")
            wait_file(log_file, f"{later}: to=<root@mx.test>")
            wait_file(log_file, f"{later}: helper: mailbox of root")
            old = file_lines(log_file.with_name("mailwright.log.1"))
            assert not any(later in line for line in old)
            assert not any("cannot reopen" in line for line in old)
        finally:
            mw.close()
