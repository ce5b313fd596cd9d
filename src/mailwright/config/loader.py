"""Finding, reading and validating the configuration file.

The file is found and read by ``config.file`` (no file: built-in defaults).
Every problem becomes one ``ConfigError`` naming the file, the key and what is
wrong (with the value given, except for ``schema.SECRET_SETTINGS``); callers exit
with EX_CONFIG (78). Never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from mailwright.config import file
from mailwright.config.file import ConfigError
from mailwright.config.schema import SECRET_SETTINGS, Settings

__all__ = ["ConfigError", "config_path", "load_settings"]


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    found = file.config_path(explicit)
    return Path(found) if found is not None else None


def load_settings(explicit: str | os.PathLike[str] | None = None) -> Settings:
    path = config_path(explicit)
    if path is None:
        return Settings()
    data = file.read_toml(path)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc)) from None
    return settings.resolve_paths(path.resolve().parent)


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
