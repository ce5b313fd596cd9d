"""The other modes: mailq/-bp, newaliases/-bi, -bv, -q runs, -bd/-bD, and ``mailwright send``,
``mailwright install-links``."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import RecipientResult, RecipientState, RecordResults
from mailwright.queue.writer import QueueWriter
from tests.support.daemon import Mailwright
from tests.support.sendmail import Tools, envelope_of, make_entry_points, short_tmp


@pytest.fixture
def tools() -> Iterator[Tools]:
    with short_tmp() as root:
        # every destination is a closed port: a queue run defers at once, no DNS needed
        table = root / "transport"
        root.mkdir(parents=True, exist_ok=True)
        table.write_text("* smtp:[127.0.0.1]:1\n")
        mw = Mailwright(
            root,
            {
                "hostname": "mx.test",
                "routing": {"transport_table": str(table)},
                "queue": {"host_status_timeout": 0},
            },
        )
        mw.start()
        try:
            yield Tools(mw, root / "bin")
        finally:
            mw.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 20) -> None:
    """Poll a condition that has no event to wait on (a file a forked daemon writes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# ---- mailq / -bp ------------------------------------------------------------------------------
def test_mailq_lists_the_queue_in_sendmails_layout(tools: Tools) -> None:
    empty = tools.run(program="mailq")
    assert empty.returncode == 0
    assert empty.stdout.decode() == f"{tools.queue_dir} is empty\n\t\tTotal requests: 0\n"
    _, first, _, _ = tools.submit("-f", "a@x.test", "b@y.test", "c@y.test", input=b"x\n")
    _, second, _, _ = tools.submit("d@z.test", input=b"y\n")
    out = tools.run(program="mailq").stdout.decode()
    lines = out.splitlines()
    assert lines[0] == f"\t\t{tools.queue_dir} (2 requests)"
    assert lines[1].startswith("-----Q-ID------ --Size-- -----Q-Time-----")
    assert lines[2].startswith(f"{first.queue_id} ") and lines[2].endswith("<a@x.test>")
    assert lines[3:5] == ["\t\t\t\t\t <b@y.test>", "\t\t\t\t\t <c@y.test>"]
    assert lines[5].startswith(f"{second.queue_id} ")
    assert lines[-1] == "\t\tTotal requests: 2"
    assert tools.run("-bp").stdout.decode() == out
    assert tools.run("-bP").stdout.decode() == f"{tools.queue_dir}: entries=2\n"


# ---- newaliases / -bi, -bv ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("program", "args"), [("newaliases", ()), ("sendmail", ("-bi",)), ("sendmail", ("-I",))]
)
def test_newaliases_compiles_the_alias_file(
    tools: Tools, program: str, args: tuple[str, ...]
) -> None:
    proc = tools.run(*args, program=program)
    assert proc.returncode == 0, proc.stderr
    source = tools.mw.config["routing"]["alias_file"]
    assert proc.stdout.decode() == f"{source}: 4 aliases, longest 4 bytes, 33 bytes total\n"


def test_bv_tells_local_from_remote_and_finds_bad_syntax(tools: Tools) -> None:
    proc = tools.run("-bv", "root", "User", "x@example.org")
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.decode().splitlines() == [
        "root@mx.test... deliverable: mailer local, user root (mbox /var/mail/root)",
        "root@mx.test... deliverable: mailer local, user root (mbox /var/mail/root)",
        "x@example.org... deliverable: mailer esmtp, host [127.0.0.1]:1, user x@example.org",
    ]
    proc = tools.run("-bv", "Bob@MX.test", "localhost-user@localhost")
    assert proc.returncode == 67
    assert proc.stdout.decode().splitlines() == [
        "Bob@MX.test... User unknown",
        "localhost-user@localhost... User unknown",
    ]
    proc = tools.run("-bv", "ok@x.test", "bad@@x.test")
    assert proc.returncode == 67
    assert proc.stdout.decode().splitlines()[1].startswith("bad@@x.test... invalid address:")


# ---- -q ---------------------------------------------------------------------------------------
def defer_everything(tools: Tools) -> float:
    later = time.time() + 10_000
    store = SqliteQueueStore(tools.queue_dir / "queue.db")
    store.open(recover=False)
    writer = QueueWriter(store)
    writer.start()
    try:
        results = [
            RecipientResult(
                m.queue_id,
                r.index,
                RecipientState.QUEUED,
                next_attempt=later,
                attempted_at=time.time(),
                status="4.4.1",
                reply="no answer",
            )
            for m in store.list_messages()
            for r in m.recipients
        ]
        writer.execute_sync(RecordResults(results))
    finally:
        writer.stop()
        store.close()
    return later


def attempts(tools: Tools) -> dict[str, int]:
    store = tools.store()
    try:
        return {m.queue_id: max(r.attempts for r in m.recipients) for m in store.list_messages()}
    finally:
        store.close()


@pytest.mark.parametrize(
    ("flag", "expected"),
    [("-qRexample.org", {"A"}), ("-qSbob", {"B"}), ("-qIMATCH", {"C"}), ("-q", {"A", "B", "C"})],
)
def test_queue_runs_select_by_substring(tools: Tools, flag: str, expected: set[str]) -> None:
    ids = {
        "A": tools.submit("-f", "alice@x.test", "r@example.org", input=b"a\n")[1].queue_id,
        "B": tools.submit("-f", "bob@x.test", "r@other.test", input=b"b\n")[1].queue_id,
        "C": tools.submit("-f", "carol@x.test", "r@third.test", input=b"c\n")[1].queue_id,
    }
    tools.mw.stop()
    defer_everything(tools)
    assert set(attempts(tools).values()) == {1}
    if flag == "-qIMATCH":
        flag = "-qI" + ids["C"][-6:].lower()
    # no daemon runs: the queue run happens in the foreground, for the selection only
    proc = tools.run("-v", flag)
    assert proc.returncode == 0, proc.stderr
    assert b"recipient(s) due now" in proc.stdout
    tried = {name for name, qid in ids.items() if attempts(tools)[qid] == 2}
    assert tried == expected


def test_periodic_queue_runs_until_sigterm(tools: Tools) -> None:
    tools.submit("u", input=b"x\n")
    proc = subprocess.Popen(
        [str(tools.bindir / "sendmail"), "-v", "-q1s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=tools.env(),
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().startswith(b"queue run: ")
        assert proc.stdout.readline().startswith(b"queue run: ")  # one second later
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


# ---- -bD / -bd --------------------------------------------------------------------------------
@pytest.fixture
def stopped() -> Iterator[Tools]:
    with short_tmp() as root:
        # every destination is a closed port: a queue run defers at once, no DNS needed
        table = root / "transport"
        root.mkdir(parents=True, exist_ok=True)
        table.write_text("* smtp:[127.0.0.1]:1\n")
        mw = Mailwright(
            root,
            {
                "hostname": "mx.test",
                "routing": {"transport_table": str(table)},
                "queue": {"host_status_timeout": 0},
            },
        )
        yield Tools(mw, root / "bin")


def test_bD_runs_the_daemon_in_the_foreground(stopped: Tools) -> None:
    proc = subprocess.Popen(
        [str(stopped.bindir / "sendmail"), "-bD", "-q30m"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=stopped.env(),
    )
    assert proc.stderr is not None
    try:
        seen = []
        while not any("mailwright ready" in line for line in seen):
            line = proc.stderr.readline().decode()
            assert line, "\n".join(seen)
            seen.append(line)
        assert any("-q1800s" in line for line in seen)
        _, stored, _, _ = stopped.submit("u", input=b"x\n")
        assert stored.origin.local_user
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_bd_detaches_and_records_its_pid(stopped: Tools) -> None:
    proc = stopped.run("-bd", "-q30m", timeout=30)
    assert proc.returncode == 0, proc.stderr
    pid_file = stopped.queue_dir / "mailwright.pid"
    socket_path = stopped.queue_dir / "submit.sock"
    wait_until(lambda: pid_file.exists() and socket_path.exists())
    pid = int(pid_file.read_text())
    pidfd = os.pidfd_open(pid)
    try:
        _, stored, _, _ = stopped.submit("u", input=b"x\n")
        assert stored.origin.local_user
        os.kill(pid, signal.SIGTERM)
        ready, _, _ = select.select([pidfd], [], [], 30)
        assert ready, "the daemon did not stop"
    finally:
        os.close(pidfd)
    assert not pid_file.exists() and not socket_path.exists()


# ---- mailwright send -----------------------------------------------------------------------
def mailwright(tools: Tools, *args: str, input: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mailwright", *args],
        input=input,
        capture_output=True,
        env=tools.env(),
        timeout=60,
    )


def test_mailwright_send(tools: Tools) -> None:
    before = tools.queue_ids()
    proc = mailwright(
        tools,
        "send",
        "--to",
        "a@x.test",
        "--cc",
        "b@x.test",
        "--bcc",
        "c@x.test",
        "--subject",
        "Grüße",
        "--header",
        "X-Test: 1",
        input="Hallo Welt ✓\n".encode(),
    )
    assert proc.returncode == 0, proc.stderr
    (qid,) = tools.queue_ids() - before
    assert proc.stdout.decode() == f"queued as {qid}\n"
    stored, msg, _ = tools.read(qid)
    assert envelope_of(stored)[1] == ["a@x.test", "b@x.test", "c@x.test"]
    assert msg["Subject"] == "Grüße" and msg["X-Test"] == "1" and msg["Bcc"] is None
    assert msg.get_content().strip() == "Hallo Welt ✓"
    assert stored.envelope.params.body == "8BITMIME"
    proc = mailwright(tools, "send", "--to", "a@x.test", "--json", input=b"x\n")
    result = json.loads(proc.stdout)
    assert result["queued"] and result["via"] == "socket" and result["exit_code"] == 0


def test_mailwright_send_without_the_daemon(tools: Tools) -> None:
    tools.mw.stop()
    proc = mailwright(tools, "send", "--to", "a@x.test", input=b"x\n")
    assert proc.returncode == 0, proc.stderr
    assert b"left in the maildrop" in proc.stdout
    proc = mailwright(tools, "send", "--to", "bad@@x", input=b"x\n")
    assert proc.returncode == 67 and b"invalid address" in proc.stderr


def test_help_has_examples(tools: Tools) -> None:
    for command in ("send", "install-links"):
        proc = mailwright(tools, command, "--help")
        assert proc.returncode == 0 and b"Examples:" in proc.stdout


# ---- mailwright install-links -----------------------------------------------------------------
def test_install_links(tools: Tools, tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    bindir = tmp_path / "venv" / "bin"
    make_entry_points(bindir)
    args = ("install-links", "--prefix", str(prefix), "--bindir", str(bindir))
    proc = mailwright(tools, *args)
    assert proc.returncode == 0, proc.stderr
    sendmail = prefix / "usr/sbin/sendmail"
    assert os.readlink(sendmail) == str(bindir / "sendmail")
    assert os.readlink(prefix / "usr/bin/mailq") == str(bindir / "mailq")
    assert os.readlink(prefix / "usr/bin/newaliases") == str(bindir / "newaliases")
    # the links work, and the program name still selects the mode
    listing = subprocess.run(
        [str(prefix / "usr/bin/mailq")], capture_output=True, env=tools.env(), check=True
    ).stdout.decode()
    assert "Total requests: 0" in listing
    assert b"(already)" in mailwright(tools, *args).stdout


def test_install_links_leaves_foreign_files_alone_unless_forced(
    tools: Tools, tmp_path: Path
) -> None:
    prefix = tmp_path / "root"
    bindir = tmp_path / "bin"
    make_entry_points(bindir)
    foreign = prefix / "usr/sbin/sendmail"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\n# the real Sendmail\n")
    args = ("install-links", "--prefix", str(prefix), "--bindir", str(bindir))
    proc = mailwright(tools, *args)
    assert proc.returncode == 73
    assert b"refusing to replace" in proc.stderr
    assert foreign.read_text().endswith("the real Sendmail\n")
    assert os.readlink(prefix / "usr/bin/mailq") == str(bindir / "mailq")  # the others are done
    proc = mailwright(tools, *args, "--force")
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(foreign) == str(bindir / "sendmail")
    assert (prefix / "usr/sbin/sendmail.pre-mailwright").read_text().endswith("Sendmail\n")


def test_install_links_needs_the_entry_points(tools: Tools, tmp_path: Path) -> None:
    proc = mailwright(
        tools, "install-links", "--prefix", str(tmp_path), "--bindir", str(tmp_path / "empty")
    )
    assert proc.returncode == 72 and b"no entry point" in proc.stderr
    assert not (tmp_path / "usr").exists()
