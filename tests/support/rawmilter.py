"""A scripted milter speaking the raw wire protocol, for broken-filter tests.

Runs in a thread of the test process on a unix socket. By default it behaves
like a minimal filter (OPTNEG 6/0x1FF/0, CONTINUE to every command); ``actions``
and ``protocol`` (attributes, read at each OPTNEG) change what it negotiates. A script
maps a command letter to what to do instead: a list of raw packets to send,
``HANG`` (read on, never answer), ``CLOSE`` (drop the connection). Every
command received is recorded.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

from mailwright.policy.milter import codec
from mailwright.policy.milter.codec import OptNegReply, Packet, PacketDecoder, Simple

HANG = "hang"
CLOSE = "close"
Action = list[bytes] | str
Script = dict[bytes, Action | Callable[[Packet], Action]]
NO_REPLY = frozenset({b"D", b"A", b"Q", b"K"})


def packets(*responses: codec.Response) -> list[bytes]:
    return [codec.encode_response(r) for r in responses]


class RawMilter:
    def __init__(
        self, path: Path, script: Script | None = None, protocol: int = 0, actions: int = 0x1FF
    ) -> None:
        self.path = path
        self.script = script or {}
        self.protocol = protocol
        self.actions = actions
        self.received: list[Packet] = []
        self.connections = 0
        self._sock = socket.socket(socket.AF_UNIX)
        self._sock.bind(str(path))
        self._sock.listen(16)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def spec(self) -> str:
        return f"unix:{self.path}"

    def commands(self) -> bytes:
        with self._lock:
            return b"".join(p.cmd for p in self.received)

    def macros(self, stage: bytes) -> list[dict[str, str]]:
        """The macros of every ``D`` packet for ``stage`` (e.g. ``b"R"``), in order."""
        with self._lock:
            found = [p.data for p in self.received if p.cmd == b"D" and p.data[:1] == stage]
        out = []
        for data in found:
            parts = data[1:].split(b"\0")[:-1]
            out.append(
                {k.decode(): v.decode() for k, v in zip(parts[::2], parts[1::2], strict=True)}
            )
        return out

    def close(self) -> None:
        self._stop.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        decoder = PacketDecoder()
        hanging = False
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                decoder.feed(data)
                while (packet := decoder.next_packet()) is not None:
                    with self._lock:
                        self.received.append(packet)
                    if hanging:
                        continue
                    action = self._action(packet)
                    if action == CLOSE:
                        return
                    if action == HANG:
                        hanging = True
                        continue
                    try:
                        conn.sendall(b"".join(action))
                    except OSError:
                        return

    def _action(self, packet: Packet) -> Action:
        entry = self.script.get(packet.cmd)
        if entry is not None:
            return entry(packet) if callable(entry) else entry
        if packet.cmd == b"O":
            return packets(OptNegReply(6, self.actions, self.protocol))
        if packet.cmd in NO_REPLY:
            return []
        return packets(Simple(codec.CONTINUE))
