"""Run Postfix's smtp-sink as a real SMTP/LMTP peer for tests (see test-peers.md, section 1).

Each sink gets a fresh loopback port (or a Unix socket) and a dump directory;
readiness is the port accepting connections. ``messages()`` parses the dump
files (one per message: X-Mail-Args, X-Rcpt-Args, then the message). smtp-sink
writes a dump file completely once the client has QUIT, so close the client
first. Stop with ``stop()`` (SIGTERM, then wait) -- never pkill.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.daemon import free_port

SMTP_SINK = "/usr/sbin/smtp-sink"


def available() -> bool:
    return shutil.which(SMTP_SINK) is not None


@dataclass
class SinkMessage:
    mail_args: str  # "<a@x.test> SIZE=123 ..."
    rcpt_args: list[str]
    helo: str
    proto: str  # SMTP, ESMTP or LMTP
    content: bytes  # the message as received (LF line ends: smtp-sink writes text lines)


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Until something accepts on host:port (a condition, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


class SmtpSink:
    def __init__(
        self,
        root: Path,
        *options: str,
        unix: bool = False,
        address: str = "127.0.0.1",
        port: int | None = None,
        dump: bool = True,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # smtp-sink writes dumps as nobody: the directory and its parents must let it in
        self.dump = Path(tempfile.mkdtemp(prefix="sink.", dir="/tmp"))
        os.chmod(self.dump, 0o777)
        self.address = address
        self.port = port or free_port()
        self.socket_path = str(root / "sink.sock") if unix else ""
        self.options = list(options)
        self.dump_files = dump
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SmtpSink:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        where = f"unix:{self.socket_path}" if self.socket_path else f"{self.address}:{self.port}"
        cmd = [SMTP_SINK, *user, "-c", "-h", "sink.test"]
        if self.dump_files:
            cmd += ["-d", f"{self.dump}/%Y%m%d%H%M%S."]
        self.proc = subprocess.Popen(
            [*cmd, *self.options, where, "64"],
            stdout=(self.root / "counters").open("wb"),
            stderr=(self.root / "err").open("wb"),
        )
        if self.socket_path:
            self._wait_for_socket()
        else:
            wait_for_port(self.port, self.address)
        return self

    def _wait_for_socket(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.socket_path)
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        shutil.rmtree(self.dump, ignore_errors=True)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def counters(self) -> dict[str, int]:
        """The last ``sess=.. quit=.. mesg=..`` line smtp-sink printed (``-c``); ``sess``
        also counts the connection that checked the sink was ready."""
        text = (self.root / "counters").read_text().replace("\r", "\n").strip()
        last = text.splitlines()[-1] if text else ""
        return {k: int(v) for k, v in (item.split("=") for item in last.split())}

    def messages(self) -> list[SinkMessage]:
        """The messages received; a transaction cut short may leave an empty file (skipped)."""
        out = []
        for path in sorted(self.dump.iterdir()):
            raw = path.read_bytes()
            if raw:
                out.append(self._parse(raw))
        return out

    @staticmethod
    def _parse(raw: bytes) -> SinkMessage:
        mail, helo, proto, rcpts = "", "", "", []
        rest = raw
        while rest.startswith(b"X-"):
            line, rest = rest.split(b"\n", 1)
            name, _, value = line.decode().partition(": ")
            if name == "X-Mail-Args":
                mail = value
            elif name == "X-Rcpt-Args":
                rcpts.append(value)
            elif name == "X-Helo-Args":
                helo = value
            elif name == "X-Client-Proto":
                proto = value
        # then smtp-sink's own 3-line Received: header, then the message, then one empty line
        lines = rest.split(b"\n")
        assert lines[0].startswith(b"Received: from"), lines[:3]
        content = b"\n".join(lines[3:])
        content = content.removesuffix(b"\n")
        return SinkMessage(mail, rcpts, helo, proto, content)
