"""``sendmail -bv``: how each address resolves, without sending anything.

Each address is qualified (``SubmitConfig.qualify``), checked for syntax, then resolved
by ``routing.resolution.verify_lines``: one line per final destination, Sendmail style
(``x... deliverable: mailer local, user x``). Imported only when ``-bv`` runs: it loads
the full settings, which ``sendmail``'s default path avoids. Exit 67 (EX_NOUSER) when an
address is invalid or unknown, 78 (EX_CONFIG) for a bad configuration. Settings: the
full ``Settings``, and the ``SubmitConfig`` view for qualifying.
"""

from __future__ import annotations

import sys

from mailwright.config.lite import SubmitConfig
from mailwright.config.loader import ConfigError, load_settings
from mailwright.config.schema import Settings
from mailwright.core.address import AddressError, parse_path
from mailwright.core.sysexits import ExitCode
from mailwright.routing.resolution import verify_lines


def _full_settings(config_path: str | None) -> Settings:
    try:
        return load_settings(config_path)
    except ConfigError as exc:
        print(f"mailwright: {exc}", file=sys.stderr)
        raise SystemExit(ExitCode.CONFIG) from None


def verify(addresses: list[str], config: SubmitConfig, config_path: str | None) -> int:
    """``sendmail -bv``: print how each address resolves; 67 if any does not."""
    settings = _full_settings(config_path)
    failed = False
    for word in addresses:
        address = config.qualify(word.strip())
        problem = _syntax_problem(address)
        if problem:
            print(f"{word}... invalid address: {problem}")
            failed = True
            continue
        try:
            for line in verify_lines(settings, address):
                print(line)
        except LookupError as exc:
            print(f"{address}... {exc or 'User unknown'}")
            failed = True
    return ExitCode.NOUSER if failed else 0


def _syntax_problem(address: str) -> str | None:
    try:
        parse_path(f"<{address}>", utf8=not address.isascii())
    except AddressError as exc:
        return str(exc)
    return None
