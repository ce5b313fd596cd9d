"""mbox delivery: the format (read back by Python's mailbox and by mailutils), locking
under concurrent writers, and all-or-nothing appends (failures, a writer killed
mid-write, disk full)."""

from __future__ import annotations

import mailbox
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwright.delivery.mbox import MailboxError, MboxEncoder, MboxOptions, append, mbox_message
from tests.support.peers import have_programs, is_root, peer, require_peer

SRC = Path(__file__).resolve().parents[3] / "src"
root_only = peer("root", is_root(), "mounts a tmpfs, writes as other users")


def message(n: int, body: bytes = b"") -> bytes:
    text = (
        f"From: sender{n}@example.org\r\nTo: alice@mx.test\r\nSubject: message {n}\r\n\r\n"
    ).encode()
    return text + (body or b"Hello %d.\r\nFrom the start of a line.\r\n>From quoted.\r\n" % n)


def entry(n: int, body: bytes = b"", sender: str = "s@example.org") -> list[bytes]:
    return list(mbox_message(b"Return-Path: <%s>\n" % sender.encode(), [message(n, body)], sender))


def read(path: Path) -> list[mailbox.mboxMessage]:
    box = mailbox.mbox(path, create=False)
    try:
        return list(box)
    finally:
        box.close()


# ---- format -----------------------------------------------------------------------------------


def reference(data: bytes) -> bytes:
    return re.sub(rb"(?m)^From ", b">From ", data.replace(b"\r\n", b"\n"))


@given(
    st.lists(st.sampled_from([b"From ", b"Fr", b"om", b"\r", b"\n", b"\r\n", b"x", b">"])),
    st.data(),
)
def test_encoder_matches_a_whole_buffer_conversion(parts: list[bytes], data: st.DataObject) -> None:
    text = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    encoder = MboxEncoder()
    out = b""
    last = 0
    for cut in [*cuts, len(text)]:
        out += encoder.feed(text[last:cut])
        last = cut
    out += encoder.finish()
    assert out == reference(text)


def test_format_is_read_back_by_python_and_mailutils(tmp_path: Path) -> None:
    box = tmp_path / "alice"
    for n in range(3):
        append(box, entry(n, sender="" if n == 2 else "s@example.org"), MboxOptions())
    raw = box.read_bytes()
    assert raw.startswith(b"From s@example.org ")
    assert b"\nFrom MAILER-DAEMON " in raw  # the null sender
    assert b"\n>From the start of a line.\n" in raw and b"\n>>From quoted.\n" not in raw
    assert b"\r" not in raw and raw.endswith(b".\n\n")
    messages = read(box)
    assert [m["Subject"] for m in messages] == ["message 0", "message 1", "message 2"]
    assert messages[0].get_payload() == "Hello 0.\n>From the start of a line.\n>From quoted.\n"
    before = raw
    count = subprocess.run(["messages", "-q", str(box)], capture_output=True, text=True)
    assert count.stdout.strip() == "3", count
    frm = subprocess.run(["frm", str(box)], capture_output=True, text=True)
    assert frm.stdout.count("message ") == 3, frm
    assert box.read_bytes() == before  # the readers changed nothing


def test_message_without_final_newline_is_terminated(tmp_path: Path) -> None:
    box = tmp_path / "alice"
    append(box, mbox_message(b"", [b"Subject: x\r\n\r\nno newline"], "a@b"), MboxOptions())
    append(box, mbox_message(b"", [b"Subject: y\r\n\r\nok\r\n"], "a@b"), MboxOptions())
    assert box.read_bytes().split(b"\n", 1)[1].startswith(b"Subject: x\n\nno newline\n\nFrom a@b ")
    assert [m["Subject"] for m in read(box)] == ["x", "y"]


# ---- locking and concurrency ------------------------------------------------------------------

WRITER = """
import sys
from pathlib import Path
from mailwright.delivery.mbox import MboxOptions, append, mbox_message
path, worker, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    body = b"".join(b"worker %d message %d line %d\\r\\n" % (worker, i, j) for j in range(200))
    msg = b"Subject: w%d-%d\\r\\n\\r\\n" % (worker, i) + body
    append(path, mbox_message(b"", [msg], "w%d@example.org" % worker), MboxOptions())
"""


def run_python(code: str, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **kw)  # type: ignore[call-overload]


def test_concurrent_deliveries_stay_valid(tmp_path: Path) -> None:
    box = tmp_path / "alice"
    workers, each = 6, 25
    procs = [run_python(WRITER, str(box), str(w), str(each)) for w in range(workers)]
    for p in procs:
        assert p.wait(60) == 0
    messages = read(box)
    assert len(messages) == workers * each
    subjects = sorted(m["Subject"] for m in messages)
    assert subjects == sorted(f"w{w}-{i}" for w in range(workers) for i in range(each))
    for m in messages:
        w, i = m["Subject"][1:].split("-")
        expected = "".join(f"worker {w} message {i} line {j}\n" for j in range(200))
        assert m.get_payload() == expected
    assert subprocess.run(
        ["messages", "-q", str(box)], capture_output=True, text=True
    ).stdout.strip() == str(workers * each)
    assert not Path(str(box) + ".lock").exists()


def test_live_lock_holder_makes_us_wait_then_defer(tmp_path: Path) -> None:
    box = tmp_path / "alice"
    lock = tmp_path / "alice.lock"
    lock.write_text(f"{os.getpid()} {socket.gethostname()} 0 mailwright\n")  # alive: us
    started = time.monotonic()
    with pytest.raises(MailboxError) as err:
        append(box, entry(1), MboxOptions(lock_timeout=0.3))
    assert time.monotonic() - started >= 0.3
    assert (err.value.reply.code, err.value.reply.status) == (451, "4.2.0")
    assert lock.exists()


def test_old_foreign_lock_is_broken(tmp_path: Path) -> None:
    box = tmp_path / "alice"
    lock = tmp_path / "alice.lock"
    lock.write_text("")  # mutt-style empty lock file, abandoned long ago
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    append(box, entry(1), MboxOptions(lock_timeout=5, stale_lock_age=300))
    assert len(read(box)) == 1 and not lock.exists()


def test_young_foreign_lock_is_respected(tmp_path: Path) -> None:
    (tmp_path / "alice.lock").write_text("")
    with pytest.raises(MailboxError):
        append(tmp_path / "alice", entry(1), MboxOptions(lock_timeout=0.2, stale_lock_age=300))


# ---- all or nothing -------------------------------------------------------------------------


def test_failure_while_writing_truncates_back(tmp_path: Path) -> None:
    box = tmp_path / "alice"
    append(box, entry(1), MboxOptions())
    before = box.read_bytes()

    def broken() -> Iterator[bytes]:
        yield b"From x Thu Jan  1 00:00:00 1970\nSubject: half\n\n" + b"x" * 100000
        raise OSError(5, "Input/output error")

    with pytest.raises(MailboxError) as err:
        append(box, broken(), MboxOptions())
    assert err.value.reply.status == "4.3.0"
    assert box.read_bytes() == before
    assert not (tmp_path / "alice.lock").exists()


def test_size_limit_is_mailbox_full(tmp_path: Path) -> None:
    box = tmp_path / "alice"
    append(box, entry(1), MboxOptions(size_limit=2000))
    before = box.read_bytes()
    with pytest.raises(MailboxError) as err:
        append(box, entry(2, body=b"y" * 3000 + b"\r\n"), MboxOptions(size_limit=2000))
    assert (err.value.reply.code, err.value.reply.status) == (452, "4.2.2")
    assert box.read_bytes() == before


VICTIM = """
import sys, os
from pathlib import Path
from mailwright.delivery.mbox import MboxOptions, append
path, signal_file = Path(sys.argv[1]), Path(sys.argv[2])
def pieces():
    yield b"From victim Thu Jan  1 00:00:00 1970\\nSubject: never complete\\n\\n" + b"z" * 300000
    signal_file.write_text("half written")
    os.kill(os.getpid(), 19)  # SIGSTOP: wait here for the test's SIGKILL
    yield b"the rest\\n\\n"
append(path, pieces(), MboxOptions())
"""


def test_delivery_killed_mid_write_leaves_the_mailbox_as_it_was(tmp_path: Path) -> None:
    box = tmp_path / "alice"
    for n in range(2):
        append(box, entry(n), MboxOptions())
    before = box.read_bytes()
    half = tmp_path / "half"
    victim = run_python(VICTIM, str(box), str(half))
    deadline = time.monotonic() + 30
    while not half.exists():  # the victim says when it is stopped mid-write
        assert victim.poll() is None and time.monotonic() < deadline
        os.sched_yield()
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    assert box.stat().st_size > len(before)  # the partial message is there ...
    assert "mailwright" in (tmp_path / "alice.lock").read_text()  # ... with the dead writer's lock
    append(box, entry(9), MboxOptions(lock_timeout=5))  # the next delivery undoes it
    after = box.read_bytes()
    assert after.startswith(before) and b"never complete" not in after
    assert [m["Subject"] for m in read(box)] == ["message 0", "message 1", "message 9"]
    assert not (tmp_path / "alice.lock").exists()


@root_only
def test_disk_full_defers_and_truncates_back(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)])
    require_peer("a tmpfs mount", mounted.returncode == 0, "mount -t tmpfs failed")
    try:
        box = mount / "alice"
        append(box, entry(1), MboxOptions())
        before = box.read_bytes()
        with pytest.raises(MailboxError) as err:
            append(box, entry(2, body=b"z" * 600_000 + b"\r\n"), MboxOptions())
        assert (err.value.reply.code, err.value.reply.status) == (452, "4.3.1")
        assert box.read_bytes() == before
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# ---- mailboxes owned by their users (root) -------------------------------------------------------


@root_only
def test_new_mailbox_belongs_to_the_user(tmp_path: Path) -> None:
    box = tmp_path / "nob"
    append(box, entry(1), MboxOptions(owner=(65534, 65534)))
    st = box.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o600)


@root_only
@pytest.mark.parametrize("kind", ["symlink", "hardlink", "owner", "fifo"])
def test_unsafe_mailboxes_are_refused(tmp_path: Path, kind: str) -> None:
    box = tmp_path / "nob"
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.chown(victim, 65534, 65534)
    if kind == "symlink":
        box.symlink_to(victim)
    elif kind == "hardlink":
        os.link(victim, box)
    elif kind == "owner":
        box.write_text("")
    else:
        os.mkfifo(box)
    with pytest.raises(MailboxError) as err:
        append(box, entry(1), MboxOptions(owner=(65534, 65534), lock_timeout=1))
    assert err.value.reply.status == "4.3.0", err.value.reply
    assert victim.read_text() == "precious\n"


def test_mailutils_reads_mbox_from_a_copy(tmp_path: Path) -> None:
    """``mail -f`` rewrites the file it reads: check a copy, as the recipe says."""
    box = tmp_path / "alice"
    for n in range(2):
        append(box, entry(n), MboxOptions())
    copy = tmp_path / "copy"
    shutil.copy(box, copy)
    out = subprocess.run(
        ["mail", "-N", "-f", str(copy), "-H"], capture_output=True, text=True, timeout=30
    )
    assert out.stdout.count("message ") == 2, out


@peer("mutt and script", have_programs("mutt", "script"), "packages mutt, bsdutils")
def test_mutt_and_mail_read_the_mbox(tmp_path: Path) -> None:
    box = tmp_path / "alice"
    for n in range(3):
        append(box, entry(n), MboxOptions())
    # mutt needs a terminal: give it one with script(1); it lists the folder, then quits
    cmd = (f"mutt -n -F /dev/null -R -e 'set folder={tmp_path} quit=yes' -f {box} "
           "-e 'push <quit>'")  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path), "TERM": "vt100"}
    out = subprocess.run(["timeout", "20", "script", "-qec", cmd, "/dev/null"],
                         capture_output=True, env=env, stdin=subprocess.DEVNULL)  # fmt: skip
    screen = out.stdout.decode("utf-8", "replace")
    assert "Msgs:3" in screen, screen[-2000:]
    # mail -f rewrites the mailbox it reads (X-UID headers): give it a copy
    copy = tmp_path / "copy"
    shutil.copy(box, copy)
    summary = subprocess.run(["mail", "-f", str(copy), "-H"], capture_output=True, text=True,
                             env=env, stdin=subprocess.DEVNULL)  # fmt: skip
    lines = [line for line in summary.stdout.splitlines() if "message " in line]
    assert len(lines) == 3, summary
