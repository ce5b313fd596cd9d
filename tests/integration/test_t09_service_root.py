"""T09 the daemon as a system service, started as root the way systemd starts it
(``Type=notify``, a ``NOTIFY_SOCKET`` the test binds): privileges dropped to a service
account, only the privileged helper left as root, local delivery still landing in the
recipient's own mailbox, SIGHUP reloads (a changed alias; a bad file refused), SIGTERM
during a delivery, a second SIGTERM, a restart, and nothing lost."""

from __future__ import annotations

import mailbox
import os
import shutil
import signal
import smtplib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import SRC, wait_until
from tests.support.opentmp import open_tmp
from tests.support.peers import is_root, peer, require_peer
from tests.support.service import ServiceDaemon, descendants, process_status, system_user

pytestmark = peer("root", is_root(), "the daemon runs as a service account")

SYSTEM_PYTHON = "/usr/bin/python3"  # what an ordinary user can run (the venv may be root's)
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


@pytest.fixture(scope="module")
def accounts() -> Iterator[tuple[Any, Any]]:
    """A service account and a mailbox owner, made for this module and removed after."""
    tag = os.getpid() % 100000
    with (
        system_user(f"mwsvc{tag}", system=True) as service,
        system_user(f"mwbox{tag}") as owner,
    ):
        yield service, owner


@pytest.fixture
def root() -> Iterator[Path]:
    with open_tmp("mw-t09-") as path:
        (path / "mail").mkdir()
        out = path / "out"
        out.mkdir()
        out.chmod(0o777)  # programs and files run as the default user, nobody
        yield path


def service_config(root: Path, service: Any, aliases: str) -> dict[str, Any]:
    (root / "aliases").write_text("postmaster: root\n" + aliases)
    return {
        "delivery": {"mode": "background"},
        "service": {"user": service.pw_name},
        "routing": {"alias_file": str(root / "aliases")},
        "local_delivery": {"mail_spool": str(root / "mail")},
        "server": {"timeouts": {"shutdown_grace": 30}},
    }


def send(port: int, to: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("sender@x.test", [to], f"Subject: {subject}\r\n\r\n{subject}\r\n")


def subjects(path: Path) -> list[str]:
    if not path.exists():
        return []
    box = mailbox.mbox(path, create=False)
    try:
        return [str(m["Subject"]) for m in box]
    finally:
        box.close()


def test_privileges_dropped_and_mail_lands_as_the_recipient(root: Path, accounts: Any) -> None:
    service, owner = accounts
    config = service_config(
        root, service, f'team: {owner.pw_name}\nprog: "|cat > {root}/out/prog"\n'
    )
    mw = ServiceDaemon(root, config)
    try:
        mw.start()
        ready = mw.wait_notify(lambda f: f.get("READY") == "1")
        assert ready["STATUS"].startswith("accepting mail on 127.0.0.1:")
        assert ready["MAINPID"] == str(mw.proc.pid)  # type: ignore[union-attr]

        daemon = process_status(mw.proc.pid)  # type: ignore[union-attr]
        uid, gid = str(service.pw_uid), str(service.pw_gid)
        assert daemon["Uid"].split() == [uid] * 4  # real, effective, saved, file system
        assert daemon["Gid"].split() == [gid] * 4
        assert "0" not in daemon["Groups"].split()
        assert int(daemon["CapEff"], 16) == 0 and int(daemon["CapPrm"], 16) == 0

        below = {pid: process_status(pid) for pid in descendants(mw.proc.pid)}  # type: ignore[union-attr]
        as_root = [pid for pid, st in below.items() if st["Uid"].split()[1] == "0"]
        assert len(as_root) == 1, below
        assert below[as_root[0]]["Name"] == "mailwright-priv"

        queue = root / "queue"
        for path in (queue, queue / "queue.db", queue / "tmp", queue / "maildrop"):
            assert path.stat().st_uid == service.pw_uid, path

        send(mw.port, f"{owner.pw_name}@mx.test", "direct")
        send(mw.port, "team@mx.test", "through an alias")
        send(mw.port, "prog@mx.test", "to a program")
        box = root / "mail" / owner.pw_name
        wait_until(lambda: len(subjects(box)) == 2, what="two messages in the mailbox")
        st = box.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (owner.pw_uid, 0o600)
        assert sorted(subjects(box)) == ["direct", "through an alias"]
        wait_until((root / "out" / "prog").exists, what="the program's output")
        wait_until(lambda: "to a program" in (root / "out" / "prog").read_text(), what="output")
        assert (root / "out" / "prog").stat().st_uid == 65534  # nobody, the default user
        mw.wait_log(f"running as {service.pw_name}")

        before = len(mw.notify)
        assert mw.stop() == 0
        mw.wait_notify(lambda f: f.get("STOPPING") == "1", after=before)
        assert not any(Path(f"/proc/{pid}").exists() for pid in below)  # the helper is gone
    finally:
        mw.close()


def test_forward_in_a_closed_home_is_read_through_the_helper(root: Path, accounts: Any) -> None:
    """The service account cannot enter a 0700 home; the helper reads the .forward."""
    service, owner = accounts
    home = Path(owner.pw_dir)
    forward = home / ".forward"
    forward.write_text(f"\\{owner.pw_name}, {root}/out/forwarded.mbox\n")
    os.chown(forward, owner.pw_uid, owner.pw_gid)
    home.chmod(0o700)
    mw = ServiceDaemon(root, service_config(root, service, ""))
    try:
        mw.start()
        send(mw.port, f"{owner.pw_name}@mx.test", "forwarded")
        copy = root / "out" / "forwarded.mbox"
        wait_until(lambda: subjects(copy) == ["forwarded"], what="the .forward's file copy")
        assert copy.stat().st_uid == owner.pw_uid  # written as the .forward's owner
        wait_until(lambda: subjects(root / "mail" / owner.pw_name) == ["forwarded"], what="mailbox")
    finally:
        forward.unlink()
        home.chmod(0o755)
        mw.close()


def test_sighup_reload_changes_an_alias_and_refuses_a_bad_file(root: Path, accounts: Any) -> None:
    service, owner = accounts
    config = service_config(root, service, f"team: {root}/out/team.mbox\n")
    mw = ServiceDaemon(root, config)
    try:
        mw.start()
        send(mw.port, "team@mx.test", "before")
        wait_until(lambda: subjects(root / "out" / "team.mbox") == ["before"], what="file")

        # a session open across the reload is not dropped
        session = smtplib.SMTP("127.0.0.1", mw.port, timeout=30)
        session.ehlo("client.test")
        assert session.mail("sender@x.test")[0] == 250

        (root / "aliases").write_text(f"postmaster: root\nteam: {owner.pw_name}\n")
        before = len(mw.notify)
        mw.signal(signal.SIGHUP)
        reloading = mw.wait_notify(lambda f: f.get("RELOADING") == "1", after=before)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        mw.wait_notify(lambda f: f.get("READY") == "1", after=before)
        mw.wait_log("SIGHUP: configuration reloaded")

        assert session.rcpt("team@mx.test")[0] == 250
        session.data(b"Subject: across the reload\r\n\r\nstill here\r\n")
        session.quit()
        send(mw.port, "team@mx.test", "after")
        box = root / "mail" / owner.pw_name
        wait_until(lambda: len(subjects(box)) == 2, what="the new alias in use")
        assert sorted(subjects(box)) == ["across the reload", "after"]
        assert subjects(root / "out" / "team.mbox") == ["before"]

        good = mw.config_path.read_text()
        mw.config_path.write_text(good + "\n[server]\nmax_recipients = 0\n")
        before = len(mw.notify)
        mw.signal(signal.SIGHUP)
        refused = mw.wait_notify(lambda f: f.get("READY") == "1", after=before)
        assert refused["STATUS"].startswith("configuration refused")
        line = mw.wait_log("configuration refused, the previous one stays in use")
        assert "server" in line
        send(mw.port, "team@mx.test", "still served")
        wait_until(lambda: len(subjects(box)) == 3, what="mail after a refused reload")
        mw.config_path.write_text(good)
    finally:
        mw.close()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False  # caught in the backlog as the listener closed: ask again
    return False


def running(pid: int) -> bool:
    try:
        return process_status(pid)["State"][0] != "Z"
    except OSError:
        return False


def is_helper(pid: int) -> bool:
    try:
        return process_status(pid)["Name"] == "mailwright-priv"
    except OSError:
        return False


def sendmail_as(user: str, config: Path, recipient: str, subject: str) -> None:
    """``sendmail`` run by an ordinary user (with the system's Python: the test's may be
    out of that user's reach)."""
    code = "import sys; from mailwright.cli.sendmail import main; sys.exit(main())"
    subprocess.run(
        [
            RUNUSER,
            "-u",
            user,
            "--",
            SYSTEM_PYTHON,
            "-c",
            code,
            "-C",
            str(config),
            "-i",
            recipient,
        ],
        input=f"Subject: {subject}\n\n{subject}\n".encode(),
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC)},
        check=True,
        timeout=30,
    )


def test_sigterm_during_a_delivery_then_restart_and_nothing_is_lost(
    root: Path, accounts: Any
) -> None:
    usable = os.access(SYSTEM_PYTHON, os.X_OK) and os.access(RUNUSER, os.X_OK)
    require_peer(f"{SYSTEM_PYTHON} and runuser", usable, "an ordinary user runs the daemon")
    service, owner = accounts
    out = root / "out"
    slow = (
        f"\"|/bin/sh -c 'touch {out}/started; "
        f"while [ ! -e {out}/release ]; do sleep 0.05; done; cat >> {out}/slow'\""
    )
    mw = ServiceDaemon(root, service_config(root, service, f"slow: {slow}\n"))
    try:
        mw.start()
        send(mw.port, "slow@mx.test", "first")
        wait_until((out / "started").exists, what="the slow delivery to start")

        before = len(mw.notify)
        mw.signal(signal.SIGTERM)
        mw.wait_notify(lambda f: f.get("STOPPING") == "1", after=before)
        mw.wait_log("shutting down")
        wait_until(lambda: refused(mw.port), what="the listener to close")  # delivery goes on
        (out / "release").touch()  # the delivery finishes within the grace period
        assert mw.wait(timeout=30) == 0
        assert (out / "slow").read_text().count("Subject: first") == 1

        # while it is down, a user's message waits in the maildrop (a file only that
        # user and root can read): after the restart it comes in through the helper
        sendmail_as(owner.pw_name, mw.config_path, f"{owner.pw_name}@mx.test", "while down")
        waiting = list((root / "queue" / "maildrop").iterdir())
        assert len(waiting) == 1 and waiting[0].stat().st_uid == owner.pw_uid

        (out / "release").unlink()
        (out / "started").unlink()
        mw.start()
        box = root / "mail" / owner.pw_name
        wait_until(lambda: subjects(box) == ["while down"], what="the maildrop message")
        assert not list((root / "queue" / "maildrop").iterdir())

        # a second SIGTERM: out at once, the message in delivery stays queued
        send(mw.port, "slow@mx.test", "second")
        wait_until((out / "started").exists, what="the second slow delivery")
        (helper,) = [p for p in descendants(mw.proc.pid) if running(p) and is_helper(p)]  # type: ignore[union-attr]
        stops = sum("shutting down" in line for line in mw.log)
        mw.signal(signal.SIGTERM)
        mw.wait_log("shutting down", occurrence=stops + 1)
        mw.signal(signal.SIGTERM)
        assert mw.wait(timeout=10) == 1
        wait_until(lambda: not running(helper), what="the helper to end (and its program)")
        (out / "release").touch()
        mw.start()
        wait_until(
            lambda: "Subject: second" in (out / "slow").read_text(), what="the second message"
        )
        listing = mw.cli("queue", "list")
        assert listing.returncode == 0
        mw.stop()
        text = (out / "slow").read_text()
        assert text.count("Subject: first") == 1  # delivered once, never again
        assert text.count("Subject: second") == 1  # the killed attempt left nothing
    finally:
        mw.close()


def test_a_detached_daemon_with_a_pid_file(root: Path, accounts: Any) -> None:
    """``serve --daemon`` for hosts without systemd: the parent exits 0 once the child is
    ready; the pid file is locked; logs go to syslog (a socket the test binds)."""
    from tests.support.service import DatagramSink

    service, _ = accounts
    syslog = DatagramSink(root / "log.sock")
    mw = ServiceDaemon(root, service_config(root, service, ""))
    mw.config["log"] = {"syslog_socket": str(root / "log.sock"), "syslog_ident": "sm-mta"}
    mw.write_config()
    pid_file = root / "run" / "mailwright.pid"
    command = [*mw.command("serve", "--daemon", "--pid-file", str(pid_file))]
    try:
        started = subprocess.run(command, env=mw.env(), capture_output=True, timeout=60)
        assert started.returncode == 0, started.stderr
        pid = int(pid_file.read_text())
        assert process_status(pid)["Uid"].split()[0] == str(service.pw_uid)
        syslog.wait_for(lambda m: m.startswith("<22>sm-mta[") and "mailwright ready" in m)
        again = subprocess.run(command, env=mw.env(), capture_output=True, timeout=60)
        assert again.returncode == 75
        syslog.wait_for(lambda m: "already running" in m and str(pid) in m)
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the daemon to exit")
        syslog.wait_for(lambda m: m.endswith("]: stopped"))
    finally:
        if pid_file.exists():
            pid = int(pid_file.read_text() or 0)
            if pid and Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        syslog.close()
        mw.close()


def test_a_lost_helper_stops_the_daemon_for_a_restart(root: Path, accounts: Any) -> None:
    """The daemon without root cannot start a new helper: it stops with 75 (EX_TEMPFAIL),
    which the unit's Restart=on-failure turns into a restart; mail then lands again."""
    service, owner = accounts
    mw = ServiceDaemon(root, service_config(root, service, ""))
    try:
        mw.start()
        helpers = [
            pid
            for pid in descendants(mw.proc.pid)  # type: ignore[union-attr]
            if process_status(pid)["Name"] == "mailwright-priv"
        ]
        assert len(helpers) == 1
        os.kill(helpers[0], signal.SIGKILL)
        assert mw.wait() == 75
        mw.wait_log("stopping, to be restarted by the service manager (exit 75)")
        mw.start()  # what systemd does
        send(mw.port, f"{owner.pw_name}@mx.test", "after the restart")
        box = root / "mail" / owner.pw_name
        wait_until(lambda: subjects(box) == ["after the restart"], what="the delivery")
        assert mw.stop() == 0
    finally:
        mw.close()
