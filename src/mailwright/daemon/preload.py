"""Everything the daemon may import later, imported before it gives up root.

Once it runs as the service account the daemon may no longer be able to read its own
installation: an interpreter or virtualenv under a private directory (``/root``), a
hardened unit that hides paths. Python imports lazily in many places (a codec on first
use, dnspython's record types on first lookup, ``concurrent.futures.thread`` with the
first worker thread, our own function-level imports), so the launcher imports all of
it while it still can. A module that fails to import here is skipped: it would fail
the same way later, in the code path that needs it. Reads no settings.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

log = logging.getLogger("mailwright.daemon")

# packages whose every submodule is imported
PACKAGES = ("mailwright", "encodings", "dns", "concurrent.futures", "email", "json", "asyncio")
# single modules imported lazily by the standard library or by us
MODULES = (
    "grp",
    "pwd",
    "fcntl",
    "ctypes",
    "uuid",
    "ipaddress",
    "zoneinfo",
    "logging.handlers",
    "sqlite3",
    "ssl",
    "uvloop",
    "bcrypt",
    "pydantic",
    "pydantic_core",
    "pydantic.deprecated.decorator",
)
SKIP = ("__main__", "mailwright.smtp.tests", "encodings.mbcs", "encodings.oem", "encodings.cp65001")


def preload() -> int:
    """Import every module the daemon may need; returns how many are loaded."""
    loaded = 0
    for name in MODULES:
        loaded += _load(name)
    for package in PACKAGES:
        loaded += _load(package)
        try:
            module = importlib.import_module(package)
        except Exception:
            continue
        path = getattr(module, "__path__", None)
        if path is None:
            continue
        for info in pkgutil.walk_packages(path, prefix=package + ".", onerror=lambda _: None):
            if not any(part in info.name for part in SKIP):
                loaded += _load(info.name)
    return loaded


def _load(name: str) -> int:
    try:
        importlib.import_module(name)
    except Exception as exc:  # an optional module this system lacks
        log.debug("preload: %s not loaded: %s", name, exc)
        return 0
    return 1
