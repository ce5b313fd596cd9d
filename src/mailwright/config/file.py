"""Finding and reading the configuration file, with the standard library only.

The path comes from ``--config``, else ``$MAILWRIGHT_CONFIG``, else
``/etc/mailwright/mailwright.toml`` if it exists, else none (built-in defaults).
``read_toml`` turns every problem with the file (missing, unreadable, not UTF-8, not
TOML) into one ``ConfigError`` naming the file. Both readers of the file use this:
``config.loader`` (validated with pydantic, for the daemon and the admin commands) and
``config.lite`` (the few keys ``sendmail`` needs, which must start without pydantic), so
nothing here may import more than the standard library. Trusts nothing in the file; reads
no settings.
"""

from __future__ import annotations

import os
from typing import Any

DEFAULT_PATH = "/etc/mailwright/mailwright.toml"
ENV_VAR = "MAILWRIGHT_CONFIG"


class ConfigError(Exception):
    """A configuration problem, ready to print: ``file: key: problem``."""


def config_path(explicit: str | os.PathLike[str] | None = None) -> str | None:
    """The configuration file to read, or None for built-in defaults."""
    if explicit:
        return os.fspath(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    return DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    import tomllib  # here: sendmail without a configuration file never needs it

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
