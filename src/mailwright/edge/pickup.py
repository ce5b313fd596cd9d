"""The maildrop pickup: messages ``sendmail`` left while the daemon was down come in here.

At start, whenever a local connection closes (``sendmail`` knocks after a maildrop
write) and every ``local.pickup_interval``, the pickup reads the maildrop and submits
each complete file over a socket pair to a local session of its owner's uid: the very
SMTP dialogue, client and checks a socket submission gets. A file is deleted only after
the queue commit (``250``); a temporary failure leaves it for the next round; a message
refused outright, and a file that is not a valid maildrop entry, are moved aside to
``<queue dir>/rejected/`` or ``<queue dir>/corrupt/`` (mode 0700) with a log line, for an
administrator; the sender of a message refused for good gets a bounce (``edge.dropbounce``).

Files are opened (and rewritten for the recipients still to try) through a
``MaildropAccess``: directly, or through the privileged helper when the daemon runs
without root (the files belong to the users who wrote them, mode 0600).

Trusts the file's owner for the user, nothing else in the file (``queue.maildrop``
checks it). Settings: ``local.maildrop``, ``local.pickup_interval``, ``queue.directory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

from mailwright.core.reply import Reply
from mailwright.core.submission import Rcpt
from mailwright.edge.localsmtp import ConnectionLostError, LocalSmtpClient, Result
from mailwright.edge.stream import SessionStream, serve_socket
from mailwright.queue import maildrop

log = logging.getLogger("mailwright.pickup")

Serve = Callable[[SessionStream, SessionStream, int], Coroutine[Any, Any, None]]
Report = Callable[[maildrop.Entry, list[tuple[Rcpt, Reply]]], Awaitable[None]]
PARALLEL = 8  # files submitted at once (they share group commits)
STALE_AFTER = 3600.0  # a file still incomplete after this lost its writer
STOP_GRACE = 30.0


class MaildropAccess(Protocol):
    async def open(self, path: str) -> maildrop.Entry:
        """``maildrop.open_entry``: the file, checked, or its errors."""
        ...

    async def keep(self, entry: maildrop.Entry, keep: list[int]) -> str:
        """A new file with ``entry``'s recipients at indexes ``keep``, owned by its writer."""
        ...


class DirectMaildrop:
    """This process opens and writes the files itself (root, or the files are its own)."""

    async def open(self, path: str) -> maildrop.Entry:
        return maildrop.open_entry(path)

    async def keep(self, entry: maildrop.Entry, keep: list[int]) -> str:
        recipients = entry.envelope.recipients
        copy = maildrop.write(
            os.path.dirname(entry.path),
            entry.envelope.with_recipients([recipients[i] for i in keep]),
            b"".join(entry.chunks()),
        )
        os.chown(copy, entry.uid, -1, follow_symlinks=False)  # still the submitter's
        return copy


class Pickup:
    def __init__(
        self,
        directory: Path,
        queue_dir: Path,
        serve: Serve,
        interval: float,
        report: Report | None = None,
        access: MaildropAccess | None = None,
    ) -> None:
        self.report = report  # queues a bounce for recipients refused for good
        self.directory = directory
        self.queue_dir = queue_dir
        self.serve = serve
        self.interval = interval
        self.access = access or DirectMaildrop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._not_before: dict[str, float] = {}  # path -> monotonic time of the next try

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="maildrop-pickup")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Finish the file in hand (within a grace period), then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        try:
            async with asyncio.timeout(STOP_GRACE):
                await self._task
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.scan()
            except Exception:
                log.exception("maildrop pickup failed; trying again later")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()

    async def scan(self) -> int:
        """Submit every complete file that is due; returns how many were looked at."""
        now = time.monotonic()
        paths = [
            p for p in maildrop.pending(str(self.directory)) if self._not_before.get(p, 0.0) <= now
        ]
        if not paths:
            return 0
        gate = asyncio.Semaphore(PARALLEL)

        async def one(path: str) -> None:
            async with gate:
                if not self._stopping:
                    await self._take(path)

        outcomes = await asyncio.gather(*(one(p) for p in paths), return_exceptions=True)
        for path, outcome in zip(paths, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.error("maildrop %s: pickup failed: %s", os.path.basename(path), outcome)
                self._later(path)
        return len(paths)

    # ---- one file ------------------------------------------------------------------------------
    async def _take(self, path: str) -> None:
        name = os.path.basename(path)
        try:
            entry = await self.access.open(path)
        except FileNotFoundError:
            return
        except maildrop.IncompleteError as exc:
            if _age(path) > STALE_AFTER:
                self._set_aside(path, "corrupt", str(exc))
            return
        except maildrop.MaildropError as exc:
            self._set_aside(path, "corrupt", str(exc))
            return
        except OSError as exc:
            log.warning("maildrop %s: cannot open: %s", name, exc)
            self._later(path)
            return
        with entry:
            result = await self._submit(entry)
            refused = _permanently_refused(result)
            if refused and self.report is not None:
                try:  # before the file goes: a crash here repeats the bounce, never loses it
                    await self.report(entry, refused)
                except Exception:
                    log.exception("maildrop %s: cannot queue the bounce", name)
            await self._settle(entry, result)

    async def _submit(self, entry: maildrop.Entry) -> Result | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        uid = entry.uid
        try:
            stream = await serve_socket(
                ours, lambda reader, writer: self.serve(reader, writer, uid)
            )
        except BaseException:
            ours.close()
            theirs.close()
            raise
        session = stream.task
        assert session is not None  # started with the connection
        try:
            return await asyncio.to_thread(_client, theirs, entry)
        finally:
            theirs.close()
            await session

    async def _settle(self, entry: maildrop.Entry, result: Result | None) -> None:
        name = entry.name
        if result is None:
            log.warning("maildrop %s: submission interrupted; trying again later", name)
            self._later(entry.path)
            return
        temporary = [r for r, reply in result.refused if reply.transient]
        for rcpt, reply in result.refused:
            if not reply.transient:
                log.warning("maildrop %s: <%s> refused: %s", name, rcpt.address, reply)
        if result.final is not None and result.final.positive:
            await self._finish(entry, temporary)  # logged after: the line means the file is gone
            log.info(
                "maildrop %s: queued as %s (uid %d, %d recipient(s))",
                name,
                result.queue_id,
                entry.uid,
                len(result.accepted),
                extra={"queue_id": result.queue_id},
            )
            return
        assert result.failure is not None
        stage, reply = result.failure
        if stage == "rcpt" and temporary:
            await self._finish(entry, temporary)
        elif stage == "rcpt" or not reply.transient:
            self._set_aside(entry.path, "rejected", f"{stage}: {reply}")
        else:
            log.warning("maildrop %s: %s: %s; trying again later", name, stage, reply)
            self._later(entry.path)

    async def _finish(self, entry: maildrop.Entry, remaining: list[Rcpt]) -> None:
        """The message is queued: keep only recipients still to try, then delete the file."""
        if remaining:
            wanted = {id(rcpt) for rcpt in remaining}  # the envelope's own Rcpt objects
            keep = [i for i, rcpt in enumerate(entry.envelope.recipients) if id(rcpt) in wanted]
            copy = await self.access.keep(entry, keep)
            log.info(
                "maildrop %s: %d recipient(s) deferred as %s",
                entry.name,
                len(remaining),
                os.path.basename(copy),
            )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
        maildrop.sync_directory(str(self.directory))
        self._not_before.pop(entry.path, None)

    def _later(self, path: str) -> None:
        self._not_before[path] = time.monotonic() + self.interval

    def _set_aside(self, path: str, kind: str, why: str) -> None:
        target_dir = self.queue_dir / kind
        target = target_dir / os.path.basename(path)
        try:
            target_dir.mkdir(mode=0o700, exist_ok=True)
            try:
                os.rename(path, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.move(path, target)
        except OSError as exc:
            log.error("maildrop %s: %s, and cannot move it aside: %s", path, why, exc)
            self._later(path)
            return
        self._not_before.pop(path, None)
        log.warning("maildrop %s: moved to %s: %s", os.path.basename(path), target_dir, why)


def _permanently_refused(result: Result | None) -> list[tuple[Rcpt, Reply]]:
    """Recipients the daemon refused for good: a 5xx to RCPT, or to the whole message."""
    if result is None:
        return []
    refused = [(r, reply) for r, reply in result.refused if reply.code >= 500]
    if result.final is not None and result.final.code >= 500:
        refused += [(r, result.final) for r in result.accepted]
    elif result.failure is not None and result.failure[1].code >= 500:
        stage, reply = result.failure
        if stage != "rcpt":
            refused += [(r, reply) for r in result.accepted]
    return refused


def _client(sock: socket.socket, entry: maildrop.Entry) -> Result | None:
    """Runs in a worker thread: the blocking client, fed from the file in chunks."""
    try:
        return LocalSmtpClient(sock).submit(entry.envelope, entry.chunks(), entry.size)
    except (ConnectionLostError, maildrop.MaildropError, OSError) as exc:
        log.warning("maildrop %s: %s", entry.name, exc)
        return None


def _age(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0
