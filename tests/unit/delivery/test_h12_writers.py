"""Issue 12 item 1 (throughput): the long-lived user writers of ``delivery.writerpool``.

Real writer processes (root gives them up for ``nobody``), real Maildirs and mboxes, real
locks: one writer serves many deliveries, a killed one costs only the delivery in flight
(4xx), an idle one ends, SIGTERM at shutdown still ends a lock wait with 4.2.0, content
that cannot be read to its end is not delivered, and each identity has its own writers.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pwd
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailwright.core.reply import Reply
from mailwright.delivery import userwriter
from mailwright.delivery.privileged import Identity
from mailwright.delivery.workers import Interrupts
from mailwright.delivery.writerpool import Writer, WriterPool
from tests.support.opentmp import open_tmp

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (writers drop to nobody)")

SETTLE = 20.0  # seconds: far more than a writer needs to start, answer or end


@pytest.fixture
def nobody() -> Identity:
    pw = pwd.getpwnam("nobody")
    return Identity("nobody", pw.pw_uid, pw.pw_gid, (pw.pw_gid,), "/nonexistent")


@pytest.fixture
def home(nobody: Identity) -> Iterator[Path]:
    with open_tmp("mw-writers-") as path:
        os.chown(path, nobody.uid, nobody.gid)
        yield path


def message(n: int) -> Callable[[], Iterator[bytes]]:
    def pieces() -> Iterator[bytes]:
        yield f"From: s@example.org\nSubject: m{n}\n\n".encode()
        yield b"body\n" * 20000  # 100 kB: more than one frame, more than a pipe holds

    return pieces


def writer_pids(maildir: Path) -> list[int]:
    """The pid each message's writer put in its Maildir name (``...P<pid>Q<n>...``)."""
    return [
        int(m.group(1)) for p in (maildir / "new").iterdir() if (m := re.search(r"P(\d+)Q", p.name))
    ]


async def busy_writer(pool: WriterPool) -> Writer:
    async with asyncio.timeout(SETTLE):
        while not (busy := [w for w in pool.writers() if w.busy]):
            await asyncio.sleep(0.01)
    return busy[0]


async def opened(writer: Writer, path: Path) -> None:
    """Until ``writer`` has ``path`` open (it runs, its SIGTERM handler is in place)."""
    async with asyncio.timeout(SETTLE):
        while True:
            fds = Path(f"/proc/{writer.pid}/fd")
            try:
                if any(os.readlink(fd) == str(path) for fd in fds.iterdir()):
                    return
            except OSError:
                pass
            await asyncio.sleep(0.01)


def test_one_writer_serves_many_deliveries(nobody: Identity, home: Path) -> None:
    async def run() -> tuple[list[Reply | None], int]:
        pool = WriterPool()
        replies = [
            await pool.write(nobody, ["maildir", str(home / "Maildir")], message(n), 30)
            for n in range(5)
        ]
        started = pool.started
        await pool.close()
        return replies, started

    replies, started = asyncio.run(run())
    assert replies == [None] * 5 and started == 1
    pids = writer_pids(home / "Maildir")
    assert len(pids) == 5 and len(set(pids)) == 1 and pids[0] != os.getpid()
    for path in (home / "Maildir" / "new").iterdir():
        assert path.stat().st_uid == nobody.uid and path.stat().st_size == 100000 + len(
            "From: s@example.org\nSubject: m0\n\n"
        )


def test_deliveries_for_one_identity_in_parallel_use_at_most_per_identity_writers(
    nobody: Identity, home: Path
) -> None:
    async def run() -> int:
        pool = WriterPool(per_identity=2)
        words = ["maildir", str(home / "Maildir")]
        replies = await asyncio.gather(
            *(pool.write(nobody, words, message(n), 30) for n in range(8))
        )
        assert replies == [None] * 8
        started = pool.started
        await pool.close()
        return started

    assert asyncio.run(run()) <= 2
    assert len(writer_pids(home / "Maildir")) == 8


def test_a_killed_writer_defers_its_delivery_and_the_next_one_gets_a_new_writer(
    nobody: Identity, home: Path
) -> None:
    box = home / "box"
    box.touch()
    os.chown(box, nobody.uid, nobody.gid)
    words = ["mbox", str(box), "--no-dotlock-required", "--lock-timeout", "60"]

    async def run() -> tuple[Reply | None, Reply | None, int]:
        pool = WriterPool()
        with open(box, "rb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # the delivery stays in flight
            task = asyncio.create_task(pool.write(nobody, words, message(0), 60))
            writer = await busy_writer(pool)
            os.kill(writer.pid, signal.SIGKILL)
            first = await asyncio.wait_for(task, SETTLE)
        second = await pool.write(nobody, words, message(1), 60)
        started = pool.started
        await pool.close()
        return first, second, started

    first, second, started = asyncio.run(run())
    assert first is not None and first.code == 451 and first.status == "4.3.0", first
    assert second is None and started == 2
    assert box.read_bytes().count(b"\nSubject: m") == 1 and b"Subject: m1" in box.read_bytes()


def test_an_idle_writer_ends(nobody: Identity, home: Path) -> None:
    async def run() -> tuple[int | None, list[Writer]]:
        pool = WriterPool(idle_timeout=0.3)
        assert await pool.write(nobody, ["maildir", str(home / "Maildir")], message(0), 30) is None
        (writer,) = pool.writers()
        code = await asyncio.wait_for(writer.proc.wait(), SETTLE)  # it ends by itself
        left = pool.writers()
        await pool.close()
        return code, left

    code, left = asyncio.run(run())
    assert code == 0 and left == []


def test_the_least_recently_used_idle_writer_makes_room(nobody: Identity, home: Path) -> None:
    other = Identity("nobody-ng", nobody.uid, nobody.gid, (nobody.gid, 0), "/nonexistent")

    async def run() -> tuple[int | None, int, list[tuple[int, ...]]]:
        pool = WriterPool(max_writers=1)
        words = ["maildir", str(home / "Maildir")]
        assert await pool.write(nobody, words, message(0), 30) is None
        (first,) = pool.writers()
        assert await pool.write(other, words, message(1), 30) is None
        code = await asyncio.wait_for(first.proc.wait(), SETTLE)
        keys = [w.key[2] for w in pool.writers()]
        started = pool.started
        await pool.close()
        return code, started, keys

    code, started, keys = asyncio.run(run())
    assert code == 0 and started == 2 and keys == [(nobody.gid, 0)]
    assert len(set(writer_pids(home / "Maildir"))) == 2  # each identity its own writer


def test_interrupt_ends_a_lock_wait_with_4_2_0(nobody: Identity, home: Path) -> None:
    box = home / "box"
    box.touch()
    os.chown(box, nobody.uid, nobody.gid)
    words = ["mbox", str(box), "--no-dotlock-required", "--lock-timeout", "60"]

    async def run() -> tuple[Reply | None, int | None]:
        pool = WriterPool()
        interrupts = Interrupts()
        with open(box, "rb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            task = asyncio.create_task(pool.write(nobody, words, message(0), 60, interrupts))
            writer = await busy_writer(pool)
            await opened(writer, box)  # waiting for the flock we hold
            interrupts.interrupt()
            reply = await asyncio.wait_for(task, SETTLE)
        code = await asyncio.wait_for(writer.proc.wait(), SETTLE)  # it exits after its reply
        await pool.close()
        return reply, code

    reply, code = asyncio.run(run())
    assert reply is not None and reply.code == 451 and reply.status == "4.2.0", reply
    assert code == 0 and box.stat().st_size == 0


def test_content_that_fails_midway_is_not_delivered(nobody: Identity, home: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield b"From: s@example.org\n\n" + b"x" * 200000
        raise OSError("the queue file went away")

    async def run() -> int:
        pool = WriterPool()
        words = ["maildir", str(home / "Maildir")]
        with pytest.raises(OSError, match="went away"):
            await pool.write(nobody, words, broken, 30)
        assert pool.writers() == []  # that writer serves no more requests
        assert await pool.write(nobody, words, message(1), 30) is None
        started = pool.started
        await pool.close()  # waits for both writers to end
        return started

    assert asyncio.run(run()) == 2
    assert list((home / "Maildir" / "tmp").iterdir()) == []
    assert len(list((home / "Maildir" / "new").iterdir())) == 1


def test_the_writer_refuses_a_broken_request_and_serves_the_next(
    nobody: Identity, home: Path
) -> None:
    async def run() -> tuple[Reply | None, Reply | None, int]:
        pool = WriterPool()
        bad = await pool.write(nobody, ["maildir"], message(0), 30)  # no path
        good = await pool.write(nobody, ["maildir", str(home / "Maildir")], message(1), 30)
        started = pool.started
        await pool.close()
        return bad, good, started

    bad, good, started = asyncio.run(run())
    assert bad is not None and bad.code == 451 and "bad request" in bad.text
    assert good is None and started == 1


def test_reply_lines() -> None:
    from mailwright.delivery.writerpool import parse_reply_line

    assert parse_reply_line("OK").code == 250
    assert parse_reply_line("552 5.2.2 Mailbox full").status == "5.2.2"
    broken = parse_reply_line("Traceback (most recent call last):")
    assert broken.code == 451 and broken.status == "4.3.0"
    assert userwriter.MAX_FRAME == 1 << 16


def userwriter_run(args: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    """``python -m mailwright.delivery.userwriter ARGS`` from this tree, ``data`` on stdin."""
    src = Path(userwriter.__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-m", "mailwright.delivery.userwriter", *args],
        input=data,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src)},
    )


def test_the_command_line_mode_delivers_one_message(nobody: Identity, home: Path) -> None:
    ids = ["--uid", str(nobody.uid), "--gid", str(nobody.gid), "--groups", str(nobody.gid)]
    done = userwriter_run([*ids, "maildir", str(home / "Maildir")], b"Subject: one\n\nbody\n")
    assert done.returncode == 0, done.stderr
    (path,) = (home / "Maildir" / "new").iterdir()
    assert path.read_bytes() == b"Subject: one\n\nbody\n" and path.stat().st_uid == nobody.uid
    refused = userwriter_run([*ids, "mbox", str(home)], b"From x\n\n")  # a directory
    assert refused.returncode in (73, 75) and re.match(rb"[45]\d\d [45]\.\d+\.\d+ ", refused.stderr)


def test_a_serving_writer_answers_frames_and_ends_on_a_broken_one(
    nobody: Identity, home: Path
) -> None:
    ids = ["--uid", str(nobody.uid), "--gid", str(nobody.gid), "--groups", str(nobody.gid)]
    request = json.dumps(["maildir", str(home / "Maildir")]).encode() + b"\n"
    stream = (
        request
        + b"6\nSubj: 3\nx\n\n0\n"  # delivered
        + request
        + b"4\nhalfabort\n"  # aborted: nothing delivered
        + request
        + b"9\nshort"  # the stream breaks inside a frame
    )
    done = userwriter_run([*ids, "serve"], stream)
    replies = done.stdout.decode().splitlines()
    assert replies[0] == "OK" and replies[1].startswith("451 4.3.0 Message not read to its end")
    assert len(replies) == 2 and done.returncode == 75
    (path,) = (home / "Maildir" / "new").iterdir()
    assert path.read_bytes() == b"Subj: x\n\n" and list((home / "Maildir" / "tmp").iterdir()) == []
