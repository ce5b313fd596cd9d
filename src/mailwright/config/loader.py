"""Finding, reading and validating the configuration file.

The path comes from ``--config``, else ``$MAILWRIGHT_CONFIG``, else
``/etc/mailwright/mailwright.toml`` if it exists, else built-in defaults.
Every problem becomes one ``ConfigError`` naming the file, the key and what is
wrong (with the value given, except for ``schema.SECRET_SETTINGS``); callers exit
with EX_CONFIG (78). Never a traceback.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mailwright.config.schema import SECRET_SETTINGS, Settings

DEFAULT_PATH = Path("/etc/mailwright/mailwright.toml")
ENV_VAR = "MAILWRIGHT_CONFIG"


class ConfigError(Exception):
    """A configuration problem, ready to print: ``file: key: problem``."""


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return DEFAULT_PATH if DEFAULT_PATH.exists() else None


def load_settings(explicit: str | os.PathLike[str] | None = None) -> Settings:
    path = config_path(explicit)
    if path is None:
        return Settings()
    data = _read_toml(path)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc)) from None
    return settings.resolve_paths(path.resolve().parent)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
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


def _describe(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif (
            "input" in err
            and err["type"] not in ("missing",)
            and key not in SECRET_SETTINGS
            and not isinstance(err["input"], dict | list)
        ):
            msg = f"{msg} (got {err['input']!r})"
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{path}: {key}: {msg}")
    return "\n".join(lines)
