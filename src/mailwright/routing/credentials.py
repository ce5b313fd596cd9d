"""The relay credentials table: which login the SMTP client uses for a next hop.

Postfix's ``smtp_sasl_password_maps``. One entry per line (``routing.table``
format, ``#`` comments):

    [smtp.isp.example]:587   user:password     a smarthost or transport route with a port
    [smtp.isp.example]       user:password     the same host on any port
    isp.example              user:password     a next hop by name (MX route, or [host] route)

The password is everything after the first ``:`` of the value (it may hold
``:``, ``#`` and inner spaces; leading and trailing spaces are dropped). A next
hop is looked up as Postfix does: with its port, then without, then by its bare
host or domain name (``CredentialsTable.lookup``). No entry: no AUTH.

Trusts nothing in the file: a bad line becomes a ``TableError`` naming file and
line (never quoting the password) and is skipped. The file holds secrets:
``exposure`` says when group or others may read it. Reads no settings itself
(``delivery.auth_table`` is passed in by ``daemon.delivery``). ``watch_credentials``
follows the file (``core.watchedfile``): an edit takes effect within a second.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from mailwright.core.hostport import normalize_domain, parse_host_port
from mailwright.core.watchedfile import WatchedFile
from mailwright.routing.nexthop import NextHop
from mailwright.routing.table import (
    TableError,
    TableLine,
    keyed_entries,
    read_table,
    split_table,
)
from mailwright.smtp.client import Credentials


class CredentialsTable:
    """Normalised key (``[host]:port``, ``[host]``, ``host``) → credentials; callable as the
    SMTP agent's ``credentials`` source."""

    def __init__(self, entries: Mapping[str, Credentials] | None = None) -> None:
        self.entries: dict[str, Credentials] = dict(entries or {})

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, hop: NextHop) -> Credentials | None:
        for key in candidate_keys(hop):
            found = self.entries.get(key)
            if found is not None:
                return found
        return None

    def __call__(self, hop: NextHop) -> Credentials | None:
        return self.lookup(hop)


def candidate_keys(hop: NextHop) -> list[str]:
    """The keys tried for ``hop``, in order: with its port, without, the bare name."""
    if not hop.host:
        return []  # LMTP over a Unix socket, local transports
    host = _host(hop.host)
    name = host if hop.mx else f"[{host}]"
    keys = [f"{name}:{hop.port}"] if hop.port else []
    keys += [name, host]
    return list(dict.fromkeys(keys))


def load_credentials(path: str | os.PathLike[str]) -> tuple[CredentialsTable, list[TableError]]:
    """Read and parse the table file; bad lines are reported and skipped."""
    lines, errors = read_table(path)
    return _build(lines, errors, str(path))


def watch_credentials(path: str | os.PathLike[str]) -> Callable[[NextHop], Credentials | None]:
    """The table at ``path``, followed (``core.watchedfile``): the SMTP agent's
    ``credentials`` source. Bad lines are logged once and skipped; a file that cannot be
    read keeps the table in use."""
    file = WatchedFile(Path(path), load_credentials, CredentialsTable(), name="auth table")
    return lambda hop: file.current().lookup(hop)


def parse_credentials(
    data: bytes, name: str = "<credentials>"
) -> tuple[CredentialsTable, list[TableError]]:
    lines, errors = split_table(data, name)
    return _build(lines, errors, name)


def exposure(path: str | os.PathLike[str]) -> str | None:
    """A warning when group or others may read the file (it holds passwords)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # load_credentials reports an unreadable file
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return (
            f"{path}: readable by group or others (mode {stat.S_IMODE(mode):04o}) "
            f"but it holds passwords: chmod 600 it"
        )
    return None


def _build(
    lines: list[TableLine], errors: list[TableError], name: str
) -> tuple[CredentialsTable, list[TableError]]:
    errors = [_unquoted(e) for e in errors]
    entries = keyed_entries(lines, errors, name, parse_key, parse_login)
    return CredentialsTable(entries), errors


def _unquoted(error: TableError) -> TableError:
    """A line with one word may be a bare ``user:password``: do not quote it back."""
    if "has no value" not in error.problem:
        return error
    problem = "one word only (expected 'key user:password'; the line is not quoted)"
    return TableError(error.path, error.line, problem)


def parse_key(text: str) -> str:
    """``[host]:port``, ``[host]`` or ``host`` in the normal form ``candidate_keys`` uses."""
    try:
        host, port, mx = parse_host_port(text)
    except ValueError as exc:
        raise ValueError(f"key {text!r}: {exc}") from None
    host = _host(host)
    name = host if mx else f"[{host}]"
    return f"{name}:{port}" if port else name


def parse_login(text: str) -> Credentials:
    """``user:password``; the error names the user at most, never the password."""
    username, colon, password = text.partition(":")
    username = username.strip()
    if not colon:
        raise ValueError("value must be user:password (no ':' found)")
    if not username or any(c.isspace() for c in username):
        raise ValueError("value must be user:password (the user name is empty or has spaces)")
    password = password.strip()
    if not password:
        raise ValueError(f"the password of {username!r} is empty")
    if "\0" in password:
        raise ValueError(f"the password of {username!r} contains NUL")
    return Credentials(username, password)


def _host(host: str) -> str:
    host = host.strip().removeprefix("[").removesuffix("]")
    if host[:5].lower() == "ipv6:":
        host = host[5:]
    return normalize_domain(host)
