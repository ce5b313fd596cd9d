"""Running the daemon as a service manager would, for the T09 tests.

``DatagramSink`` binds a Unix datagram socket the test owns and collects what arrives:
it stands in for systemd's ``$NOTIFY_SOCKET`` and for a syslog daemon. ``ServiceDaemon``
is the usual test daemon (``tests.support.daemon.Mailwright``) started with
``NOTIFY_SOCKET`` set and ready when ``READY=1`` arrives (not a log line: its logs
may be going to syslog). ``system_user`` makes a throwaway account with ``useradd``
and removes it afterwards.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.daemon import Mailwright


class DatagramSink:
    """Everything sent to a Unix datagram socket, as text."""

    def __init__(self, path: Path | str, mode: int = 0o666) -> None:
        """``path``: a file system path, or ``@name`` for an abstract socket."""
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if isinstance(path, str) and path.startswith("@"):
            self.sock.bind("\0" + path[1:])
        else:
            self.sock.bind(str(path))
            os.chmod(path, mode)  # a daemon that gave up root must still reach it
        self.messages: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            with self._cond:
                self.messages.append(data.decode("utf-8", "replace"))
                self._cond.notify_all()

    def wait_for(
        self,
        predicate: Callable[[str], bool],
        timeout: float = 20,
        what: str = "a datagram",
        start: int = 0,
    ) -> str:
        """The first message from the ``start``-th on that satisfies ``predicate``."""
        found: list[str] = []

        def seen() -> bool:
            found[:] = [m for m in self.messages[start:] if predicate(m)]
            return bool(found)

        with self._cond:
            if not self._cond.wait_for(seen, timeout):
                raise AssertionError(f"no {what}; got:\n" + "\n".join(self.messages[-20:]))
        return found[0]

    def __len__(self) -> int:
        with self._cond:
            return len(self.messages)

    def count(self, predicate: Callable[[str], bool]) -> int:
        with self._cond:
            return sum(1 for m in self.messages if predicate(m))

    def close(self) -> None:
        self.sock.close()


def notify_fields(message: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in message.splitlines() if "=" in line)


class ServiceDaemon(Mailwright):
    """A daemon started the way systemd starts it (``Type=notify``)."""

    def __init__(
        self, root: Path, config: dict[str, Any] | None = None, notify: str | None = None
    ) -> None:
        super().__init__(root, config)
        self.notify = DatagramSink(notify or root / "notify.sock")
        self.extra_env: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        env = super().env()
        env["NOTIFY_SOCKET"] = str(self.notify.path)
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30) -> ServiceDaemon:
        self.write_config()
        before = len(self.notify)
        self._ready.clear()
        self._exited.clear()
        self.proc = subprocess.Popen(
            self.command("serve"),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        try:
            self.wait_notify(lambda f: f.get("READY") == "1", timeout, after=before)
        except AssertionError:
            self.kill()
            raise
        return self

    def wait_notify(
        self, predicate: Callable[[dict[str, str]], bool], timeout: float = 20, after: int = 0
    ) -> dict[str, str]:
        """The first sd_notify message from the ``after``-th on whose fields match."""
        message = self.notify.wait_for(
            lambda m: predicate(notify_fields(m)), timeout, "sd_notify message", start=after
        )
        return notify_fields(message)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def close(self) -> None:
        self.kill()
        self.notify.close()


# ---- accounts -----------------------------------------------------------------------------------


@contextmanager
def system_user(
    name: str, *, system: bool = False, home: Path | None = None
) -> Iterator[pwd.struct_passwd]:
    """A throwaway account (root only); removed, with its home, afterwards."""
    args = ["useradd", "--shell", "/bin/sh" if not system else "/usr/sbin/nologin"]
    if system:
        args += ["--system", "--no-create-home", "--home-dir", "/nonexistent"]
    else:
        args += ["--create-home", "--home-dir", str(home or Path("/home") / name)]
    subprocess.run([*args, name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)


def process_status(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a dict (``Uid``: real, effective, saved, fs)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(process_status(int(entry.name))["PPid"])
        except (OSError, KeyError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
