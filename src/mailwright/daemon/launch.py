"""Launching the daemon as a service: logging, detaching, binding, the helper, giving up root.

One sequence for ``mailwright serve`` (foreground, systemd ``Type=notify``),
``mailwright serve --daemon`` and ``sendmail -bd`` / ``-bD``:

1. logging from ``[log]`` (``observability.logtargets``; syslog or the log file when
   detached); SIGUSR1 reopens the log file from here on;
2. the queue's master lock (``daemon.queuelock``), before any socket is touched: a second
   daemon on the same queue exits 75 (EX_TEMPFAIL) naming the running pid;
3. ``--daemon``: fork; the parent waits until the child is ready (exit 0) or has
   failed (its exit status), the child starts a new session with stdio on /dev/null
   (and keeps the master lock, which it inherited);
4. the pid file, locked (``daemon.pidfile``): a second daemon is refused;
5. as root with ``service.user``: the queue directory is given to that account;
6. every listener and the local submission socket are bound (``daemon.bindings``);
7. as root with ``service.user``: every module is imported (``daemon.preload``), the
   privileged helper is forked (``privhelper``; it closes its copy of the master lock)
   and the daemon gives up root for good (``daemon.privileges``);
8. the daemon runs (``daemon.app``) and says ``READY=1`` when it accepts mail.

Started as root with ``service.user = "root"`` the daemon stays root (as Sendmail does) and
says so in the log; started as anyone else nothing changes identity (``make run``).
Returns an exit code (sysexits); errors are one log line, never a traceback.
Settings: all of them, through the components.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from mailwright.config.loader import ConfigError
from mailwright.config.schema import Settings
from mailwright.core.sysexits import ExitCode
from mailwright.daemon.app import run_daemon
from mailwright.daemon.bindings import Bindings, bind_all
from mailwright.daemon.notify import Notifier
from mailwright.daemon.pidfile import AlreadyRunningError, PidFile
from mailwright.daemon.preload import preload
from mailwright.daemon.privileges import ServiceAccount, drop, hand_over_queue, service_account
from mailwright.daemon.queuelock import QueueBusyError, QueueLock
from mailwright.daemon.runtime import Runtime
from mailwright.daemon.supervisor import supervise
from mailwright.observability import logtargets
from mailwright.privhelper.client import HelperClient, reap

log = logging.getLogger("mailwright.daemon")


@dataclass(frozen=True, slots=True)
class LaunchOptions:
    config_path: Path | None = None  # the file SIGHUP reads again
    log_level: str | None = None  # --log-level (outranks [log] level)
    detach: bool = False  # --daemon, sendmail -bd
    pid_file: Path | None = None  # written when set (always when detached)
    notes: tuple[str, ...] = ()  # logged once logging is set up (sendmail -q30m with -bd)


def launch(settings: Settings, options: LaunchOptions) -> int:
    """Run the daemon until it stops; the exit code (in a detaching parent: the child's)."""
    try:
        logtargets.configure(settings.log, options.log_level, detached=options.detach)
    except ConfigError as exc:
        sys.stderr.write(f"mailwright: {exc}\n")
        return ExitCode.CONFIG
    # until the daemon's loop handles it (SIGUSR1 kills by default): reopen at the next line
    signal.signal(signal.SIGUSR1, _reopen_log_file)
    lock = QueueLock(settings.queue.directory)
    try:
        settings.queue.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock.acquire()
    except QueueBusyError as exc:
        _refuse(str(exc), options.detach)
        return ExitCode.TEMPFAIL
    except OSError as exc:
        _refuse(f"cannot lock the queue: {exc}", options.detach)
        return ExitCode.OSERR
    try:
        if options.detach:
            code = _detach()
            if code is not None:
                return code  # the parent: the daemon lives on in the child, with the lock
            lock.write(os.getpid())
        for note in options.notes:
            log.info("%s", note)
        notifier = Notifier.from_environment(_parent_fd)
        try:
            return _start(settings, options, notifier, lock)
        finally:
            notifier.close()
    finally:
        lock.release()


def _reopen_log_file(signum: int, frame: FrameType | None) -> None:
    handler = logtargets.current_file()
    if handler is not None:
        handler.request_reopen()


def _refuse(message: str, detach: bool) -> None:
    """Log why the daemon does not start; a detaching one also says it on its terminal
    (its log goes to syslog or a file the operator may not be watching)."""
    log.error("%s", message)
    if detach:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"mailwright: {message}\n")


def _start(settings: Settings, options: LaunchOptions, notifier: Notifier, lock: QueueLock) -> int:
    pid_file = PidFile(options.pid_file or settings.pid_file) if _wants_pid_file(options) else None
    bindings: Bindings | None = None
    helpers: list[HelperClient] = []
    workers = settings.server.workers
    try:
        account = service_account(settings.service)
        if account is None and os.geteuid() == 0:
            log.warning(
                'running as root (service.user = "root"): SMTP sessions run as root too;'
                " name an unprivileged account instead (docs/service.md)"
            )
        if pid_file is not None:
            pid_file.acquire()
        if account is not None:
            hand_over_queue(settings, account)
        else:
            settings.queue.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        bindings = bind_all(settings)
        if account is not None:
            preload()  # the installation may be out of the service account's reach
            logtargets.hand_over(account.uid, account.gid)  # reopened without root later
            inherited = [s.fileno() for s in bindings.sockets()]
            for _ in range(workers):  # one per worker: each has its own channel
                helpers.append(
                    start_helper(
                        settings,
                        options.config_path,
                        account,
                        inherited + [h.sock.fileno() for h in helpers],
                        (pid_file, lock),
                    )
                )
            drop(account)
            log.info(
                "running as %s (uid %d, gid %d); privileged helper pid %s",
                account.name,
                account.uid,
                account.gid,
                ", ".join(str(h.pid) for h in helpers),
            )
    except ConfigError as exc:
        log.error("%s", exc)
        _abandon(bindings, helpers, pid_file)
        return ExitCode.CONFIG
    except AlreadyRunningError as exc:
        log.error("%s", exc)
        return ExitCode.TEMPFAIL
    except OSError as exc:
        log.error("cannot start: %s", exc)
        _abandon(bindings, helpers, pid_file)
        return ExitCode.OSERR
    runtime = Runtime(
        config_path=options.config_path,
        bindings=bindings,
        helper=helpers[0] if helpers else None,
        notifier=notifier,
        log_level=options.log_level,
        detached=options.detach,
    )
    code: int = ExitCode.OK
    try:
        if workers > 1:
            slots: list[HelperClient | None] = [*helpers] or [None] * workers
            code = supervise(settings, runtime, slots)
        else:
            code = run_daemon(settings, runtime)
    except ConfigError as exc:  # e.g. a certificate the daemon cannot read
        log.error("%s", exc)
        return ExitCode.CONFIG
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return ExitCode.OSERR
    except KeyboardInterrupt:
        pass
    finally:
        if pid_file is not None:
            pid_file.release()
    return code


def _wants_pid_file(options: LaunchOptions) -> bool:
    return options.detach or options.pid_file is not None


def _abandon(bindings: Bindings | None, helpers: list[HelperClient], pid: PidFile | None) -> None:
    if bindings is not None:
        bindings.close()
    for helper in helpers:
        helper.sock.close()
    for helper in helpers:
        reap(helper.pid, 5)
    if pid is not None:
        pid.release()


# ---- the privileged helper -------------------------------------------------------------------


def start_helper(
    settings: Settings,
    config_path: Path | None,
    account: ServiceAccount,
    inherited: list[int],
    locks: tuple[PidFile | None, QueueLock | None] = (None, None),
) -> HelperClient:
    """Fork the helper (it stays root); the daemon's end of the channel and its pid."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the helper
        code = 70
        try:
            ours.close()
            for fd in inherited:  # the listeners: the helper never accepts anything
                with contextlib.suppress(OSError):
                    os.close(fd)
            for held in locks:  # the daemon's alone: they must go when the daemon goes
                if held is not None:
                    held.forget()
            if _parent_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(_parent_fd)  # a waiting parent must see the daemon, not us
            logtargets.watch()  # the daemon cannot signal us: follow a rotated file alone
            from mailwright.privhelper import server

            code = server.run(theirs, settings, config_path, account.ids)
        finally:
            os._exit(code)
    theirs.close()
    return HelperClient(ours, pid)


# ---- detaching ---------------------------------------------------------------------------------

_parent_fd: int | None = None  # in a detached child: the pipe its parent waits on


def _detach() -> int | None:
    """Fork. The parent waits and returns its exit code; the child returns None."""
    global _parent_fd
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_end)
        return _wait_for_child(pid, read_end)
    os.close(read_end)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    _parent_fd = write_end
    return None


def _wait_for_child(pid: int, read_end: int) -> int:
    """0 once the child says it is ready; its exit status if it dies first."""
    data = b""
    try:
        while chunk := os.read(read_end, 64):
            data += chunk
            if b"ready\n" in data:
                return ExitCode.OK
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code > 0 else ExitCode.OSERR
