"""Real filters for tests: the pymilter test filter, opendkim, spamd; started and stopped here.

Each runs in the foreground as a child process on a fresh unix socket or
loopback port under the test's temporary directory; readiness is the socket
accepting a connection (no sleeping as synchronisation).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def wait_connectable(address: str | tuple[str, int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        with socket.socket(family) as s:
            try:
                s.connect(address)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{address} not accepting connections") from None
        time.sleep(0.02)  # polling a socket that is not there yet


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class PyFilter:
    """The pymilter test filter (tests/support/testmilter.py) on a unix socket."""

    def __init__(self, root: Path, name: str = "t", *options: str) -> None:
        self.root = root
        self.name = name
        self.socket = root / f"{name}.sock"
        self.log = root / f"{name}.log"
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def spec(self) -> str:
        return f"unix:{self.socket}"

    def start(self) -> PyFilter:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "testmilter.py"), self.spec, str(self.log),
             "--name", self.name, *self.options],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        wait_connectable(str(self.socket))
        return self

    def stop(self) -> None:
        if self.proc is not None:  # libmilter takes seconds to exit on SIGTERM; the log is flushed
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def events(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def wait_for(self, cb: str, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
        """Wait until the log holds ``count`` events of callback ``cb``; returns all events."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if sum(1 for e in events if e["cb"] == cb) >= count:
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} x {cb} in {events}")
            time.sleep(0.02)  # the filter writes its log from another process


@contextmanager
def py_filter(root: Path, name: str = "t", *options: str) -> Iterator[PyFilter]:
    f = PyFilter(root, name, *options).start()
    try:
        yield f
    finally:
        f.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OpenDkim:
    """opendkim in signing mode for example.com, selector ``test``, key from opendkim-genkey."""

    def __init__(self, root: Path, domain: str = "example.com", selector: str = "test") -> None:
        self.root = root
        self.domain = domain
        self.selector = selector
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def spec(self) -> str:
        return f"inet:{self.port}@127.0.0.1"

    @property
    def private_key(self) -> bytes:
        return (self.root / f"{self.selector}.private").read_bytes()

    @property
    def dns_txt(self) -> bytes:
        text = (self.root / f"{self.selector}.txt").read_text()
        return "".join(re.findall(r'"([^"]*)"', text)).encode()

    def start(self) -> OpenDkim:
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["opendkim-genkey", "-b", "1024", "-d", self.domain, "-s", self.selector,
             "-D", str(self.root)],
            check=True,
        )  # fmt: skip
        conf = self.root / "opendkim.conf"
        conf.write_text(
            f"Syslog no\nBackground no\nMode sv\nDomain {self.domain}\n"
            f"Selector {self.selector}\nKeyFile {self.root / (self.selector + '.private')}\n"
            f"Socket {self.spec}\nCanonicalization relaxed/simple\n"
            "RequireSafeKeys no\nUserID root\n"
        )
        self.proc = subprocess.Popen(
            ["opendkim", "-f", "-x", str(conf)],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_connectable(("127.0.0.1", self.port))
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


def have(*programs: str) -> bool:
    return all(shutil.which(p) for p in programs)


def wait_until(check: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling another process's output
