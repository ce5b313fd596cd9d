"""Raw-socket SMTP helpers for tests: send exact bytes, read complete replies."""

from __future__ import annotations

import socket


class RawClient:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 20) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by server; pending: {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> str:
        """One complete (possibly multi-line) reply; returns its last line."""
        while True:
            line = self._line().decode("utf-8", "replace")
            if line[3:4] != "-":
                return line

    def replies(self, n: int) -> list[str]:
        return [self.reply() for _ in range(n)]

    def cmd(self, line: str | bytes) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def message(self, content: bytes) -> str:
        """One pipelined transaction from <a@x.test> to <b@y.test> (after EHLO): ``content``
        (without the final dot) after the 354; returns the reply to its end of data."""
        self.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
        self.replies(3)
        self.send(content + b".\r\n")
        return self.reply()

    def closed(self) -> bool:
        """True when the server has closed the connection (reads EOF)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()
