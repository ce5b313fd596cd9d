"""Start a real Mailwright daemon as a subprocess for end-to-end tests.

The daemon gets its own configuration and queue under a temporary directory and
listens on free loopback ports; readiness is the "mailwright ready" log line
(no sleeping). Tests talk to it over real sockets.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"


# Every test daemon has these aliases unless its test names an alias file: unknown local
# users are refused at RCPT, and tests address "user", "u" and "ü" as local recipients.
TEST_ALIASES = "postmaster: root\nuser: root\nu: root\nü: root\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_key(key: str) -> str:
    """A bare key when TOML allows one, else quoted (``"b.test"`` is not two tables)."""
    if key and all(c.isalnum() or c in "_-" for c in key):
        return key
    return toml_value(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def render_toml(data: dict[str, Any], prefix: str = "") -> str:
    lines = []
    tables = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines.append(f"\n[[{prefix}{key}]]")
                lines.append(render_toml(item, f"{prefix}{key}."))
        else:
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for key, value in tables:
        lines.append(f"\n[{prefix}{toml_key(key)}]")
        lines.append(render_toml(value, f"{prefix}{toml_key(key)}."))
    return "\n".join(lines)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# test daemons are one process unless a test asks for workers; MW_TEST_WORKERS=N runs
# every test daemon with N worker processes (the whole suite against the workers)
WORKERS = {"workers": int(os.environ.get("MW_TEST_WORKERS", "1"))}


class Mailwright:
    """One daemon process with its own directory."""

    def __init__(self, root: Path, config: dict[str, Any] | None = None) -> None:
        self.root = root
        self.port = free_port()
        base: dict[str, Any] = {
            "hostname": "mx.test",
            "listeners": [{"address": "127.0.0.1", "port": self.port, "kind": "smtp"}],
            "queue": {"directory": str(root / "queue")},
            # tests look at what was queued; the ones about delivery switch to "background"
            "delivery": {"mode": "queue"},
            # hermetic: no PTR query to the machine's name server (tests that want one
            # turn it on with a local DNS server in [dns])
            "server": {"reverse_dns": False, **WORKERS},
            # tests run as root: stay root unless a test names a service account
            "service": {"user": "root"},
        }
        self.config = deep_merge(base, config or {})
        self.config_path = root / "mailwright.toml"
        self.proc: subprocess.Popen[bytes] | None = None
        # a process group of its own (supervisor and workers), for kill_group()
        self.own_group = False
        self.log: list[str] = []
        self._ready = threading.Event()
        self._exited = threading.Event()
        self._cond = threading.Condition()
        self._pump_thread: threading.Thread | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
        env["MAILWRIGHT_CONFIG"] = str(self.config_path)
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mailwright", "--config", str(self.config_path), *args]

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        routing = self.config.setdefault("routing", {})
        if "alias_file" not in routing:  # hermetic: not the machine's /etc/aliases
            routing["alias_file"] = str(self.root / "aliases")
            (self.root / "aliases").write_text(TEST_ALIASES)
        self.config_path.write_text(render_toml(self.config) + "\n")

    def start(self, timeout: float = 30) -> Mailwright:
        self.write_config()
        if self._pump_thread is not None:
            # the previous (killed) process's pump may still be draining its log: let it
            # finish before clearing the events it sets at the end
            self._pump_thread.join(timeout)
        self._ready.clear()
        self._exited.clear()
        self.proc = subprocess.Popen(
            self.command("serve", "--log-level", "DEBUG"),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=self.own_group,
        )
        self._pump_thread = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._pump_thread.start()
        if not self._ready.wait(timeout) or self._exited.is_set():
            self.kill()
            raise RuntimeError("daemon did not start:\n" + "\n".join(self.log[-30:]))
        return self

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.log.append(line)
                self._cond.notify_all()
            if "mailwright ready" in line:
                self._ready.set()
        with self._cond:
            self._exited.set()
            self._cond.notify_all()
        self._ready.set()

    def wait_log(self, text: str, timeout: float = 20, occurrence: int = 1) -> str:
        """Wait until the ``occurrence``-th log line containing ``text`` appears."""
        found: list[str] = []

        def seen() -> bool:
            found[:] = [line for line in self.log if text in line]
            return len(found) >= occurrence or self._exited.is_set()

        with self._cond:
            self._cond.wait_for(seen, timeout)
        if len(found) >= occurrence:
            return found[occurrence - 1]
        raise AssertionError(f"no log line with {text!r}:\n" + "\n".join(self.log[-30:]))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._exited.wait(5)
        self.proc = None
        return rc

    def wait(self, timeout: float = 30) -> int:
        """Wait for the daemon to exit on its own (after a signal sent by the test)."""
        assert self.proc is not None
        rc = self.proc.wait(timeout)
        self._exited.wait(5)
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill_group(self) -> None:
        """SIGKILL to the whole daemon at once, supervisor and workers (``own_group``)."""
        assert self.proc is not None and self.own_group
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._exited.wait(5)
        self.proc = None

    def cli(
        self, *args: str, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.command(*args), env=self.env(), input=input, capture_output=True, timeout=timeout
        )


@contextmanager
def running(root: Path, config: dict[str, Any] | None = None) -> Iterator[Mailwright]:
    mw = Mailwright(root, config)
    mw.start()
    try:
        yield mw
    finally:
        mw.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    """Wait for a condition another process brings about (polled with back-off)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
