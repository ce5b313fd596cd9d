"""Issue 14: a daemon of several worker processes under one supervisor.

Real daemons (``server.workers = 2``), real clients (smtplib, the CLI, ``sendmail``), a
real next hop (Postfix's smtp-sink). The workers share the listening socket and the queue:
mail accepted by any of them is one queue to ``mailq`` and ``mailwright queue``, each
message is delivered once, a worker killed with SIGKILL is started again without losing
anything it answered 250 for, SIGHUP reloads every worker or none, SIGTERM stops them all.
"""

from __future__ import annotations

import contextlib
import json
import mailbox
import os
import re
import signal
import smtplib
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.daemon import control
from tests.support import smtp_sink
from tests.support.daemon import Mailwright, free_port, wait_until
from tests.support.opentmp import open_tmp
from tests.support.peers import is_root, peer
from tests.support.sendmail import Tools, short_tmp
from tests.support.service import ServiceDaemon, descendants, process_status, system_user

WORKERS = {"server": {"workers": 2}}


def worker_pids(mw: Mailwright) -> dict[int, int]:
    """The pid each worker has now (the last ``worker N started (pid P)`` line)."""
    pids: dict[int, int] = {}
    for line in mw.log:
        found = re.search(r"worker (\d+) started \(pid (\d+)\)", line)
        if found:
            pids[int(found[1])] = int(found[2])
    return pids


def send(port: int, number: int, to: str = "someone@example.com") -> str:
    """One message in its own session; the queue id of its 250."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        body = f"From: a@example.org\r\nSubject: number {number}\r\n\r\nhello {number}\r\n"
        client.mail("a@example.org")
        client.rcpt(to)
        code, text = client.data(body.encode())
        assert code == 250, text
        found = re.search(rb"queued as ([0-9A-Z]{15})|<?([0-9A-Z]{15})>?", text)
        assert found, text
        return (found[1] or found[2]).decode()


def send_many(port: int, count: int, sessions: int) -> list[str]:
    ids: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def run(start: int) -> None:
        try:
            for n in range(start, count, sessions):
                queue_id = send(port, n)
                with lock:
                    ids.append(queue_id)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return ids


def queue_listing(mw: Mailwright) -> list[dict[str, Any]]:
    listed = mw.cli("queue", "list", "--json")
    assert listed.returncode == 0, listed.stderr.decode()
    result: list[dict[str, Any]] = json.loads(listed.stdout)
    return result


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Mailwright]:
    mw = Mailwright(tmp_path, WORKERS).start()
    try:
        yield mw
    finally:
        mw.stop()


def test_two_workers_accept_into_one_queue_that_every_tool_sees(workers: Mailwright) -> None:
    mw = workers
    assert sorted(worker_pids(mw)) == [0, 1]
    ids = send_many(mw.port, 40, sessions=8)
    assert len(set(ids)) == 40  # queue ids never collide across workers
    listed = {m["queue_id"] for m in queue_listing(mw)}
    assert listed == set(ids)
    mailq = mw.cli("queue", "list")  # mailq's layout
    assert mailq.returncode == 0, mailq.stderr.decode()
    assert all(i in mailq.stdout.decode() for i in ids)
    # the mail log names the worker that took each message: both may have, together all
    wait_until(lambda: len(taken_by(mw)) >= 40, 30, "forty from= lines")
    assert len(taken_by(mw)) == 40
    status = mw.cli("status")
    assert status.returncode == 0, status.stderr.decode()


def test_a_killed_worker_is_restarted_and_nothing_acknowledged_is_lost(
    workers: Mailwright,
) -> None:
    mw = workers
    before = worker_pids(mw)
    acknowledged: list[str] = []
    refused: list[BaseException] = []
    done = threading.Event()

    def client() -> None:
        n = 0
        while not done.is_set():
            n += 1
            try:
                acknowledged.append(send(mw.port, n))
            except (OSError, smtplib.SMTPException) as exc:  # its worker was killed
                refused.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acknowledged) >= 20, 60, "mail flowing")
    os.kill(before[1], signal.SIGKILL)
    mw.wait_log("worker 1 (pid", timeout=30)
    wait_until(lambda: worker_pids(mw)[1] != before[1], 30, "worker 1 started again")
    mw.wait_log("worker 1 of 2 ready", occurrence=2, timeout=30)
    count = len(acknowledged)
    wait_until(lambda: len(acknowledged) >= count + 20, 60, "mail flowing again")
    done.set()
    for t in threads:
        t.join(60)
    assert worker_pids(mw)[0] == before[0]  # the other worker was left alone
    listed = {m["queue_id"] for m in queue_listing(mw)}
    assert set(acknowledged) <= listed, set(acknowledged) - listed
    assert any("restarting" in line for line in mw.log)


def test_sighup_reloads_every_worker_or_none(workers: Mailwright) -> None:
    mw = workers
    assert mw.proc is not None
    good = mw.config_path.read_text()
    mw.config_path.write_text(good + "\n[server.timeouts]\nnot_a_setting = 3\n")
    mw.proc.send_signal(signal.SIGHUP)
    mw.wait_log("configuration refused")
    assert not any("SIGHUP: configuration reloaded" in line for line in mw.log)
    mw.config["server"]["max_recipients"] = 7
    mw.write_config()
    mw.proc.send_signal(signal.SIGHUP)
    mw.wait_log("SIGHUP: configuration reloaded", occurrence=2)
    reloaded = {
        line.split("[")[1].split("]")[0]
        for line in mw.log
        if "SIGHUP: configuration reloaded" in line
    }
    assert reloaded == {str(p) for p in worker_pids(mw).values()}
    with smtplib.SMTP("127.0.0.1", mw.port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("a@example.org")
        codes = [client.rcpt(f"r{n}@example.com")[0] for n in range(9)]
    assert codes[:7] == [250] * 7 and codes[7] == 452  # every worker has the new limit


def cpus_of(pid: int) -> set[frozenset[int]]:
    """The CPU sets of every thread of ``pid`` (the queue writer's threads included)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return {frozenset(os.sched_getaffinity(int(task.name))) for task in tasks}


def cpu_list(text: str) -> frozenset[int]:
    """``0-2,5`` as in ``Cpus_allowed_list``: {0, 1, 2, 5}."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def taken_by(mw: Mailwright) -> list[str]:
    """The pid in each mail log line of a message taken (``from=<a@example.org>``)."""
    return [line.split("[")[1].split("]")[0] for line in mw.log if "from=<a@example.org>" in line]


def held_sessions(port: int, count: int) -> list[smtplib.SMTP]:
    """``count`` sessions open at once, greeted and idle."""
    sessions = []
    for _ in range(count):
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.ehlo("held.test")
        sessions.append(client)
    return sessions


def test_one_client_at_a_time_is_served_by_worker_zero_alone(workers: Mailwright) -> None:
    """With one connection open or none, worker 1 stands by: every session, one after
    the other, is worker 0's (rather than whichever worker won the race for it)."""
    mw = workers
    pids = worker_pids(mw)
    assert any("standing by until worker 0 has company" in line for line in mw.log)
    for n in range(12):
        send(mw.port, n)
    # the log reaches us through a pipe and a reader thread, maybe after the 221: wait
    wait_until(lambda: len(taken_by(mw)) >= 12, 30, "twelve from= lines")
    assert taken_by(mw) == [str(pids[0])] * 12
    assert "2 workers, 1 listening" in status_text(mw)


def test_with_company_every_worker_listens_and_stands_by_again(workers: Mailwright) -> None:
    mw = workers
    pids = worker_pids(mw)
    held = held_sessions(mw.port, 2)  # two open: worker 0 wakes worker 1
    try:
        sent = 0

        def worker_1_took_one() -> bool:
            nonlocal sent
            sent += 1
            send(mw.port, sent)
            return str(pids[1]) in taken_by(mw)

        wait_until(worker_1_took_one, 60, "a session of worker 1")
        shown = status_text(mw)  # the control socket: not a connection that counts
        assert "2 workers," in shown and "listening" not in shown
    finally:
        for client in held:
            client.quit()
    # all closed: worker 0 saw the daemon idle and worker 1 stands by again
    wait_until(lambda: not _listens(pids[1], mw.port), 30, "worker 1 standing by")
    wait_until(lambda: len(taken_by(mw)) >= sent, 30, f"{sent} from= lines")
    before = len(taken_by(mw))
    for n in range(8):
        send(mw.port, 100 + n)
    wait_until(lambda: len(taken_by(mw)) >= before + 8, 30, "eight more from= lines")
    assert taken_by(mw)[before:] == [str(pids[0])] * 8


def test_while_worker_zero_is_down_the_others_listen(workers: Mailwright) -> None:
    """Worker 0 killed while it listened alone: the supervisor makes worker 1 listen, and
    it goes on listening until worker 0 is back and has seen the daemon idle."""
    mw = workers
    pids = worker_pids(mw)
    assert not _listens(pids[1], mw.port)
    os.kill(pids[0], signal.SIGKILL)
    wait_until(lambda: _listens(pids[1], mw.port), 30, "worker 1 listening")
    wait_until(lambda: worker_pids(mw)[0] != pids[0], 30, "worker 0 started again")
    mw.wait_log("worker 0 of 2 ready", occurrence=2, timeout=30)
    sent = 0

    def alone_again() -> bool:
        nonlocal sent
        sent += 1
        send(mw.port, sent)  # answered throughout, by either worker
        return not _listens(pids[1], mw.port)

    wait_until(alone_again, 60, "worker 1 standing by again")
    assert worker_pids(mw)[1] == pids[1]


def status_text(mw: Mailwright) -> str:
    shown = mw.cli("status")
    assert shown.returncode == 0, shown.stderr.decode()
    return shown.stdout.decode()


def _listens(pid: int, port: int) -> bool:
    """Has process ``pid`` a server on the listening socket of ``port`` (an fd on it that
    it polls)? Read from /proc: the sockets it holds in LISTEN state, one per server, plus
    the duplicate it keeps while standing by."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:  # LISTEN
            inodes.add(fields[9])
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            held += target.startswith("socket:[") and target[8:-1] in inodes
    return held > 1


@pytest.mark.parametrize("affinity", ["auto", "none"])
def test_each_worker_keeps_to_a_cpu_of_its_own_while_all_listen(affinity: str) -> None:
    """``cpu_affinity = "auto"``: while every worker listens, worker N keeps to the Nth
    CPU; with one connection open or none, they run anywhere ("none": always)."""
    mine = sorted(os.sched_getaffinity(0))
    anywhere = {0: {frozenset(mine)}, 1: {frozenset(mine)}}
    with open_tmp("mw-cpus-") as root:
        out = root / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)  # the program runs as the default user (nobody) when we are root
        (root / "aliases").write_text(
            f'prog: "|grep Cpus_allowed_list /proc/self/status >> {out}/cpus"\n'
        )
        settings = {
            "server": {"workers": 2, "cpu_affinity": affinity},
            "delivery": {"mode": "background"},
            "routing": {"local_domains": ["mx.test"], "alias_file": str(root / "aliases")},
        }
        mw = Mailwright(root / "mw", settings).start()
        try:
            pids = worker_pids(mw)

            def placed() -> dict[int, set[frozenset[int]]]:
                return {index: cpus_of(pid) for index, pid in pids.items()}

            alone = placed()
            held = held_sessions(mw.port, 2)
            try:
                wait_until(lambda: _listens(pids[1], mw.port), 30, "worker 1 listening")
                together = placed()
            finally:
                for client in held:
                    client.quit()
            wait_until(lambda: not _listens(pids[1], mw.port), 30, "worker 1 standing by")
            wait_until(lambda: placed() == anywhere, 30, "the workers anywhere again")
            send(mw.port, 1, to="prog@mx.test")
            cpus = out / "cpus"
            wait_until(lambda: cpus.exists() and cpus.read_text().endswith("\n"), 30, "program")
            program = cpu_list(cpus.read_text().split(":")[1])
        finally:
            mw.stop()
    assert alone == anywhere
    if affinity == "auto" and len(mine) >= 2:
        assert together == {0: {frozenset({mine[0]})}, 1: {frozenset({mine[1]})}}
    else:
        assert together == anywhere
    assert program == frozenset(mine)  # a program delivered to is not kept to one CPU


def test_sigterm_stops_every_worker_and_the_supervisor(tmp_path: Path) -> None:
    mw = Mailwright(tmp_path, WORKERS).start()
    pids = worker_pids(mw)
    assert mw.stop() == 0
    for index, pid in pids.items():
        assert any(f"worker {index} (pid {pid}) stopped (status 0)" in line for line in mw.log)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_local_submission_goes_through_worker_zero() -> None:
    with short_tmp() as root:
        mw = Mailwright(root, WORKERS).start()
        try:
            tools = Tools(mw, root / "bin")
            proc, stored, _, _ = tools.submit(
                "-i", "someone@example.com", input=b"Subject: local\n\nhi\n"
            )
            assert str(stored.envelope.recipients[0].address) == "someone@example.com"
            assert proc.returncode == 0
        finally:
            mw.stop()


@peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")
def test_workers_relay_every_message_exactly_once() -> None:
    with short_tmp() as root:
        sink = smtp_sink.SmtpSink(root / "sink").start()
        try:
            table = root / "transport"
            table.write_text(f"* smtp:[127.0.0.1]:{sink.port}\n")
            mw = Mailwright(
                root / "mw",
                {
                    **WORKERS,
                    "routing": {"transport_table": str(table)},
                    "delivery": {"mode": "background", "idle_connection_timeout": 0.5},
                },
            ).start()
            try:
                ids = send_many(mw.port, 60, sessions=6)
                wait_until(lambda: not queue_listing(mw), 60, "an empty queue")
                senders = [line for line in mw.log if "stat=Sent" in line]
                assert len(senders) == 60
            finally:
                mw.stop()
            wait_until(lambda: len(sink.messages()) >= 60, 30, "the sink to have all")
            subjects = sorted(
                re.search(rb"Subject: number (\d+)", m.content)[1]  # type: ignore[index]
                for m in sink.messages()
            )
            assert subjects == sorted(str(n).encode() for n in range(60)), "lost or doubled"
            assert len(set(ids)) == 60
        finally:
            sink.stop()


# ---- as a service: one privileged helper per worker ---------------------------------------


@peer("root", is_root(), "the daemon gives up root for a service account")
def test_workers_under_a_service_account_deliver_locally_through_their_helpers() -> None:
    tag = os.getpid() % 100000
    with (
        system_user(f"mwsvw{tag}", system=True) as service,
        system_user(f"mwbxw{tag}") as owner,
        open_tmp("mw-i14-") as root,
    ):
        (root / "mail").mkdir()
        (root / "aliases").write_text("postmaster: root\n")
        config = {
            **WORKERS,
            "delivery": {"mode": "background"},
            "service": {"user": service.pw_name},
            "routing": {"alias_file": str(root / "aliases")},
            "local_delivery": {"mail_spool": str(root / "mail")},
        }
        mw = ServiceDaemon(root, config)
        try:
            mw.start()
            ready = mw.wait_notify(lambda f: f.get("READY") == "1")
            assert ready["STATUS"] == "accepting mail with 2 workers"
            assert mw.proc is not None
            below = {pid: process_status(pid) for pid in descendants(mw.proc.pid)}
            as_root = sorted(st["Name"] for st in below.values() if st["Uid"].split()[1] == "0")
            assert as_root == ["mailwright-priv"] * 2, below
            assert process_status(mw.proc.pid)["Uid"].split()[1] == str(service.pw_uid)

            box = root / "mail" / owner.pw_name
            to = f"{owner.pw_name}@mx.test"
            ids = [send(mw.port, n, to) for n in range(10)]
            wait_until(lambda: mbox_count(box) == 10, 60, "ten messages in the mailbox")
            assert box.stat().st_uid == owner.pw_uid
            # a worker killed and started again keeps its helper's channel
            pids = worker_pids(mw)
            os.kill(pids[1], signal.SIGKILL)
            wait_until(lambda: worker_pids(mw)[1] != pids[1], 30, "worker 1 started again")
            mw.wait_log("worker 1 of 2 ready", occurrence=2, timeout=30)
            ids += [send(mw.port, n, to) for n in range(10, 30)]
            wait_until(lambda: mbox_count(box) >= 30, 60, "thirty messages in the mailbox")
            assert len(set(ids)) == 30
            assert mw.stop() == 0
        finally:
            mw.close()


def mbox_count(path: Path) -> int:
    if not path.exists():
        return 0
    box = mailbox.mbox(path, create=False)
    try:
        return len(box)
    finally:
        box.close()


def test_a_worker_that_cannot_start_stops_the_daemon_with_its_status(tmp_path: Path) -> None:
    """The workers build their parts after the fork: a certificate that does not load
    stops each of them with EX_CONFIG, and the daemon exits 78 rather than run short."""
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    mw = Mailwright(tmp_path, {**WORKERS, "tls": {"certificate": str(junk)}})
    mw.write_config()
    serve = subprocess.run(mw.command("serve"), env=mw.env(), capture_output=True, timeout=60)
    err = serve.stderr.decode()
    assert serve.returncode == 78, err
    assert "stopping the daemon" in err and "Traceback" not in err
    assert "mailwright ready" not in err


@peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")
def test_a_flush_wakes_every_workers_scheduler() -> None:
    """``queue flush`` goes to worker 0's control socket; through the supervisor (SIGUSR2)
    worker 1 looks at the queue at once too, rather than at its next retry time."""
    with short_tmp() as root:
        port = free_port()
        table = root / "transport"
        table.write_text(f"* smtp:[127.0.0.1]:{port}\n")
        mw = Mailwright(
            root / "mw",
            {
                **WORKERS,
                "routing": {"transport_table": str(table)},
                "delivery": {"mode": "background", "max_concurrency": 1},
                "queue": {"host_status_timeout": 0},
            },
        ).start()
        sink = smtp_sink.SmtpSink(root / "sink", port=port)
        try:
            send_many(mw.port, 60, sessions=6)  # the next hop is down: all deferred
            wait_until(
                lambda: sum("stat=Deferred" in line for line in mw.log) >= 60, 60, "deferrals"
            )
            sink.start()
            flushed = mw.cli("queue", "flush")
            assert flushed.returncode == 0, flushed.stderr.decode()
            wait_until(lambda: not queue_listing(mw), 60, "an empty queue")
            delivered_by = {
                line.split("[")[1].split("]")[0] for line in mw.log if "stat=Sent" in line
            }
            assert delivered_by == {str(pid) for pid in worker_pids(mw).values()}
        finally:
            mw.stop()
            sink.stop()


@peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")
def test_status_shows_the_recent_bounces_of_every_worker() -> None:
    """Each worker records its bounces; ``mailwright status`` (worker 0) shows them all."""
    with short_tmp() as root:
        sink = smtp_sink.SmtpSink(root / "sink", "-f", "RCPT").start()  # 550 to every RCPT
        try:
            table = root / "transport"
            table.write_text(f"* smtp:[127.0.0.1]:{sink.port}\n")
            mw = Mailwright(
                root / "mw",
                {
                    **WORKERS,
                    "routing": {"transport_table": str(table)},
                    "delivery": {"mode": "background"},
                    # the null sender's failures go to postmaster: kept in the test's spool
                    "local_delivery": {"mail_spool": str(root / "mail")},
                },
            ).start()
            try:
                count = 30
                send_bounced(mw.port, count, sessions=6)
                wait_until(lambda: len(bounced(mw)) >= count, 60, "bounces")
                bounced_by = {line.split("[")[1].split("]")[0] for line in bounced(mw)}
                assert bounced_by == {str(pid) for pid in worker_pids(mw).values()}
                queue = Path(mw.config["queue"]["directory"])
                answer = control.ask(queue, "status", detail=True)
                assert answer and answer["ok"], answer
                recipients = {b["recipient"] for b in answer["status"]["bounces"]}
                assert recipients == {f"r{n}@example.com" for n in range(count)}
                shown = mw.cli("status", "--json")
                assert shown.returncode == 0, shown.stderr.decode()
                assert len(json.loads(shown.stdout)["bounces"]) == 10  # the newest
            finally:
                mw.stop()
        finally:
            sink.stop()


def bounced(mw: Mailwright) -> list[str]:
    return [line for line in mw.log if "@example.com>" in line and "dsn=5." in line]


def send_bounced(port: int, count: int, sessions: int) -> None:
    """``count`` messages from the null sender (a bounce makes no report) to r<n>@."""

    errors: list[BaseException] = []

    def run(start: int) -> None:
        try:
            for n in range(start, count, sessions):
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    message = b"Subject: x\r\n\r\nx\r\n"
                    assert not client.sendmail("", [f"r{n}@example.com"], message)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


class CountingSink(socketserver.ThreadingTCPServer):
    """A next hop that counts its concurrent connections and transactions (MAIL FROM to
    the reply after the data), and answers the data after ``hold`` seconds so that
    transactions in flight together overlap."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, hold: float) -> None:
        super().__init__(("127.0.0.1", 0), CountingSession)
        self.hold = hold
        self.lock = threading.Lock()
        self.connections = self.transactions = 0
        self.most_connections = self.most_transactions = 0
        self.messages = 0

    def count(self, what: str, delta: int) -> None:
        with self.lock:
            now = getattr(self, what) + delta
            setattr(self, what, now)
            most = f"most_{what}"
            setattr(self, most, max(getattr(self, most), now))
            if what == "transactions" and delta < 0:
                self.messages += 1


class CountingSession(socketserver.StreamRequestHandler):
    server: CountingSink

    def handle(self) -> None:
        sink = self.server
        sink.count("connections", 1)
        try:
            self.reply(b"220 sink.test ESMTP")
            while line := self.rfile.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    self.reply(b"250 sink.test")
                elif verb == b"MAIL":
                    sink.count("transactions", 1)
                    self.reply(b"250 2.1.0 Ok")
                elif verb == b"DATA":
                    self.reply(b"354 End data with <CR><LF>.<CR><LF>")
                    while self.rfile.readline() not in (b".\r\n", b""):
                        pass
                    threading.Event().wait(sink.hold)  # the peer is slow to answer
                    sink.count("transactions", -1)
                    self.reply(b"250 2.0.0 Ok: queued")
                elif verb == b"QUIT":
                    self.reply(b"221 2.0.0 Bye")
                    return
                else:  # RCPT, RSET, NOOP
                    self.reply(b"250 2.0.0 Ok")
        finally:
            sink.count("connections", -1)

    def reply(self, text: bytes) -> None:
        self.wfile.write(text + b"\r\n")


@pytest.mark.parametrize("limit", [1, 3])
def test_the_per_destination_limit_holds_across_workers(tmp_path: Path, limit: int) -> None:
    """``max_per_destination`` is the daemon's: 2 workers never have more deliveries in
    flight to one next hop together (1 // 2 would be 0 each, and 1 each is 2)."""
    sink = CountingSink(hold=0.05)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        table = tmp_path / "transport"
        table.write_text(f"* smtp:[127.0.0.1]:{sink.server_address[1]}\n")
        delivery = {"mode": "background", "max_per_destination": limit}
        config = {**WORKERS, "routing": {"transport_table": str(table)}, "delivery": delivery}
        mw = Mailwright(tmp_path / "mw", config).start()
        try:
            count = 40
            send_many(mw.port, count, sessions=8)
            wait_until(lambda: sink.messages >= count, 60, "every message at the sink")
            sent_by = {line.split("[")[1].split("]")[0] for line in mw.log if "stat=Sent" in line}
        finally:
            mw.stop()
        assert sink.messages == count
        assert sent_by == {str(pid) for pid in worker_pids(mw).values()}  # both delivered
        assert sink.most_transactions == limit, sink.most_transactions
    finally:
        sink.shutdown()
        sink.server_close()
