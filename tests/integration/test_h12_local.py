"""Issue 12, local delivery: a locked mailbox holds up only its own deliveries (item 1), a
delivery killed while taking the dot-lock leaves no empty lock (item 2), a daemon stops
at once although a delivery waits for a lock (item 10), and Maildir deliveries are
recorded one by one (item 6). Real daemons, real SMTP clients, real locks."""

from __future__ import annotations

import fcntl
import json
import mailbox
import os
import pwd
import signal
import smtplib
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import SRC, Mailwright, deep_merge, free_port, wait_until
from tests.support.opentmp import open_tmp
from tests.support.sendmail import make_entry_points
from tests.support.service import ServiceDaemon, system_user

PROMPT = 5.0  # seconds: "at once" for an SMTP reply or a delivery on an idle machine
LOCK_TIMEOUT = 40.0  # far longer than PROMPT: a stall behind a lock cannot pass as prompt


@pytest.fixture
def shared() -> Iterator[Path]:
    with open_tmp("mw-h12-") as path:
        yield path


def local_daemon(shared: Path, extra: dict[str, Any] | None = None) -> Mailwright:
    """A delivering daemon with mbox users alice, bob, root and the Maildir user carol."""
    (shared / "mailboxes").write_text("alice alice\nbob bob\nroot root\ncarol carol/\n")
    (shared / "mail").mkdir(exist_ok=True)
    config: dict[str, Any] = {
        "delivery": {"mode": "background"},
        "routing": {"local_domains": ["mx.test"]},
        "local_delivery": {
            "mail_spool": str(shared / "mail"),
            "virtual_mailbox_table": str(shared / "mailboxes"),
            "lock_timeout": LOCK_TIMEOUT,
        },
    }
    return Mailwright(shared / "mw", deep_merge(config, extra or {}))


def message(to: str, n: int = 0) -> bytes:
    return f"From: s@example.com\r\nTo: {to}\r\nSubject: m{n}\r\n\r\nbody {n}\r\n".encode()


def mbox_count(path: Path) -> int:
    if not path.exists():
        return 0
    box = mailbox.mbox(path, create=False)
    try:
        return len(box)
    finally:
        box.close()


@contextmanager
def held_lock(mailbox_path: Path, kind: str) -> Iterator[None]:
    """The mailbox locked as a user or a mail reader would: flock, or an empty dot-lock."""
    mailbox_path.touch()
    if kind == "flock":
        with open(mailbox_path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield
    else:
        lock = mailbox_path.with_name(mailbox_path.name + ".lock")
        lock.touch()  # empty, young: mail.local's rule keeps it for stale_lock_age
        try:
            yield
        finally:
            lock.unlink()


@pytest.mark.parametrize("kind", ["flock", "empty-dotlock"])
def test_locked_mailbox_stalls_neither_rcpt_nor_other_mailboxes(shared: Path, kind: str) -> None:
    mw = local_daemon(shared).start()
    mail = shared / "mail"
    try:
        with held_lock(mail / "alice", kind):
            with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as s:
                for n in range(25):  # more than any pool or slot limit (20) has room for
                    assert s.sendmail("s@example.com", ["alice@mx.test"], message("alice", n)) == {}
            mw.wait_log("alice is locked; waiting")
            # the SMTP dialogue's lookups: prompt although alice's deliveries wait
            with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as s:
                s.ehlo()
                s.mail("s@example.com")
                started = time.monotonic()
                code, _ = s.rcpt("root@mx.test")
                took = time.monotonic() - started
                assert code == 250 and took < PROMPT, f"RCPT took {took:.1f}s"
                s.rset()
                assert s.sendmail("s@example.com", ["bob@mx.test"], message("bob")) == {}
            # deliveries to another mailbox go on
            wait_until(lambda: mbox_count(mail / "bob") == 1, PROMPT, "delivery to bob")
            assert mbox_count(mail / "alice") == 0
        # once the lock is gone, every waiting delivery to alice is made, one at a time
        wait_until(lambda: mbox_count(mail / "alice") == 25, 60, "alice's messages")
        assert not (mail / "alice.lock").exists()
    finally:
        mw.stop()


def test_sigterm_ends_a_lock_wait_and_keeps_the_recipient(shared: Path) -> None:
    mw = local_daemon(shared)
    mw.start()
    mail = shared / "mail"
    try:
        with held_lock(mail / "alice", "flock"):
            with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as s:
                assert s.sendmail("s@example.com", ["alice@mx.test"], message("alice")) == {}
            mw.wait_log("alice is locked; waiting")
            assert mw.proc is not None
            started = time.monotonic()
            mw.proc.send_signal(signal.SIGTERM)
            rc = mw.wait(timeout=LOCK_TIMEOUT + 30)
            took = time.monotonic() - started
            assert rc == 0 and took < PROMPT, f"exit {rc} after {took:.1f}s"
        listing = json.loads(mw.cli("queue", "list", "--json").stdout)
        waiting = [r["address"] for m in listing for r in m["recipients"] if r["state"] == "queued"]
        assert waiting == ["alice@mx.test"]
        assert mbox_count(mail / "alice") == 0
    finally:
        mw.kill()


KILL_AT_DOTLOCK = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from mailwright.delivery import mbox

    mailbox_path = Path(sys.argv[1])
    real_open = os.open

    def open_then_die(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if ".lock" in os.fspath(path) or ".lk" in os.fspath(path):
            os.kill(os.getpid(), signal.SIGKILL)  # killed the moment a lock file exists
        return fd

    os.open = open_then_die
    mbox.append(mailbox_path, [b"From x Thu Jan  1 00:00:00 1970\\n\\nlost\\n\\n"],
                mbox.MboxOptions(lock_timeout=5))
    """
)


def test_delivery_killed_while_locking_leaves_no_empty_lock(shared: Path) -> None:
    mail = shared / "mail"
    mail.mkdir()
    (mail / "alice").touch()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    victim = subprocess.run(
        [sys.executable, "-c", KILL_AT_DOTLOCK, str(mail / "alice")], env=env, timeout=30
    )
    assert victim.returncode == -signal.SIGKILL
    lock = mail / "alice.lock"
    assert not lock.exists() or lock.read_text().strip(), "an empty alice.lock was left"
    # and the next delivery does not wait for stale_lock_age (300 s) to break it
    mw = local_daemon(shared).start()
    try:
        with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as s:
            assert s.sendmail("s@example.com", ["alice@mx.test"], message("alice")) == {}
        wait_until(lambda: mbox_count(mail / "alice") == 1, PROMPT, "delivery to alice")
        # the lock goes once the append is done; the killed one's temporary file too
        wait_until(lambda: sorted(os.listdir(mail)) == ["alice"], PROMPT, "the lock released")
    finally:
        mw.stop()


def maildir_count(path: Path) -> int:
    return len(list((path / "new").iterdir())) if (path / "new").is_dir() else 0


def recipient_states(mw: Mailwright) -> dict[str, str]:
    listing = json.loads(mw.cli("queue", "list", "--json").stdout)
    return {r["address"]: r["state"] for m in listing for r in m["recipients"]}


def test_each_recipient_is_recorded_when_delivered_so_a_kill_repeats_only_the_rest(
    shared: Path,
) -> None:
    mw = local_daemon(shared)
    mw.start()
    mail = shared / "mail"
    try:
        with held_lock(mail / "alice", "flock"):
            with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as s:
                rcpts = ["carol@mx.test", "alice@mx.test"]
                assert s.sendmail("s@example.com", rcpts, message("both")) == {}
            wait_until(lambda: maildir_count(mail / "carol") == 1, PROMPT, "carol's copy")
            # carol's delivery is in the queue before alice's is done ...
            wait_until(
                lambda: recipient_states(mw).get("carol@mx.test") == "delivered",
                PROMPT,
                "carol recorded as delivered",
            )
            assert recipient_states(mw)["alice@mx.test"] == "queued"
            mw.kill()  # ... so a crash now repeats only alice's
        mw.start()
        wait_until(lambda: mbox_count(mail / "alice") == 1, 30, "alice's copy after restart")
        wait_until(lambda: not recipient_states(mw), PROMPT, "an empty queue")
        assert maildir_count(mail / "carol") == 1
    finally:
        mw.stop()


# ---- item 20: |program and /file aliases in `make run`'s setup -------------------------------

REPO = Path(__file__).resolve().parents[2]


class DevMailwright(Mailwright):
    """The daemon with the development configuration ``make run`` uses (etc/mailwright.toml,
    only the ports changed), in a copy of the tree's layout: etc/ and var/."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.config_path = root / "etc" / "mailwright.toml"

    def write_config(self) -> None:
        text = (REPO / "etc" / "mailwright.toml").read_text()
        text = text.replace("port = 2525", f"port = {self.port}")
        text = text.replace("port = 2580", f"port = {free_port()}")
        self.config_path.write_text(text)


def sendmail(bindir: Path, config: Path, *args: str) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [str(bindir / "sendmail"), "-C", str(config), *args],
        capture_output=True,
        env=env,
        timeout=60,
        check=True,
    )
    return proc.stdout.decode()


def test_make_run_runs_program_and_file_aliases_as_the_invoking_user(shared: Path) -> None:
    (shared / "etc").mkdir()
    (shared / "var").mkdir()  # as `make run` makes it: writable by whoever started it
    var = shared / "var"
    aliases = (REPO / "etc" / "aliases").read_text()
    (shared / "etc" / "aliases").write_text(
        f'{aliases}prog: "|id -un >> {var}/prog.out"\nfile: {var}/file.out\n'
    )
    me = pwd.getpwuid(os.getuid()).pw_name
    mw = DevMailwright(shared)
    mw.start()
    try:
        assert mw.cli("aliases", "build").returncode == 0
        bindir = make_entry_points(shared / "bin").parent
        lines = sendmail(bindir, mw.config_path, "-bv", "prog", "file").splitlines()
        assert lines == [
            f'"|id -un >> {var}/prog.out"... deliverable: mailer prog, user {me}',
            f"{var}/file.out... deliverable: mailer *file*, user {me}",
        ]
        with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as s:
            rcpts = ["prog@mailwright.localhost", "file@mailwright.localhost"]
            assert s.sendmail("s@example.com", rcpts, message("aliases")) == {}
        wait_until((var / "prog.out").exists, PROMPT, "the program's output")
        wait_until(lambda: mbox_count(var / "file.out") == 1, PROMPT, "the file")
        assert (var / "prog.out").read_text() == f"{me}\n"  # ran as the invoking user ...
        assert (var / "file.out").stat().st_uid == os.getuid()  # ... and wrote as them
    finally:
        mw.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: programs and files change user")
def test_program_and_file_that_may_not_write_both_fail_at_once(shared: Path) -> None:
    closed = shared / "closed"
    closed.mkdir(mode=0o700)  # root's only: the default user (nobody) may not write here
    (shared / "aliases").write_text(
        f'postmaster: root\nprog: "|cat > {closed}/prog.out"\nfile: {closed}/file.out\n'
    )
    mw = local_daemon(shared, {"routing": {"alias_file": str(shared / "aliases")}})
    mw.start()
    try:
        bindir = make_entry_points(shared / "bin").parent
        lines = sendmail(bindir, mw.config_path, "-bv", "prog", "file").splitlines()
        assert [line.rsplit(", user ", 1)[1] for line in lines] == ["nobody", "nobody"]
        with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as s:
            assert s.sendmail("s@example.com", ["prog@mx.test"], message("prog")) == {}
            assert s.sendmail("s@example.com", ["file@mx.test"], message("file")) == {}
        prog = mw.wait_log(f'to="|cat > {closed}/prog.out"')
        file = mw.wait_log(f"to={closed}/file.out")
        assert "dsn=5.3.0" in prog and "dsn=5.2.0, stat=550 5.2.0" in file, (prog, file)
        assert not (closed / "file.out").exists()
    finally:
        mw.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a service account)")
def test_sigterm_ends_the_privileged_helpers_lock_wait(shared: Path) -> None:
    tag = os.getpid() % 100000
    with (
        system_user(f"mwsvc{tag}", system=True) as service,
        system_user(f"mwbox{tag}") as owner,
    ):
        (shared / "mail").mkdir()
        box = shared / "mail" / owner.pw_name
        box.touch()
        os.chown(box, owner.pw_uid, owner.pw_gid)
        config = {
            "delivery": {"mode": "background"},
            "service": {"user": service.pw_name},
            "log": {"level": "debug"},  # the helper's "is locked; waiting"
            "local_delivery": {"mail_spool": str(shared / "mail"), "lock_timeout": LOCK_TIMEOUT},
        }
        (shared / "mw").mkdir()
        mw = ServiceDaemon(shared / "mw", config)
        mw.start()
        try:
            with held_lock(box, "flock"):
                with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as s:
                    to = [f"{owner.pw_name}@mx.test"]
                    assert s.sendmail("s@example.com", to, message("owner")) == {}
                mw.wait_log(f"{owner.pw_name} is locked; waiting")  # in the helper
                assert mw.proc is not None
                started = time.monotonic()
                mw.proc.send_signal(signal.SIGTERM)
                rc = mw.wait(timeout=LOCK_TIMEOUT + 60)
                took = time.monotonic() - started
                assert rc == 0 and took < PROMPT, f"exit {rc} after {took:.1f}s"
            assert mbox_count(box) == 0
            states = recipient_states(mw)
            assert states == {f"{owner.pw_name}@mx.test": "queued"}
        finally:
            mw.kill()
