"""Where the command line meets routing: ``newaliases`` / ``-bi`` and ``-bv``.

The work is done by ``mailwright.routing.aliases``, imported here only when one of these
modes runs (it loads the full settings, which ``sendmail``'s default path avoids). It offers

- ``build_aliases(settings: Settings) -> str | list[str]``: rebuild the alias database
  atomically and return the problems found, then Sendmail's summary line, e.g.
  ``/etc/aliases: 12 aliases, longest 40 bytes, 300 bytes total``; ``ValueError`` (no
  alias file configured: exit 65) or ``OSError`` (exit 72) when it cannot;
- ``resolve_address(settings: Settings, address: str) -> list[str]``: how one address
  resolves, one ``-bv`` line per final destination (``x... deliverable: mailer local,
  user x``); ``LookupError`` for an unknown local user (exit 67).

Should the module be missing (a stripped-down install), ``-bi`` says aliases are not
supported (exit 69, EX_UNAVAILABLE) and ``-bv`` only checks syntax and tells local from
remote by the local domains. Settings: the full ``Settings`` (a configuration error is
exit 78), else the ``SubmitConfig`` view.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from mailwright.config.lite import SubmitConfig

ALIASES_MODULE = "mailwright.routing.aliases"
UNAVAILABLE, NOUSER, CONFIG, DATAERR, OSFILE = 69, 67, 78, 65, 72


def aliases_module() -> ModuleType | None:
    if importlib.util.find_spec(ALIASES_MODULE) is None:
        return None
    return importlib.import_module(ALIASES_MODULE)


def _full_settings(config_path: str | None) -> object:
    from mailwright.config.loader import ConfigError, load_settings

    try:
        return load_settings(config_path)
    except ConfigError as exc:
        print(f"mailwright: {exc}", file=sys.stderr)
        raise SystemExit(CONFIG) from None


def rebuild_aliases(config_path: str | None) -> int:
    module = aliases_module()
    if module is None or not hasattr(module, "build_aliases"):
        print("mailwright: aliases are not supported yet", file=sys.stderr)
        return UNAVAILABLE
    settings = _full_settings(config_path)
    try:
        summary = module.build_aliases(settings)
    except ValueError as exc:
        print(f"mailwright: {exc}", file=sys.stderr)
        return DATAERR
    except OSError as exc:
        print(f"mailwright: {exc}", file=sys.stderr)
        return OSFILE
    for line in [summary] if isinstance(summary, str) else summary:
        print(line)
    return 0


def verify(addresses: list[str], config: SubmitConfig, config_path: str | None) -> int:
    """``sendmail -bv``: print how each address resolves; 67 if any does not."""
    module = aliases_module()
    resolve = getattr(module, "resolve_address", None) if module else None
    settings = _full_settings(config_path) if resolve else None
    failed = False
    for word in addresses:
        address = config.qualify(word.strip())
        problem = _syntax_problem(address)
        if problem:
            print(f"{word}... invalid address: {problem}")
            failed = True
            continue
        if resolve is None:
            print(describe(address, config))
            continue
        try:
            for line in resolve(settings, address):
                print(line)
        except LookupError as exc:
            print(f"{address}... {exc or 'User unknown'}")
            failed = True
    return NOUSER if failed else 0


def describe(address: str, config: SubmitConfig) -> str:
    """The routing-free answer: local domain or not."""
    local, _, domain = address.rpartition("@")
    if domain.lower() in {d.lower() for d in config.local_domains} | {config.domain}:
        return f"{address}... deliverable: mailer local, user {local}"
    return f"{address}... deliverable: mailer esmtp, host {domain}, user {address}"


def _syntax_problem(address: str) -> str | None:
    from mailwright.core.address import AddressError, parse_path

    try:
        parse_path(f"<{address}>", utf8=not address.isascii())
    except AddressError as exc:
        return str(exc)
    return None
