"""The privileged helper's wire format: one JSON object per record, descriptors beside it.

The daemon and the helper hold the two ends of a ``socketpair(AF_UNIX, SOCK_SEQPACKET)``:
the kernel keeps record boundaries, so one record is one frame. A frame is a UTF-8
JSON object of at most ``MAX_FRAME`` octets, with at most ``MAX_FDS`` file
descriptors passed along (``SCM_RIGHTS``). Requests are ``{"v": 1, "id": N, "op":
NAME, ...}``; each answer is ``{"id": N, "ok": true|false, ...}``, in any order.

The content of a message does not travel in frames: the daemon opens a pipe, passes
its read end with the request and writes the message into the write end as chunks
(``>I`` length, then the octets) ending with an empty chunk. A stream that ends
without that empty chunk (the daemon died while writing) raises
``TruncatedContentError``, so a half message is never taken for a whole one.

Trusts nothing it receives: a record that is not one JSON object, too long, or with
too many descriptors is a ``ProtocolError`` (the descriptors are closed). Reads no
settings.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import json
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mailwright.core.reply import Reply

VERSION = 1
MAX_FRAME = 64 * 1024
MAX_FDS = 2
CHUNK = struct.Struct(">I")
MAX_CHUNK = 1 << 20


class ProtocolError(Exception):
    """A frame that breaks the protocol; the channel is not to be trusted any more."""


class ChannelClosedError(Exception):
    """The other end is gone."""


class TruncatedContentError(OSError):
    """The message content ended before its end marker."""

    def __init__(self) -> None:
        super().__init__(errno.EIO, "message content ended early (daemon gone?)")


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(data)} octets is too long")
    return data


def decode(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a frame must be a JSON object")
    return message


def reply_fields(reply: Reply | None) -> dict[str, Any] | None:
    if reply is None:
        return None
    return {"code": reply.code, "status": reply.status, "lines": list(reply.lines)}


def reply_from(fields: object) -> Reply | None:
    """A reply from its frame form; None for null (anything malformed is a ProtocolError)."""
    if fields is None:
        return None
    if not isinstance(fields, dict):
        raise ProtocolError("reply must be an object")
    code, status, lines = fields.get("code"), fields.get("status"), fields.get("lines")
    if (
        not isinstance(code, int)
        or not 200 <= code <= 599
        or not (status is None or isinstance(status, str))
        or not isinstance(lines, list)
        or not all(isinstance(line, str) for line in lines)
    ):
        raise ProtocolError("malformed reply")
    return Reply.of(code, status, *lines)


class Channel:
    """Frames over one end of the socket pair, from asyncio (any event loop)."""

    def __init__(self, sock: socket.socket) -> None:
        if sock.type != socket.SOCK_SEQPACKET:
            raise ValueError("the helper channel must be a SOCK_SEQPACKET socket")
        sock.setblocking(False)
        self.sock = sock
        self._send_lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self.sock.fileno() < 0

    def close(self) -> None:
        self.sock.close()

    async def send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        data = encode(message)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        async with self._send_lock:
            while True:
                if self.closed:
                    raise ChannelClosedError("channel closed")
                try:
                    self.sock.sendmsg([data], ancillary)
                    return
                except BlockingIOError:
                    await self._ready(write=True)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    raise ChannelClosedError(str(exc)) from None

    async def receive(self) -> tuple[dict[str, Any], list[int]]:
        """The next frame and the descriptors that came with it (the caller closes them)."""
        while True:
            if self.closed:
                raise ChannelClosedError("channel closed")
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(
                    MAX_FRAME + 1, socket.CMSG_SPACE(MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC
                )
                break
            except BlockingIOError:
                await self._ready(write=False)
            except ConnectionResetError as exc:
                raise ChannelClosedError(str(exc)) from None
        fds = _descriptors(ancillary)
        if not data and not fds:
            raise ChannelClosedError("end of stream")
        try:
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_FRAME:
                raise ProtocolError("frame or descriptors truncated")
            return decode(data), fds
        except ProtocolError:
            close_all(fds)
            raise

    async def _ready(self, write: bool) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        fd = self.sock.fileno()

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        if write:
            loop.add_writer(fd, wake)
        else:
            loop.add_reader(fd, wake)
        try:
            await waiter
        finally:
            if write:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)


def _descriptors(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(array.array("i", data[:usable]))
    return fds


def close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# ---- message content --------------------------------------------------------------------------


def feed_content(fd: int, pieces: Callable[[], Iterator[bytes]], cancel: threading.Event) -> bool:
    """Write the message into the pipe ``fd`` as chunks, then the end marker; close ``fd``.

    Blocking (run it in a thread). Returns False when the reader went away or ``cancel``
    was set before everything was written.
    """
    os.set_blocking(fd, False)
    try:
        for piece in pieces():
            for start in range(0, len(piece), MAX_CHUNK):
                part = piece[start : start + MAX_CHUNK]
                if not _write(fd, CHUNK.pack(len(part)) + part, cancel):
                    return False
        return _write(fd, CHUNK.pack(0), cancel)
    finally:
        os.close(fd)


def _write(fd: int, data: bytes, cancel: threading.Event) -> bool:
    view = memoryview(data)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while view:
        if cancel.is_set():
            return False
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            poller.poll(200)
            continue
        except BrokenPipeError:
            return False
        view = view[n:]
    return True


class Content:
    """The message in the pipe ``fd``: the one-shot ``pieces`` callable deliveries take.

    Call it once for an iterator over the message (``TruncatedContentError`` if the end
    marker is missing); the iterator closes ``fd`` when it ends or is dropped. Call
    ``discard`` when the content will not be read (a refused request).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._started = False
        self._lock = threading.Lock()

    def __call__(self) -> Iterator[bytes]:
        if self._started:
            raise RuntimeError("the message content can be read once")
        self._started = True
        return self._chunks()

    def discard(self) -> None:
        if not self._started:
            self._started = True
            self._close()

    def _close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def _chunks(self) -> Iterator[bytes]:
        try:
            while True:
                (size,) = CHUNK.unpack(self._exactly(CHUNK.size))
                if size == 0:
                    return
                if size > MAX_CHUNK:
                    raise TruncatedContentError()
                yield self._exactly(size)
        finally:
            self._close()

    def _exactly(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            data = os.read(self._fd, size - len(out))
            if not data:
                raise TruncatedContentError()
            out += data
        return bytes(out)
