"""Delivery to a program (``|command`` in aliases and ``.forward``), Sendmail's prog mailer.

The command runs as ``/bin/sh -c COMMAND`` in its own session, as the controlling
user when we are root (``delivery.privileged``), with the home directory as working
directory (``/`` if that fails). The message (with ``Return-Path:`` and
``Delivered-To:`` first, LF line ends, no From_ line) is its standard input; its
standard output and error are captured (the first ``OUTPUT_LIMIT`` octets).

Environment, like Sendmail's prog mailer: ``AGENT=sendmail`` and ``TZ`` when set,
plus ``PATH=/usr/bin:/bin``, ``SHELL=/bin/sh``, ``HOME``, ``USER``, ``LOGNAME`` and
Postfix's informative ``SENDER``, ``RECIPIENT`` and ``ORIGINAL_RECIPIENT``; nothing
else of the daemon's environment.

The exit status is read as ``<sysexits.h>``: 0 delivered; 75 (EX_TEMPFAIL) try
again later; 67 (EX_NOUSER) ``5.1.1 User unknown``; any other status, or death by
a signal, fails with the command's output in the report. A command that runs
longer than the timeout is killed (its whole process group) and the delivery is
tried again later. A delivery given up by its caller (cancelled: the daemon stopping
after its grace period) kills its command. ``kill_all`` ends every command still
running (the privileged helper, when the daemon it served is gone). Reads no settings
(the caller passes the timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO

from mailwright.core import process
from mailwright.core.delivery import Outcome
from mailwright.core.reply import Reply
from mailwright.core.sysexits import ExitCode
from mailwright.delivery.privileged import Identity, spawn_ids
from mailwright.delivery.workers import PROGRAMS

OUTPUT_LIMIT = 4096
_STATUS = {
    ExitCode.USAGE: "5.5.4",
    ExitCode.DATAERR: "5.6.0",
    ExitCode.NOINPUT: "5.3.0",
    ExitCode.NOUSER: "5.1.1",
    ExitCode.NOHOST: "5.1.2",
    ExitCode.UNAVAILABLE: "5.3.0",
    ExitCode.SOFTWARE: "5.3.0",
    ExitCode.OSERR: "5.3.0",
    ExitCode.OSFILE: "5.3.0",
    ExitCode.CANTCREAT: "5.3.0",
    ExitCode.IOERR: "5.3.0",
    ExitCode.PROTOCOL: "5.5.0",
    ExitCode.NOPERM: "5.7.1",
    ExitCode.CONFIG: "5.3.5",
}


_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()


def kill_all() -> int:
    """Kill every command started here that still runs (with its process group)."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        _kill(proc)
    return len(procs)


@dataclass(frozen=True, slots=True)
class PipeResult:
    outcome: Outcome
    reply: Reply
    output: str = ""


def environment(
    who: Identity | None, sender: str, recipient: str, original: str | None
) -> dict[str, str]:
    """The command's environment (see the module docstring)."""
    import pwd

    if who is not None:
        name, home = who.name, who.home
    else:
        pw = pwd.getpwuid(os.geteuid())
        name, home = pw.pw_name, pw.pw_dir
    env = {
        "AGENT": "sendmail",
        "PATH": "/usr/bin:/bin",
        "SHELL": "/bin/sh",
        "HOME": home or "/",
        "USER": name,
        "LOGNAME": name,
        "SENDER": sender,
        "RECIPIENT": recipient,
    }
    if original:
        env["ORIGINAL_RECIPIENT"] = original
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    return env


async def run(
    command: str,
    pieces: Callable[[], Iterator[bytes]],
    *,
    who: Identity | None,
    env: Mapping[str, str],
    timeout: float,
) -> PipeResult:
    """Run ``command`` with the message on its input; see the module docstring.

    The child is started with ``subprocess`` in a worker thread (``workers.PROGRAMS``,
    not the event loop's pool), not through the event loop: uvloop's subprocess support
    cannot change the child's user.
    """
    handle = _Handle()
    try:
        return await PROGRAMS.run(_run, command, pieces, who, dict(env), timeout, handle)
    except asyncio.CancelledError:
        handle.cancel()  # nobody waits for the result: the command must not run on
        raise


class _Handle:
    """The command of one delivery, to kill when its caller gives up (shutdown)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._cancelled = False

    def started(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._proc = proc
            cancelled = self._cancelled
        if cancelled:
            _kill(proc)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            proc = self._proc
        if proc is not None:
            _kill(proc)


def _run(
    command: str,
    pieces: Callable[[], Iterator[bytes]],
    who: Identity | None,
    env: dict[str, str],
    timeout: float,
    handle: _Handle,
) -> PipeResult:
    proc = _start(command, who, env)
    assert proc.stdin is not None and proc.stdout is not None
    with _running_lock:
        _running.add(proc)
    handle.started(proc)
    try:
        return _wait(command, proc, pieces, timeout)
    finally:
        with _running_lock:
            _running.discard(proc)


def _wait(
    command: str,
    proc: subprocess.Popen[bytes],
    pieces: Callable[[], Iterator[bytes]],
    timeout: float,
) -> PipeResult:
    assert proc.stdout is not None
    output = bytearray()
    unread: list[BaseException] = []  # the message could not be read (set by the writer)
    reader = threading.Thread(target=_read_output, args=(proc.stdout, output), daemon=True)
    writer = threading.Thread(target=_feed, args=(proc, pieces, unread), daemon=True)
    reader.start()
    writer.start()
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        proc.wait()
        text = f'"|{command}" killed after {timeout:g} seconds'
        return PipeResult(Outcome.DEFERRED, Reply.of(451, "4.3.0", text))
    finally:
        writer.join(5)
        reader.join(5)
    if unread:
        text = f'"|{command}" interrupted: the message could not be read: {unread[0]}'
        return PipeResult(Outcome.DEFERRED, Reply.of(451, "4.3.0", text))
    return _result(command, code, bytes(output))


def _start(command: str, who: Identity | None, env: dict[str, str]) -> subprocess.Popen[bytes]:
    home = env.get("HOME", "/")
    uid, gid, groups = spawn_ids(who)
    for cwd in dict.fromkeys((home, "/")):
        try:
            with process.spawn_anywhere():  # not on the one CPU of its worker
                return subprocess.Popen(
                    ["/bin/sh", "-c", command],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,  # its own process group: a timeout kills it all
                    user=uid,
                    group=gid,
                    extra_groups=groups,
                )
        except (FileNotFoundError, PermissionError, NotADirectoryError):
            if cwd == "/":
                raise
    raise AssertionError("unreachable")


def _feed(
    proc: subprocess.Popen[bytes],
    pieces: Callable[[], Iterator[bytes]],
    unread: list[BaseException],
) -> None:
    stdin = proc.stdin
    assert stdin is not None
    try:
        for piece in pieces():
            stdin.write(piece)
        stdin.close()
    except (BrokenPipeError, ConnectionResetError, ValueError):
        pass  # the command stopped reading (or was killed); its exit status decides
    except Exception as exc:
        # the message ended early (its source failed): the command must not see the end
        # of its input and take a part for the whole
        unread.append(exc)
        _kill(proc)
    finally:
        with contextlib.suppress(OSError, BrokenPipeError):
            stdin.close()


def _read_output(stream: IO[bytes], kept: bytearray) -> None:
    while chunk := os.read(stream.fileno(), 1 << 16):
        if len(kept) < OUTPUT_LIMIT:
            kept += chunk[: OUTPUT_LIMIT - len(kept)]
    stream.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _result(command: str, code: int, raw: bytes) -> PipeResult:
    output = raw.decode("utf-8", "replace").strip()
    lines = [line.strip() for line in output.splitlines() if line.strip()][:10]
    shown = f'"|{command}"'
    if code == 0:
        return PipeResult(Outcome.DELIVERED, Reply.of(250, "2.0.0", f"{shown} delivered"), output)
    if code == ExitCode.TEMPFAIL:
        reply = Reply.of(451, "4.3.0", f"{shown} failed temporarily (exit 75)", *lines)
        return PipeResult(Outcome.DEFERRED, reply, output)
    if code == ExitCode.NOUSER:
        return PipeResult(Outcome.FAILED, Reply.of(550, "5.1.1", "User unknown", *lines), output)
    if code < 0:
        name = (
            signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        )
        reply = Reply.of(554, "5.3.0", f"{shown} died with signal {name}", *lines)
        return PipeResult(Outcome.FAILED, reply, output)
    status = _STATUS.get(code, "5.3.0")  # type: ignore[call-overload]
    reply = Reply.of(554, status, f"{shown} exited with status {code}", *lines)
    return PipeResult(Outcome.FAILED, reply, output)
