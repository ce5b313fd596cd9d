"""The privileged helper's root side: a few requests, each checked, everything else refused.

Forked by the launcher (``daemon.launch``) before the daemon gives up root, the helper
keeps root and serves the daemon over a socket pair (``privhelper.protocol``). It does
nothing on its own and answers only these requests:

``mailbox`` (user, queue_id, sender, recipient, orcpt; content)
    into that user's mailbox, the user and mailbox looked up here (``routing.localusers``
    with the helper's own settings): an unknown user is refused ``550 5.1.1``;
``program`` (user, command, ...; content) and ``file`` (user, path, ...; content)
    run the command / append to the absolute path as the controlling user: an
    existing account, never root unless ``service.root_programs`` (root and "" become
    ``local_delivery.default_user``), and a user other than the default user must have a
    login shell (``/etc/shells``); a path must be absolute and normal (no ``..``);
``maildrop_open`` (name)
    a read-only descriptor for a regular file in the configured maildrop (files there
    belong to the users who wrote them, 0600);
``maildrop_keep`` (name, keep)
    rewrite the listed recipients (indexes into the file's own envelope) of a maildrop
    file into a new one owned by the same user;
``forward`` (user)
    that user's ``.forward`` (``routing.forward``: the configured ``forward_path``, the
    same ownership and mode checks), parsed: a home directory may be closed to the
    daemon's account; nothing but a ``.forward`` of an existing user is read;
``reload``
    read the configuration file again (the path fixed at start), after SIGHUP;
``interrupt``
    the daemon is stopping: deliveries waiting for a mailbox's locks give up (4.2.0),
    now and from now on (answered at once, outside the limit on requests in hand).

The writes themselves are ``delivery.deposit.DirectDeposit``'s, the very code a daemon
running as root uses. Requests are handled concurrently (at most ``PARALLEL``). The
daemon closes its end when it has stopped (its deliveries done or given up): the
helper then kills commands still running, lets writes in progress end, and exits.
Trusts the configuration file (root's) and nothing in a request. Settings:
``local_delivery.*``, ``service.root_programs``, ``local.maildrop``, ``queue.directory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailwright.config.schema import Settings
from mailwright.core import process
from mailwright.core.queueid import QUEUE_ID_RE
from mailwright.core.reply import Reply
from mailwright.delivery import pipe
from mailwright.delivery.deposit import DepositOptions, DirectDeposit, Parcel
from mailwright.observability import maillog
from mailwright.privhelper import protocol
from mailwright.privhelper.protocol import Channel, Content, ProtocolError
from mailwright.queue import maildrop
from mailwright.routing.forward import ItemFileError, read_forward, valid_shell
from mailwright.routing.localusers import LocalUsers, account, local_users

log = logging.getLogger("mailwright.privhelper")

PARALLEL = 64
STOP_GRACE = 10.0
MAX_TEXT = 1024
MAX_COMMAND = 8192
MAX_PATH = 4096
PROCESS_NAME = b"mailwright-priv"
CONTENT_OPS = frozenset({"mailbox", "program", "file"})

Answer = tuple[dict[str, Any], list[int]]


class RefusedError(Exception):
    """A request the helper will not carry out; ``reply`` is what the delivery reports."""

    def __init__(self, why: str, reply: Reply | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.reply = reply or Reply.of(451, "4.3.0", f"Local delivery helper refused: {why}")


@dataclass(frozen=True, slots=True)
class _Setup:
    """What the configuration decides (replaced as a whole on reload)."""

    settings: Settings
    users: LocalUsers
    deposit: DirectDeposit


class HelperServer:
    def __init__(
        self,
        channel: Channel,
        settings: Settings,
        config_path: Path | None,
        service_ids: tuple[int, int],
    ) -> None:
        self.channel = channel
        self.config_path = config_path
        self.service_ids = service_ids
        self.setup = self._setup(settings)
        self._gate = asyncio.Semaphore(PARALLEL)
        self._ops: dict[str, Callable[[dict[str, Any], Content | None], Awaitable[Answer]]] = {
            "mailbox": self._mailbox,
            "program": self._program,
            "file": self._file,
            "maildrop_open": self._maildrop_open,
            "maildrop_keep": self._maildrop_keep,
            "forward": self._forward,
            "reload": self._reload,
            "interrupt": self._interrupt,
        }

    def _setup(self, settings: Settings) -> _Setup:
        users = local_users(settings, own=self.service_ids)
        return _Setup(settings, users, DirectDeposit(DepositOptions.from_settings(settings)))

    # ---- the loop ---------------------------------------------------------------------------
    async def serve(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        while True:
            try:
                message, fds = await self.channel.receive()
            except protocol.ChannelClosedError:
                break
            except ProtocolError as exc:
                log.error("privileged helper: %s; stopping", exc)
                break
            task = asyncio.create_task(self._answer(message, fds))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        # the daemon is gone: whatever is in hand cannot be reported and will be tried
        # again after its restart, so commands still running are ended now
        if pipe.kill_all():
            log.warning("privileged helper: the daemon is gone; running commands killed")
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(set(tasks), timeout=STOP_GRACE)
        self.channel.close()

    async def _answer(self, message: dict[str, Any], fds: list[int]) -> None:
        request_id = message.get("id")
        op = message.get("op")
        if _qid(message) != "-":
            maillog.current_queue_id.set(message["queue_id"])  # this task's lines carry it
        content: Content | None = None
        sent: list[int] = []
        try:
            # an interrupt must get through while the gate is full of lock waits
            async with self._gate if op != "interrupt" else contextlib.nullcontext():
                content, extra = self._content(op, fds)
                protocol.close_all(extra)
                body, sent = await self._dispatch(message, content)
            answer = {"id": request_id, "ok": True, **body}
        except RefusedError as exc:
            log.warning("%s: privileged helper refused %s: %s", _qid(message), op, exc.why)
            answer = {
                "id": request_id,
                "ok": False,
                "error": exc.why,
                "reply": protocol.reply_fields(exc.reply),
            }
        except Exception as exc:
            log.exception("%s: privileged helper: %s failed", _qid(message), op)
            reply = Reply.of(451, "4.3.0", f"Local delivery helper error: {exc}")
            answer = {
                "id": request_id,
                "ok": False,
                "error": str(exc),
                "reply": protocol.reply_fields(reply),
            }
        finally:
            if content is not None:
                content.discard()
        try:
            protocol.encode(answer)
        except ProtocolError as exc:  # too long for a frame: say so rather than nothing
            protocol.close_all(sent)
            sent = []
            too_long = Reply.of(451, "4.3.0", f"Answer too long: {exc}")
            answer = {
                "id": request_id,
                "ok": False,
                "error": str(exc),
                "reply": protocol.reply_fields(too_long),
            }
        try:
            await self.channel.send(answer, sent)
        except (protocol.ChannelClosedError, ProtocolError, OSError) as exc:
            log.warning("privileged helper: cannot answer request %s: %s", request_id, exc)
        finally:
            protocol.close_all(sent)

    def _content(self, op: object, fds: list[int]) -> tuple[Content | None, list[int]]:
        """The content descriptor of a delivery request; every other descriptor is extra."""
        if op in CONTENT_OPS and len(fds) == 1:
            return Content(fds[0]), []
        if op in CONTENT_OPS:
            protocol.close_all(fds)
            raise RefusedError("a delivery request carries exactly one content descriptor")
        return None, fds

    async def _dispatch(self, message: dict[str, Any], content: Content | None) -> Answer:
        if message.get("v") != protocol.VERSION:
            raise RefusedError(f"protocol version {message.get('v')!r} is not {protocol.VERSION}")
        op = message.get("op")
        handler = self._ops.get(op) if isinstance(op, str) else None
        if handler is None:
            raise RefusedError(f"unknown request {op!r}")
        return await handler(message, content)

    # ---- deliveries -------------------------------------------------------------------------
    async def _mailbox(self, request: dict[str, Any], content: Content | None) -> Answer:
        parcel = _parcel(request, content)
        name = _text(request, "user")
        user = await asyncio.to_thread(self.setup.users.lookup, name)
        if user is None:
            raise RefusedError(
                f"no mailbox for {name!r}",
                Reply.of(550, "5.1.1", f"<{parcel.recipient}>... User unknown"),
            )
        log.debug(
            "%s: helper: mailbox of %s for <%s>", parcel.queue_id, user.name, parcel.recipient
        )
        reply = await self.setup.deposit.mailbox(parcel, user)
        return {"reply": protocol.reply_fields(reply)}, []

    async def _program(self, request: dict[str, Any], content: Content | None) -> Answer:
        parcel = _parcel(request, content)
        controller = self._controller(_text(request, "user", empty=True))
        command = _text(request, "command", limit=MAX_COMMAND)
        log.debug("%s: helper: |%s as %s", parcel.queue_id, command, controller)
        result = await self.setup.deposit.program(parcel, command, controller)
        return {"outcome": result.outcome.value, "reply": protocol.reply_fields(result.reply)}, []

    async def _file(self, request: dict[str, Any], content: Content | None) -> Answer:
        parcel = _parcel(request, content)
        controller = self._controller(_text(request, "user", empty=True))
        path = _text(request, "path", limit=MAX_PATH)
        if not path.startswith("/") or os.path.normpath(path) != path:
            raise RefusedError(
                f"{path!r} is not an absolute, normal path",
                Reply.of(550, "5.7.1", f"{path}: not an absolute path"),
            )
        log.debug("%s: helper: file %s as %s", parcel.queue_id, path, controller)
        reply = await self.setup.deposit.file(parcel, path, controller)
        return {"reply": protocol.reply_fields(reply)}, []

    async def _interrupt(self, request: dict[str, Any], content: Content | None) -> Answer:
        log.info("privileged helper: the daemon is stopping; lock waits end")
        self.setup.deposit.interrupt()
        return {}, []

    def _controller(self, name: str) -> str:
        """The login a program or file delivery runs as; refuses what no alias could mean."""
        default = self.setup.settings.local_delivery.default_user
        name = name or default
        pw = account(name)
        if pw is None:
            raise RefusedError(
                f"{name!r} is not an account",
                Reply.of(550, "5.7.1", f"Cannot run as {name}: no such user"),
            )
        if pw.pw_uid == 0 or name == default:
            return name  # root becomes the default user unless service.root_programs
        if not valid_shell(pw.pw_shell):
            raise RefusedError(
                f"{name} has no login shell",
                Reply.of(550, "5.7.1", f"Cannot mail directly to programs or files as {name}"),
            )
        return name

    # ---- the maildrop -----------------------------------------------------------------------
    async def _maildrop_open(self, request: dict[str, Any], content: Content | None) -> Answer:
        name = self._maildrop_name(request)
        return await asyncio.to_thread(self._in_maildrop, _open_maildrop_file, name)

    async def _maildrop_keep(self, request: dict[str, Any], content: Content | None) -> Answer:
        name = self._maildrop_name(request)
        keep = request.get("keep")
        if (
            not isinstance(keep, list)
            or not keep
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in keep)
            or len(set(keep)) != len(keep)
        ):
            raise RefusedError("keep must be a list of distinct recipient indexes")
        name = await asyncio.to_thread(self._in_maildrop, _rewrite_maildrop_file, name, keep)
        return {"name": name}, []

    def _maildrop_name(self, request: dict[str, Any]) -> str:
        name = _text(request, "name", limit=255)
        if "/" in name or name.startswith("."):
            raise RefusedError(f"{name!r} is not a maildrop file name")
        return name

    def _in_maildrop(self, action: Callable[..., Any], name: str, *args: Any) -> Any:
        """Run ``action(directory, name, ...)`` on the maildrop, reached without following
        a symbolic link anywhere: the daemon's account owns the queue directory and could
        otherwise point "maildrop" at someone else's files."""
        try:
            fd = open_directory(str(self.setup.settings.maildrop_dir))
        except OSError as exc:
            raise RefusedError(f"maildrop: {exc.strerror or exc}") from None
        try:
            return action(f"/proc/self/fd/{fd}", name, *args)  # that very directory
        finally:
            os.close(fd)

    # ---- .forward ---------------------------------------------------------------------------
    async def _forward(self, request: dict[str, Any], content: Content | None) -> Answer:
        name = _text(request, "user")
        user = await asyncio.to_thread(self.setup.users.lookup, name)
        if user is None:
            raise RefusedError(f"no user {name!r}")
        settings = self.setup.settings
        try:
            found = await asyncio.to_thread(
                read_forward, settings.routing.forward_path, user, settings.hostname
            )
        except ItemFileError as exc:
            return {"path": str(exc.path), "reason": exc.reason, "transient": exc.transient}, []
        if found is None:
            return {"found": False}, []
        return {
            "found": True,
            "path": str(found.path),
            "items": [[item.kind.value, item.value] for item in found.items],
            "owner_uid": found.owner_uid,
            "owner": found.owner,
            "unsafe": found.unsafe,
            "problems": found.problems[:100],
        }, []

    # ---- configuration ----------------------------------------------------------------------
    async def _reload(self, request: dict[str, Any], content: Content | None) -> Answer:
        from mailwright.config.loader import ConfigError, load_settings
        from mailwright.config.reloadable import effective_settings

        try:
            fresh = await asyncio.to_thread(load_settings, self.config_path)
        except ConfigError as exc:
            raise RefusedError(f"configuration not reloaded: {exc}") from None
        settings, _ = effective_settings(self.setup.settings, fresh)
        self.setup = self._setup(settings)
        log.info("privileged helper: configuration reloaded")
        return {}, []


# ---- request fields ---------------------------------------------------------------------------


def _text(request: dict[str, Any], key: str, limit: int = MAX_TEXT, empty: bool = False) -> str:
    value = request.get(key)
    if not isinstance(value, str) or len(value) > limit or (not value and not empty):
        raise RefusedError(f"{key}: a non-empty text of at most {limit} characters is needed")
    if any(c in value for c in "\0\r\n"):
        raise RefusedError(f"{key}: control characters")
    return value


def _parcel(request: dict[str, Any], content: Content | None) -> Parcel:
    assert content is not None  # checked by _content
    queue_id = _text(request, "queue_id")
    if not QUEUE_ID_RE.match(queue_id):
        raise RefusedError(f"{queue_id!r} is not a queue id")
    orcpt = request.get("orcpt")
    return Parcel(
        queue_id=queue_id,
        sender=_text(request, "sender", empty=True),
        recipient=_text(request, "recipient"),
        original_recipient=_text(request, "orcpt") if orcpt is not None else None,
        message=content,
    )


def _qid(message: dict[str, Any]) -> str:
    queue_id = message.get("queue_id")
    return queue_id if isinstance(queue_id, str) and QUEUE_ID_RE.match(queue_id) else "-"


def open_directory(path: str) -> int:
    """A descriptor of the directory ``path``, no component of which may be a symlink."""
    if not path.startswith("/"):
        raise OSError(0, f"{path}: not an absolute path")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags)
    try:
        for part in [p for p in path.split("/") if p]:
            if part == "..":
                raise OSError(0, f"{path}: '..' in the path")
            child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_maildrop_file(directory: str, name: str) -> Answer:
    """Only a regular file with one link, never through a link; the daemon checks its
    content."""
    path = os.path.join(directory, name)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return {"missing": True}, []
    if stat.S_ISLNK(mode):
        return {"corrupt": f"{name}: is a symbolic link"}, []
    if not stat.S_ISREG(mode):
        return {"corrupt": f"{name}: not a regular file"}, []
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return {"missing": True}, []
    except OSError as exc:
        return {"corrupt": f"{name}: {exc.strerror}"}, []
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        return {"corrupt": f"{name}: not a regular file with one link"}, []
    return {}, [fd]


def _rewrite_maildrop_file(directory: str, name: str, keep: list[int]) -> str:
    path = os.path.join(directory, name)
    try:
        entry = maildrop.open_entry(path)
    except (OSError, maildrop.MaildropError) as exc:
        raise RefusedError(f"{name}: {exc}") from None
    with entry:
        recipients = entry.envelope.recipients
        if max(keep) >= len(recipients):
            raise RefusedError(f"{name}: has {len(recipients)} recipients")
        copy = maildrop.write(
            os.path.dirname(path),
            entry.envelope.with_recipients([recipients[i] for i in keep]),
            b"".join(entry.chunks()),
        )
        os.chown(copy, entry.uid, -1, follow_symlinks=False)  # still the submitter's
    return os.path.basename(copy)


# ---- the process --------------------------------------------------------------------------------


def run(
    sock: socket.socket,
    settings: Settings,
    config_path: Path | None,
    service_ids: tuple[int, int],
) -> int:
    """The helper process's whole life (called in the child right after the fork)."""
    process.name(PROCESS_NAME)  # ps and /proc/PID/comm show the helper by name
    try:
        asyncio.run(_main(sock, settings, config_path, service_ids))
    except Exception:
        log.exception("privileged helper failed")
        return 70
    return 0


async def _main(
    sock: socket.socket, settings: Settings, config_path: Path | None, ids: tuple[int, int]
) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # handled, not ignored: programs started from here get the default dispositions
        loop.add_signal_handler(sig, lambda: None)
    server = HelperServer(Channel(sock), settings, config_path, ids)
    await server.serve()
