"""Test helpers for TLS and AUTH: certificates, users files, a raw client that can STARTTLS.

Certificates are made with ``mailwright tls selfsigned``'s own function; users files
with bcrypt at the lowest cost (4) so tests stay fast. The raw client can bind to
any loopback source address (127.0.0.0/8), which lets one test be many clients.
"""

from __future__ import annotations

import base64
import socket
import ssl
from pathlib import Path
from typing import Any

from mailwright.cli.tls import make_selfsigned
from mailwright.policy.auth import hash_password, write_users
from tests.support.smtp import RawClient


def certificate(directory: Path, *names: str, stem: str = "") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = make_selfsigned([*names, "mx.test", "localhost", "127.0.0.1"], days=2)
    cert, key = directory / f"{stem}cert.pem", directory / f"{stem}key.pem"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    key.chmod(0o600)
    return cert, key


def users_file(path: Path, users: dict[str, str]) -> Path:
    write_users(path, {u: hash_password(p, rounds=4).encode() for u, p in users.items()})
    return path


def trusting(cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False  # the tests connect to 127.0.0.1 by address
    return context


def plain(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secure_config(root: Path, **extra: Any) -> dict[str, Any]:
    """TLS and AUTH with user alice (password "correct horse"), strangers may not relay."""
    cert, key = certificate(root / "tls")
    users = users_file(root / "users", {"alice": "correct horse", "bob": "battery staple"})
    config: dict[str, Any] = {
        "tls": {"certificate": str(cert), "key": str(key)},
        "auth": {"users_file": str(users), "failure_delay": 0.05, "max_failure_delay": 0.2},
        "relay": {"networks": []},
        "routing": {"local_domains": ["mx.test"]},
        "server": {"timeouts": {"shutdown_grace": 5}},  # a test that forgets a client
    }
    config.update(extra)
    return config


class Client(RawClient):
    """RawClient from a chosen loopback source address, with STARTTLS and implicit TLS."""

    def __init__(
        self,
        port: int,
        source: str = "127.0.0.1",
        timeout: float = 20,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout, (source, 0))
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="mx.test")
        self.sock = sock
        self.buf = b""
        self.greeting = self.reply()

    def starttls(self, context: ssl.SSLContext) -> str:
        reply = self.cmd("STARTTLS")
        if reply.startswith("220"):
            assert self.buf == b"", f"plaintext after 220: {self.buf!r}"
            self.sock = context.wrap_socket(self.sock, server_hostname="mx.test")
        return reply

    def ehlo(self, name: str = "client.test") -> list[str]:
        """The EHLO keywords."""
        self.send(f"EHLO {name}\r\n".encode())
        lines = []
        while True:
            line = self._line().decode()
            lines.append(line[4:])
            if line[3:4] != "-":
                return lines[1:]

    @property
    def tls_version(self) -> str | None:
        version = getattr(self.sock, "version", None)
        return version() if version else None


class LineProcess:
    """A command driven line by line: write a line, wait for the reply lines (no fixed sleeps).

    Used for ``openssl s_client``: Mailwright refuses commands pipelined behind EHLO
    (RFC 2920), so the dialogue must wait for each reply.
    """

    def __init__(self, args: list[str]) -> None:
        import queue
        import subprocess
        import threading

        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.put(line.rstrip("\r\n"))
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def write(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read_until(self, done: Any, timeout: float = 20) -> list[str]:
        """Lines up to and including the first for which ``done(line)`` is true."""
        seen: list[str] = []
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"output ended; seen {seen}")
            seen.append(line)
            if done(line):
                return seen

    def close(self, timeout: float = 20) -> tuple[int, str]:
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        rc = self.proc.wait(timeout)
        return rc, self.proc.stderr.read()
