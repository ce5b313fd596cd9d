"""``sendmail -bd`` / ``-bD``: run the daemon from the Sendmail command line.

``-bD`` stays in the foreground and logs to stderr (for systemd and tests). ``-bd``
detaches as Sendmail does: it forks, the parent exits 0, the child starts a new session,
logs to syslog (facility mail) and records its pid in ``<queue dir>/mailwright.pid``.
``-q30m`` given with either is accepted: the queue manager schedules retries itself, so
the interval is only noted in the log. Settings: all of them (``config.loader``).
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys

from mailwright.cli.invocation import Invocation

OK, OSERR, CONFIG = 0, 71, 78
LOG_FORMAT = "%(asctime)s mailwright[%(process)d]: %(message)s"

log = logging.getLogger("mailwright.daemon")


def run_daemon_mode(inv: Invocation) -> int:
    from mailwright.config.loader import ConfigError, load_settings

    try:
        settings = load_settings(inv.config)
    except ConfigError as exc:
        sys.stderr.write(f"mailwright: {exc}\n")
        return CONFIG
    if inv.mode == "D":
        logging.basicConfig(
            level=logging.DEBUG if inv.verbose else logging.INFO,
            stream=sys.stderr,
            format=LOG_FORMAT,
        )
        _note_interval(inv)
        return _serve(settings)
    if os.fork() > 0:
        return OK  # the parent: the daemon lives on in the child
    os.setsid()
    _detach_stdio()
    _log_to_syslog()
    _note_interval(inv)
    pid_file = settings.queue.directory / "mailwright.pid"
    try:
        settings.queue.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        pid_file.write_text(f"{os.getpid()}\n")
        code = _serve(settings)
    except Exception:
        log.exception("daemon failed")
        code = OSERR
    finally:
        with contextlib.suppress(OSError):
            pid_file.unlink()
    os._exit(code)


def _serve(settings: object) -> int:
    from mailwright.config.schema import Settings
    from mailwright.daemon.app import run_daemon

    assert isinstance(settings, Settings)
    try:
        run_daemon(settings)
    except OSError as exc:
        log.error("cannot start: %s", exc)
        sys.stderr.write(f"mailwright: cannot start: {exc}\n")
        return OSERR
    except KeyboardInterrupt:
        pass
    return OK


def _note_interval(inv: Invocation) -> None:
    run = inv.queue_run
    if run is not None and run.interval is not None:
        log.info(
            "-q%ds: the queue manager schedules retries itself; the interval is not used",
            int(run.interval),
        )


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _log_to_syslog() -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if os.path.exists("/dev/log"):
        handler: logging.Handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_MAIL
        )
        handler.setFormatter(logging.Formatter("mailwright[%(process)d]: %(message)s"))
    else:
        handler = logging.NullHandler()
    root.addHandler(handler)
