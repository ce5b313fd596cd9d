"""SIGHUP: the configuration read again and put in place as a whole, or refused as a whole.

``load`` reads and validates the file and compiles the alias file if its table was not
built from it as it is now (another path, size or mtime). The daemon then builds a new
generation of parts from the settings (``daemon.generation``, the same builder as at
start-up) before anything is replaced. Any problem (a TOML or schema error, a plugin
option, a certificate that does not load, a transport table with a bad line) refuses the
reload: it is logged and the old generation stays in use. Sessions already running keep
the generation they started with, new sessions and new deliveries get the new one.

Some settings cannot change in a running daemon: the listeners (bound as root), the
queue directory, the local socket and maildrop, ``service.user``/``group``/``pid_file``,
the delivery mode and the delivery concurrency limits (the scheduler's loop and
semaphores are made once). ``config.reloadable.effective_settings`` keeps their old
values and names them, so the log says that a restart is needed. Settings: all of them.
"""

from __future__ import annotations

from pathlib import Path

from mailwright.config.loader import ConfigError, load_settings
from mailwright.config.reloadable import effective_settings
from mailwright.config.schema import Settings
from mailwright.routing.aliases import prepare_aliases


class ReloadError(ConfigError):
    """The new configuration cannot be used; the old one stays."""


def load(config_path: Path | None, current: Settings) -> tuple[Settings, list[str]]:
    """Read and validate the file (blocking: run it in a thread); ``ReloadError``."""
    try:
        fresh = load_settings(config_path)
    except ConfigError as exc:
        raise ReloadError(str(exc)) from None
    settings, kept = effective_settings(current, fresh)
    refresh_aliases(settings)
    return settings, kept


def refresh_aliases(settings: Settings) -> None:
    """``newaliases`` on SIGHUP: compile the alias file when its table was not built from
    it as it is now (another file, size or mtime: ``routing.aliases.out_of_date``)."""
    prepare_aliases(settings)
