"""Long-lived user writers: the Maildir and file writes done as the recipient, without a
new interpreter per message (as Postfix's local(8) keeps its processes).

A root daemon (or the privileged helper) writes into places users control through a
``delivery.userwriter`` child that gave up root for good before it opened anything.
Starting one costs a Python interpreter (30-50 ms of CPU); this pool keeps them: a
writer is keyed by its identity (uid, gid, groups) and serves that identity's requests
one after another over its stdin and stdout (the framed protocol is in
``delivery.userwriter``). A request for another identity never goes to it.

- At most ``PER_IDENTITY`` writers per identity, each serving one request at a time
  (more deliveries for one identity wait here, in the event loop).
- A writer idle for ``IDLE_TIMEOUT`` seconds is told to end (its stdin is closed); with
  more than ``MAX_WRITERS`` alive, the least recently used idle ones end.
- A writer that dies during a request, or is killed because the request took longer
  than its timeout, gives a 4xx reply for that delivery; the next one starts a new writer.
- ``Interrupts`` (shutdown) sends SIGTERM: the writer ends a lock wait (4.2.0) or
  finishes the write it has begun, answers, and exits; it is not used again.
- Content that cannot be read to its end (the queue file, a cancelled task) is ended
  with an ``abort`` frame and SIGTERM: the writer removes what it wrote, and ends.

One pool per event loop and process (``pool()``): a forked helper or a new loop starts
its own. Trusts its callers and its writers' replies (its own children). Reads no
settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from mailwright.core.reply import Reply
from mailwright.delivery.privileged import Identity
from mailwright.delivery.workers import WRITES, Interrupts

log = logging.getLogger("mailwright.delivery")

IDLE_TIMEOUT = 30.0  # seconds a writer waits for its next request
MAX_WRITERS = 32  # writers kept alive in one process
PER_IDENTITY = 4  # writers one identity may use at once
FRAME = 1 << 16  # octets of content per frame (userwriter.MAX_FRAME)
REAP_GRACE = 10.0  # seconds an ended writer gets before it is killed

Key = tuple[int, int, tuple[int, ...]]


class WriterGoneError(Exception):
    """The writer ended during a request (killed, crashed, or SIGTERM before it began)."""


class Writer:
    """One child serving one identity's requests."""

    def __init__(self, key: Key, proc: asyncio.subprocess.Process) -> None:
        self.key = key
        self.proc = proc
        self.busy = False
        self.retired = False  # takes no more requests (interrupted, broken, idle, evicted)
        self.last_used = time.monotonic()
        self.served = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def request(self, words: list[str], pieces: Callable[[], Iterator[bytes]]) -> Reply:
        """Send one request and its content; the writer's reply."""
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(json.dumps(words).encode() + b"\n")
            iterator = pieces()
            while (piece := await WRITES.run(next, iterator, None)) is not None:
                for start in range(0, len(piece), FRAME):
                    chunk = piece[start : start + FRAME]
                    stdin.write(b"%d\n" % len(chunk) + chunk)
                await stdin.drain()
            stdin.write(b"0\n")
            await stdin.drain()
            line = await stdout.readline()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise WriterGoneError(str(exc)) from None
        if not line.endswith(b"\n"):
            raise WriterGoneError("no reply")
        self.served += 1
        return parse_reply_line(line.decode("utf-8", "replace").rstrip("\n"))

    def terminate(self) -> None:
        """SIGTERM (shutdown): ends a lock wait, lets a begun write finish; then it exits."""
        self.retired = True
        _signal(self.pid, signal.SIGTERM)

    def abort(self) -> None:
        """The content will not be whole: say so, and end the writer (it removes its part)."""
        self.retired = True
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                stdin.write(b"abort\n")
        _signal(self.pid, signal.SIGTERM)

    def close(self) -> None:
        """No more requests: closing stdin ends a writer between requests."""
        self.retired = True
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                stdin.close()


def parse_reply_line(line: str) -> Reply:
    """A writer's reply: ``OK`` (250) or ``CODE D.S.N text``."""
    if line == "OK":
        return Reply.of(250, "2.0.0", "OK")
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[0].isascii() and parts[0].isdigit() and parts[1].count(".") == 2:
        code = int(parts[0])
        if 400 <= code < 600:
            return Reply.of(code, parts[1], parts[2])
    return Reply.of(451, "4.3.0", f"Local delivery helper failed: {line[:200]}")


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


class WriterPool:
    """The writers of one event loop; ``write`` is the one entry point."""

    def __init__(
        self,
        idle_timeout: float = IDLE_TIMEOUT,
        max_writers: int = MAX_WRITERS,
        per_identity: int = PER_IDENTITY,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_writers = max_writers
        self.per_identity = per_identity
        self.pid = os.getpid()
        self._writers: dict[Key, list[Writer]] = {}
        self._slots: dict[Key, asyncio.Semaphore] = {}
        self._reapers: set[asyncio.Task[None]] = set()
        self.started = 0  # writers started (for tests and the benchmark)

    def writers(self) -> list[Writer]:
        return [w for group in self._writers.values() for w in group]

    async def write(
        self,
        who: Identity,
        words: list[str],
        pieces: Callable[[], Iterator[bytes]],
        timeout: float,
        interrupts: Interrupts | None = None,
    ) -> Reply | None:
        """Have a writer for ``who`` do the request ``words`` with ``pieces`` as content;
        None when delivered, else the failure's reply."""
        key: Key = (who.uid, who.gid, tuple(who.groups))
        slots = self._slots.setdefault(key, asyncio.Semaphore(self.per_identity))
        async with slots:
            writer = self._idle_writer(key) or await self._start(key)
            writer.busy = True
            try:
                reply = await self._request(writer, words, pieces, timeout, interrupts)
            finally:
                self._release(writer)
        return None if reply.code == 250 else reply

    async def _request(
        self,
        writer: Writer,
        words: list[str],
        pieces: Callable[[], Iterator[bytes]],
        timeout: float,
        interrupts: Interrupts | None,
    ) -> Reply:
        try:
            with (interrupts or Interrupts()).watch(writer.terminate):
                async with asyncio.timeout(timeout):
                    return await writer.request(words, pieces)
        except TimeoutError:
            writer.retired = True
            _signal(writer.pid, signal.SIGKILL)
            return Reply.of(451, "4.3.0", "Local delivery helper timed out")
        except WriterGoneError:
            writer.retired = True
            try:
                code = await asyncio.wait_for(writer.proc.wait(), REAP_GRACE)
            except TimeoutError:
                _signal(writer.pid, signal.SIGKILL)
                code = await writer.proc.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            return Reply.of(451, "4.3.0", f"Local delivery helper ended ({how})")
        except BaseException:
            # the message could not be read to its end: it must not be taken whole
            writer.abort()
            raise

    def _idle_writer(self, key: Key) -> Writer | None:
        for writer in self._writers.get(key, []):
            if not writer.busy and not writer.retired and writer.alive:
                return writer
        return None

    async def _start(self, key: Key) -> Writer:
        if len(self.writers()) >= self.max_writers:
            self._evict(len(self.writers()) - self.max_writers + 1)
        uid, gid, groups = key
        package_root = Path(__file__).resolve().parents[2]  # the directory holding mailwright/
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-S",  # no site-packages: the writer needs only the standard library and us
            "-m",
            "mailwright.delivery.userwriter",
            "--uid",
            str(uid),
            "--gid",
            str(gid),
            "--groups",
            ",".join(str(g) for g in groups),
            "serve",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,  # errors come back as reply lines
            env={"PATH": "/usr/bin:/bin", "LANG": "C", "PYTHONPATH": str(package_root)},
            cwd="/",
        )
        writer = Writer(key, proc)
        self._writers.setdefault(key, []).append(writer)
        self.started += 1
        log.debug("user writer %d started for uid %d", proc.pid, uid)
        return writer

    def _release(self, writer: Writer) -> None:
        writer.busy = False
        writer.last_used = time.monotonic()
        if writer.retired or not writer.alive:
            self._end(writer)
            return
        loop = asyncio.get_running_loop()
        loop.call_later(self.idle_timeout, self._idle_check, writer)
        if len(self.writers()) > self.max_writers:
            self._evict(len(self.writers()) - self.max_writers)

    def _idle_check(self, writer: Writer) -> None:
        if writer.busy or writer.retired:
            return
        if time.monotonic() - writer.last_used >= self.idle_timeout * 0.99:
            self._end(writer)

    def _evict(self, count: int) -> None:
        idle = sorted((w for w in self.writers() if not w.busy), key=lambda w: w.last_used)
        for writer in idle[:count]:
            self._end(writer)

    def _end(self, writer: Writer) -> None:
        """Take ``writer`` out of the pool; it exits (stdin closed), and is reaped."""
        group = self._writers.get(writer.key, [])
        if writer in group:
            group.remove(writer)
            if not group:
                del self._writers[writer.key]
                slots = self._slots.get(writer.key)
                if slots is not None and not slots.locked():
                    del self._slots[writer.key]
        writer.close()
        task = asyncio.get_running_loop().create_task(self._reap(writer))
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    async def _reap(self, writer: Writer) -> None:
        try:
            async with asyncio.timeout(REAP_GRACE):
                await writer.proc.wait()
        except TimeoutError:
            log.warning("user writer %d did not end; killed", writer.pid)
            _signal(writer.pid, signal.SIGKILL)
            await writer.proc.wait()

    async def close(self) -> None:
        """End every writer (a busy one after its request) and wait for the idle ones."""
        for writer in self.writers():
            if writer.busy:
                writer.retired = True  # ended when its request is done
            else:
                self._end(writer)
        if self._reapers:
            await asyncio.gather(*self._reapers, return_exceptions=True)


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriterPool] = (
    weakref.WeakKeyDictionary()
)


def pool() -> WriterPool:
    """This event loop's pool (a new one in a forked process)."""
    loop = asyncio.get_running_loop()
    current = _pools.get(loop)
    if current is None or current.pid != os.getpid():
        current = _pools[loop] = WriterPool()
    return current
