"""The daemon's side of the privileged helper: requests out, answers back, content in a pipe.

``HelperClient`` sends requests over the socket pair (``privhelper.protocol``) and
matches answers by id; many requests may be in flight at once. A delivery's content
is written into a pipe whose read end went with the request (in a worker thread:
reading the queue blocks). If the helper is gone or does not answer in time, the
delivery is deferred (``451 4.3.0``): the recipient stays queued, nothing is lost; a helper
that is gone for good is reported through ``on_failure`` (the daemon then stops).

``HelperDeposit`` is the ``delivery.deposit.Deposit`` of a daemon without root (its
``interrupt`` asks the helper to end its lock waits: the daemon is stopping);
``HelperMaildrop`` opens maildrop files (other users' 0600 files) for the pickup;
``HelperForwardReader`` reads users' ``.forward`` files (homes may be closed to the
daemon) for the address resolver, which runs in worker threads.
Trusts the helper's answers only as far as their form (``protocol.reply_from``).
Reads no settings (timeouts come from the caller).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailwright.core.delivery import Outcome
from mailwright.core.reply import Reply
from mailwright.delivery.deposit import Parcel
from mailwright.delivery.pipe import PipeResult
from mailwright.delivery.workers import WRITES
from mailwright.observability import maillog
from mailwright.privhelper import protocol
from mailwright.privhelper.protocol import Channel, ChannelClosedError, ProtocolError
from mailwright.queue import maildrop
from mailwright.routing.forward import ItemFile, ItemFileError, read_forward
from mailwright.routing.items import Item, ItemKind
from mailwright.routing.localusers import LocalUser

log = logging.getLogger("mailwright.privhelper")

UNAVAILABLE = Reply.of(451, "4.3.0", "Local delivery helper unavailable, try again later")
TIMED_OUT = Reply.of(451, "4.3.0", "Local delivery helper timed out")
CONTROL_TIMEOUT = 60.0  # maildrop and reload requests
EXIT_WAIT = 10.0


class HelperUnavailableError(Exception):
    """No answer: the helper is gone, broke the protocol, or was too slow."""

    def __init__(self, why: str, timed_out: bool = False) -> None:
        super().__init__(why)
        self.timed_out = timed_out


@dataclass(slots=True)
class Answer:
    body: dict[str, Any]
    fds: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.body.get("ok") is True

    @property
    def reply(self) -> Reply | None:
        return protocol.reply_from(self.body.get("reply"))


class HelperClient:
    """One helper process and the channel to it."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self._channel: Channel | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._broken = False
        # called once when the helper is lost: a daemon without root cannot start a new
        # one, so it stops and lets the service manager restart it (and the helper)
        self.on_failure: Callable[[str], None] | None = None

    @property
    def alive(self) -> bool:
        return not self._broken

    def start(self) -> None:
        """Begin reading answers (needs the running event loop).

        Request ids start at this process's pid shifted high: a worker restarted on the
        channel of one that died must not take a late answer to its predecessor's
        request for the answer to its own."""
        self._ids = itertools.count((os.getpid() << 32) + 1)
        self._channel = Channel(self.sock)
        self._reader = asyncio.create_task(self._read_answers(), name="privhelper-answers")

    async def request(
        self,
        op: str,
        fields: dict[str, Any],
        timeout: float,
        content: Callable[[], Iterator[bytes]] | None = None,
    ) -> Answer:
        """Send one request and wait for its answer; ``HelperUnavailableError`` otherwise."""
        if self._channel is None or self._broken:
            raise HelperUnavailableError("the privileged helper is not running")
        request_id = next(self._ids)
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = waiter
        cancel = threading.Event()
        feeder: asyncio.Future[bool] | None = None
        try:
            message = {"v": protocol.VERSION, "id": request_id, "op": op, **fields}
            if content is None:
                await self._send(message, [])
            else:
                read_end, write_end = os.pipe()
                try:
                    await self._send(message, [read_end])
                except BaseException:
                    os.close(write_end)
                    raise
                finally:
                    os.close(read_end)
                # in delivery's pool: the feeder blocks while the helper waits for a lock
                feeder = asyncio.ensure_future(
                    WRITES.run(protocol.feed_content, write_end, content, cancel)
                )
            try:
                async with asyncio.timeout(timeout):
                    return await waiter
            except TimeoutError:
                raise HelperUnavailableError(f"no answer to {op} in {timeout:g} s", True) from None
        finally:
            self._waiting.pop(request_id, None)
            if feeder is not None:
                cancel.set()  # the helper answered (or never will): stop writing
                await asyncio.gather(feeder, return_exceptions=True)

    async def _send(self, message: dict[str, Any], fds: list[int]) -> None:
        assert self._channel is not None
        try:
            await self._channel.send(message, fds)
        except (ChannelClosedError, ProtocolError, OSError) as exc:
            self._fail(f"cannot send to the privileged helper: {exc}")
            raise HelperUnavailableError(str(exc)) from None

    async def _read_answers(self) -> None:
        assert self._channel is not None
        while True:
            try:
                body, fds = await self._channel.receive()
            except ChannelClosedError:
                self._fail("the privileged helper exited")
                return
            except ProtocolError as exc:
                self._fail(f"the privileged helper broke the protocol: {exc}")
                return
            request_id = body.get("id")
            waiter = self._waiting.get(request_id) if isinstance(request_id, int) else None
            if waiter is None or waiter.done():
                protocol.close_all(fds)  # the request timed out meanwhile
                continue
            waiter.set_result(Answer(body, fds))

    def _fail(self, why: str) -> None:
        if not self._broken:
            self._broken = True
            log.error("%s; local deliveries are deferred until a restart", why)
            if self.on_failure is not None:
                self.on_failure(why)
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(HelperUnavailableError(why))

    async def close(self) -> None:
        """Close the channel (the helper then exits) and reap the helper process."""
        self._broken = True
        if self._channel is not None:
            self._channel.close()
        else:
            self.sock.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await asyncio.to_thread(reap, self.pid, EXIT_WAIT)


def reap(pid: int, timeout: float) -> int | None:
    """Wait for the helper to exit (SIGKILL after ``timeout``); its exit status."""
    if pid <= 0:
        return None  # no process of ours (waitpid would take any child)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class HelperDeposit:
    """``delivery.deposit.Deposit`` through the helper (which runs a ``DirectDeposit``)."""

    def __init__(self, client: HelperClient, pipe_timeout: float, lock_timeout: float) -> None:
        self.client = client
        self.pipe_timeout = pipe_timeout
        self.lock_timeout = lock_timeout
        self._interrupting: set[asyncio.Task[None]] = set()

    def interrupt(self) -> None:
        """Shutdown: the helper's waits for mailbox locks end now (their deliveries answer
        4.2.0 and stay queued)."""
        task = asyncio.get_running_loop().create_task(self._interrupt())
        self._interrupting.add(task)
        task.add_done_callback(self._interrupting.discard)

    async def _interrupt(self) -> None:
        try:
            await self.client.request("interrupt", {}, CONTROL_TIMEOUT)
        except HelperUnavailableError as exc:
            log.warning("cannot interrupt the privileged helper's lock waits: %s", exc)

    async def mailbox(self, parcel: Parcel, user: LocalUser) -> Reply | None:
        answer = await self._call("mailbox", parcel, {"user": user.name}, self.lock_timeout)
        return answer.reply if isinstance(answer, Answer) else answer

    async def program(self, parcel: Parcel, command: str, controller: str) -> PipeResult:
        fields = {"user": controller, "command": command}
        answer = await self._call("program", parcel, fields, self.pipe_timeout)
        if not isinstance(answer, Answer):
            return PipeResult(Outcome.DEFERRED, answer)
        reply = answer.reply or UNAVAILABLE
        if not answer.ok:
            outcome = Outcome.DEFERRED if reply.transient else Outcome.FAILED
            return PipeResult(outcome, reply)
        try:
            return PipeResult(Outcome(str(answer.body.get("outcome"))), reply)
        except ValueError:
            return PipeResult(Outcome.DEFERRED, UNAVAILABLE)

    async def file(self, parcel: Parcel, path: str, controller: str) -> Reply | None:
        fields = {"user": controller, "path": path}
        answer = await self._call("file", parcel, fields, self.lock_timeout)
        return answer.reply if isinstance(answer, Answer) else answer

    async def _call(
        self, op: str, parcel: Parcel, fields: dict[str, Any], timeout: float
    ) -> Answer | Reply:
        """The answer, or the reply that defers the delivery when there is none."""
        request = {
            "queue_id": parcel.queue_id,
            "sender": parcel.sender,
            "recipient": parcel.recipient,
            "orcpt": parcel.original_recipient,
            **fields,
        }
        try:
            answer = await self.client.request(op, request, timeout + 120, parcel.message)
            if not answer.ok and answer.reply is None:
                return UNAVAILABLE
        except HelperUnavailableError as exc:
            log.warning("%s: local delivery to %s deferred: %s", parcel.queue_id, op, exc)
            return TIMED_OUT if exc.timed_out else UNAVAILABLE
        except ProtocolError as exc:
            log.error("%s: privileged helper answer: %s", parcel.queue_id, exc)
            return UNAVAILABLE
        return answer


class HelperMaildrop:
    """Maildrop files through the helper: they belong to their writers, mode 0600."""

    def __init__(self, client: HelperClient) -> None:
        self.client = client

    async def open(self, path: str) -> maildrop.Entry:
        """Like ``maildrop.open_entry``; OSError when the helper cannot be asked."""
        answer = await self._ask("maildrop_open", {"name": os.path.basename(path)})
        if answer.body.get("missing"):
            raise FileNotFoundError(path)
        corrupt = answer.body.get("corrupt")
        if isinstance(corrupt, str):
            raise maildrop.MaildropError(corrupt)
        if not answer.ok or len(answer.fds) != 1:
            protocol.close_all(answer.fds)
            raise OSError(f"{path}: the privileged helper did not open it")
        return maildrop.entry_from_descriptor(path, answer.fds[0])

    async def keep(self, entry: maildrop.Entry, keep: list[int]) -> str:
        """A copy of ``entry`` for the recipients ``keep`` (indexes), owned by its writer."""
        answer = await self._ask("maildrop_keep", {"name": entry.name, "keep": keep})
        name = answer.body.get("name")
        if not answer.ok or not isinstance(name, str):
            raise OSError(f"{entry.name}: {answer.body.get('error', 'not rewritten')}")
        return os.path.join(os.path.dirname(entry.path), name)

    async def _ask(self, op: str, fields: dict[str, Any]) -> Answer:
        try:
            return await self.client.request(op, fields, CONTROL_TIMEOUT)
        except HelperUnavailableError as exc:
            raise OSError(str(exc)) from None


class HelperForwardReader:
    """``routing.resolution.ForwardReader`` through the helper; called from worker threads
    (the resolver's), it waits on the event loop that talks to the helper."""

    def __init__(self, client: HelperClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop

    def __call__(self, templates: list[str], user: LocalUser, hostname: str) -> ItemFile | None:
        if user.virtual or not user.home or user.home == "/nonexistent":
            return None
        if _on_loop(self.loop):  # never block the loop itself: read it as we are
            return read_forward(templates, user, hostname)
        fields = {"user": user.name, "queue_id": maillog.current_queue_id.get()}
        future = asyncio.run_coroutine_threadsafe(
            self.client.request("forward", fields, CONTROL_TIMEOUT), self.loop
        )
        try:
            answer = future.result(CONTROL_TIMEOUT + 5)
        except (HelperUnavailableError, TimeoutError) as exc:
            raise ItemFileError(Path(user.home), f"privileged helper: {exc}", True) from None
        return _item_file(answer, user)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _item_file(answer: Answer, user: LocalUser) -> ItemFile | None:
    body = answer.body
    if not answer.ok:
        raise ItemFileError(Path(user.home), str(body.get("error", "not read")), True)
    if "reason" in body:
        raise ItemFileError(
            Path(str(body.get("path"))), str(body["reason"]), bool(body.get("transient"))
        )
    if not body.get("found"):
        return None
    try:
        items = [Item(ItemKind(kind), str(value)) for kind, value in body["items"]]
        return ItemFile(
            path=Path(str(body["path"])),
            items=items,
            owner_uid=int(body["owner_uid"]),
            owner=str(body["owner"]),
            unsafe=str(body["unsafe"]),
            problems=[str(p) for p in body["problems"]],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ItemFileError(Path(user.home), f"malformed helper answer: {exc}", True) from None
