"""Issue 12: dot-locks made whole (liblockfile's link()), locks of dead processes broken at
once, lock waits that stop when told, and the per-mailbox gate of local delivery."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.delivery.mbox import MailboxError, MboxOptions, append, mbox_message
from mailwright.delivery.workers import WRITES, Gates, Interrupts


def entry(n: int) -> list[bytes]:
    text = f"From: s@example.org\r\nSubject: message {n}\r\n\r\nHello {n}.\r\n".encode()
    return list(mbox_message(b"Return-Path: <s@example.org>\n", [text], "s@example.org"))


def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    return int(proc.stdout)


def test_the_dot_lock_holds_its_content_while_held(tmp_path: Path) -> None:
    box = tmp_path / "alice"
    seen: list[str] = []

    def pieces() -> Iterator[bytes]:  # read while the locks are held
        seen.append((tmp_path / "alice.lock").read_text())
        yield from entry(1)

    append(box, pieces(), MboxOptions())
    pid, host, size, tag = seen[0].split()
    assert (int(pid), host, int(size), tag) == (os.getpid(), socket.gethostname(), 0, "mailwright")
    assert not (tmp_path / "alice.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice"]  # no temporary file left


@pytest.mark.parametrize("form", ["mailwright", "bare pid"])
def test_lock_of_a_dead_process_here_is_broken_at_once(tmp_path: Path, form: str) -> None:
    pid = dead_pid()
    lock = tmp_path / "alice.lock"
    text = f"{pid} {socket.gethostname()} 0 mailwright\n" if form == "mailwright" else f"{pid}\n"
    lock.write_text(text)  # young: only its dead holder makes it breakable
    started = time.monotonic()
    append(tmp_path / "alice", entry(1), MboxOptions(lock_timeout=30, stale_lock_age=300))
    assert time.monotonic() - started < 5 and not lock.exists()


def test_lock_of_another_host_waits_for_its_age(tmp_path: Path) -> None:
    (tmp_path / "alice.lock").write_text(f"{dead_pid()} elsewhere.example 0 mailwright\n")
    with pytest.raises(MailboxError):
        append(tmp_path / "alice", entry(1), MboxOptions(lock_timeout=0.2, stale_lock_age=300))


def test_stop_ends_a_lock_wait(tmp_path: Path) -> None:
    (tmp_path / "alice.lock").write_text(f"{os.getpid()} {socket.gethostname()} 0 mailwright\n")
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(MailboxError) as err:
        append(tmp_path / "alice", entry(1), MboxOptions(lock_timeout=60), stop)
    assert time.monotonic() - started < 5
    assert (err.value.reply.code, err.value.reply.status) == (451, "4.2.0")
    assert (tmp_path / "alice").stat().st_size == 0


def test_interrupts_stop_waits_in_flight_and_later_ones(tmp_path: Path) -> None:
    (tmp_path / "alice.lock").write_text(f"{os.getpid()} {socket.gethostname()} 0 mailwright\n")
    interrupts = Interrupts()
    options = MboxOptions(lock_timeout=60)

    async def main() -> None:
        waiting = asyncio.create_task(
            interrupts.run(WRITES, append, tmp_path / "alice", entry(1), options)
        )
        await asyncio.sleep(0)  # the wait has begun (or is about to)
        interrupts.interrupt()
        with pytest.raises(MailboxError):
            await asyncio.wait_for(waiting, 5)
        with pytest.raises(MailboxError):  # a wait that starts after the interrupt
            await asyncio.wait_for(
                interrupts.run(WRITES, append, tmp_path / "alice", entry(2), options), 5
            )

    asyncio.run(main())


def test_gate_lets_one_delivery_per_key_through() -> None:
    gates = Gates()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}

    async def one(key: str) -> None:
        async with gates.hold(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            await asyncio.sleep(0.01)
            inside[key] -= 1

    async def main() -> None:
        await asyncio.gather(*(one(k) for k in "abababab"))

    asyncio.run(main())
    assert most == {"a": 1, "b": 1} and len(gates) == 0


def test_a_cancelled_program_delivery_kills_its_command(tmp_path: Path) -> None:
    from mailwright.delivery import pipe

    started = tmp_path / "started"

    async def main() -> None:
        task = asyncio.create_task(
            pipe.run(
                f"echo $$ > {started}.tmp; mv {started}.tmp {started}; exec sleep 60",
                lambda: iter([b"Subject: x\n\nbody\n"]),
                who=None,
                env={"PATH": "/usr/bin:/bin"},
                timeout=120,
            )
        )
        while not started.exists():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    command = Path("/proc") / started.read_text().strip()
    deadline = time.monotonic() + 10  # killed and reaped at once, not after its 60 s
    while command.exists():
        assert time.monotonic() < deadline, "the command still runs"
        time.sleep(0.01)


def test_many_locked_mailboxes_do_not_take_the_pool_from_a_free_one(tmp_path: Path) -> None:
    from mailwright.delivery import lockwait

    holder = f"{os.getpid()} {socket.gethostname()} 0 mailwright\n"  # alive: us
    locked = [tmp_path / f"user{n}" for n in range(3 * WRITES.size)]
    for box in locked:
        box.with_name(box.name + ".lock").write_text(holder)
    interrupts = Interrupts()
    options = MboxOptions(lock_timeout=60)

    async def main() -> float:
        waiting = [
            asyncio.create_task(lockwait.append(box, lambda: entry(0), options, interrupts))
            for box in locked
        ]
        await asyncio.sleep(0.5)  # every one of them is waiting by now
        started = time.monotonic()
        await asyncio.wait_for(
            lockwait.append(tmp_path / "free", lambda: entry(1), options, interrupts), 30
        )
        took = time.monotonic() - started
        interrupts.interrupt()  # shutdown: every wait ends at once
        done, pending = await asyncio.wait(waiting, timeout=5)
        assert not pending and all(isinstance(t.exception(), MailboxError) for t in done)
        return took

    took = asyncio.run(main())
    assert took < 5, f"the free mailbox waited {took:.1f}s"
    assert all(box.stat().st_size == 0 for box in locked)
