"""``sendmail -bd`` / ``-bD``: run the daemon from the Sendmail command line.

``-bD`` stays in the foreground and logs to stderr (for systemd and tests). ``-bd``
detaches as Sendmail does: the child starts a new session, logs to syslog (facility
mail) and records its pid in ``service.pid_file`` (default ``<queue
dir>/mailwright.pid``); the parent exits 0 once the daemon is ready. Both are
``mailwright serve`` (``daemon.launch``), one implementation. ``-q30m`` given with
either is accepted: the queue manager schedules retries itself, so the interval is only
noted in the log. Settings: all of them (``config.loader``).
"""

from __future__ import annotations

import sys

from mailwright.cli.invocation import Invocation

CONFIG = 78


def run_daemon_mode(inv: Invocation) -> int:
    from mailwright.config.loader import ConfigError, config_path, load_settings
    from mailwright.daemon.launch import LaunchOptions, launch

    try:
        settings = load_settings(inv.config)
    except ConfigError as exc:
        sys.stderr.write(f"mailwright: {exc}\n")
        return CONFIG
    path = config_path(inv.config)
    detach = inv.mode != "D"
    options = LaunchOptions(
        config_path=path.resolve() if path is not None else None,
        log_level="DEBUG" if inv.verbose else None,
        detach=detach,
        pid_file=settings.pid_file if detach else None,
        notes=_interval_note(inv),
    )
    return launch(settings, options)


def _interval_note(inv: Invocation) -> tuple[str, ...]:
    run = inv.queue_run
    if run is None or run.interval is None:
        return ()
    return (
        f"-q{int(run.interval)}s: the queue manager schedules retries itself; "
        "the interval is not used",
    )
