"""The daemon's control socket: how admin commands reach a running daemon.

A Unix socket (``<queue dir>/control.sock``, mode 0600: only the daemon's user
and root) speaking one JSON object per line each way. Requests: ``wake`` (look
at the queue now, after a release, hold or delete), ``flush`` (a queue run: a full
one, or with ``queue_ids`` a selective one that delivers only those messages, also
in queue-only mode), ``ping``, ``status`` (a summary for ``mailwright status``),
``admin`` (``mailwright queue hold|release|delete|bounce|flush``, done by the daemon:
``daemon.admin``). Without a daemon the admin commands change the queue themselves
through the same code. Every request gets ``peer_uid``, the caller's uid as the kernel
tells it (``SO_PEERCRED``). Trusts only callers that can open the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("mailwright.daemon")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 64 * 1024


def socket_path(queue_dir: Path) -> Path:
    return queue_dir / "control.sock"


class ControlServer:
    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path))
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                line = await reader.readline()
            response = await self._answer(line, _peer_uid(writer))
            writer.write(json.dumps(response).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes, peer_uid: int | None) -> dict[str, Any]:
        if len(line) > MAX_REQUEST:
            return {"ok": False, "error": "request too long"}
        try:
            request = json.loads(line)
            handler = self.handlers[request["op"]]
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "bad request"}
        request["peer_uid"] = peer_uid  # the kernel's word, never the caller's
        try:
            return await handler(request)
        except Exception as exc:
            log.exception("control request %s failed", request.get("op"))
            return {"ok": False, "error": str(exc)}


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """Who is on the other end (``SO_PEERCRED``): the admin actions log it."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def request(queue_dir: Path, op: str, timeout: float = 10.0, **args: Any) -> dict[str, Any] | None:
    """Send one request to a running daemon; None when no daemon listens (or the caller
    may not use the socket: ``ask`` tells that apart)."""
    try:
        return ask(queue_dir, op, timeout, **args)
    except PermissionError:
        return None


def ask(queue_dir: Path, op: str, timeout: float = 10.0, **args: Any) -> dict[str, Any] | None:
    """``request``, but ``PermissionError`` when the caller may not reach the socket (the
    socket or the queue directory is closed to it): a daemon may well be running."""
    path = socket_path(queue_dir)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except PermissionError:
        raise
    except OSError:  # no socket, nobody listening, a daemon gone in the middle
        return None
    try:
        answer: dict[str, Any] = json.loads(data)
    except ValueError:
        return None
    return answer
