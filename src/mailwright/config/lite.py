"""The few settings the ``sendmail`` command line needs, read with the standard library only.

``sendmail`` runs for every cron job and every PHP ``mail()``, so it must start fast and
cannot load pydantic. It finds and reads the same TOML file as the daemon (``config.file``)
and takes only these keys: ``hostname``, ``queue.directory``, ``queue.backend``,
``local.socket``,
``local.maildrop``, ``local.domain``, ``local.trusted_users``,
``server.max_message_size``, ``server.max_hop_count``, ``routing.local_domains``.
Defaults and the resolution of relative paths are those of ``config.schema`` (a unit test
keeps the two equal). Everything else in the file is left to ``mailwright config check``;
a wrong type for one of these keys is a ``LiteConfigError`` naming the file and the key.

Trusts the file as far as its types; reads no other file.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mailwright.config.file import ConfigError, config_path, read_toml

if TYPE_CHECKING:
    from mailwright.config.schema import Settings

DEFAULT_QUEUE_DIR = "/var/spool/mailwright"
DEFAULT_MAX_MESSAGE_SIZE = 50 * 1024 * 1024
DEFAULT_MAX_HOP_COUNT = 50


LiteConfigError = ConfigError  # the name sendmail catches


class SubmitConfig:
    """What ``sendmail`` needs to know; plain attributes, no validation framework."""

    __slots__ = (
        "domain",
        "hostname",
        "local_domains",
        "maildrop_dir",
        "max_hop_count",
        "max_message_size",
        "path",
        "queue_backend",
        "queue_dir",
        "socket_path",
        "trusted_users",
    )

    def __init__(
        self,
        *,
        path: str | None,
        hostname: str,
        queue_dir: str,
        socket_path: str,
        maildrop_dir: str,
        domain: str,
        trusted_users: tuple[str, ...] = (),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_hop_count: int = DEFAULT_MAX_HOP_COUNT,
        local_domains: tuple[str, ...] = (),
        queue_backend: str = "sqlite",
    ) -> None:
        self.path = path
        self.hostname = hostname
        self.queue_dir = queue_dir
        self.queue_backend = queue_backend  # "postgresql": mailq needs the full settings
        self.socket_path = socket_path
        self.maildrop_dir = maildrop_dir
        self.domain = domain
        self.trusted_users = trusted_users
        self.max_message_size = max_message_size
        self.max_hop_count = max_hop_count
        self.local_domains = local_domains or (hostname.lower(), "localhost")

    @classmethod
    def from_settings(cls, settings: Settings, path: str | None = None) -> SubmitConfig:
        """The same view, taken from fully validated settings (the admin CLI has them)."""
        return cls(
            path=path,
            hostname=settings.hostname,
            queue_dir=str(settings.queue.directory),
            socket_path=str(settings.local_socket),
            maildrop_dir=str(settings.maildrop_dir),
            domain=settings.local_domain,
            trusted_users=tuple(settings.local.trusted_users),
            max_message_size=settings.server.max_message_size,
            max_hop_count=settings.server.max_hop_count,
            local_domains=tuple(settings.named_local_domains),
            queue_backend=settings.queue.backend,
        )

    def qualify(self, address: str) -> str:
        """``user`` becomes ``user@<local domain>``; anything with an ``@`` is kept."""
        return address if "@" in address else f"{address}@{self.domain}"


def load(explicit: str | None = None) -> SubmitConfig:
    path = config_path(explicit)
    data = read_toml(path) if path is not None else {}
    base = os.path.dirname(os.path.realpath(path)) if path is not None else os.getcwd()
    reader = _Reader(path or "(defaults)", data)
    hostname = reader.text("hostname", "") or _default_hostname()
    if any(c.isspace() for c in hostname):
        raise LiteConfigError(f"{reader.path}: hostname: must be a host name without spaces")
    queue_dir = os.path.join(base, reader.text("queue.directory", DEFAULT_QUEUE_DIR))
    socket_path = reader.text("local.socket", "")
    maildrop = reader.text("local.maildrop", "")
    domain = reader.text("local.domain", "").lower() or hostname.lower()
    return SubmitConfig(
        path=path,
        hostname=hostname,
        queue_dir=queue_dir,
        socket_path=os.path.join(base, socket_path)
        if socket_path
        else os.path.join(queue_dir, "submit.sock"),
        maildrop_dir=os.path.join(base, maildrop)
        if maildrop
        else os.path.join(queue_dir, "maildrop"),
        domain=domain,
        trusted_users=tuple(reader.texts("local.trusted_users")),
        max_message_size=reader.number("server.max_message_size", DEFAULT_MAX_MESSAGE_SIZE, 0),
        max_hop_count=reader.number("server.max_hop_count", DEFAULT_MAX_HOP_COUNT, 1),
        local_domains=tuple(reader.texts("routing.local_domains")),
        queue_backend=reader.text("queue.backend", "sqlite"),
    )


def _default_hostname() -> str:
    import socket

    return socket.gethostname() or "localhost"


class _Reader:
    """Typed look-ups of dotted keys, each failure naming the file and the key."""

    def __init__(self, path: str, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def _get(self, key: str) -> object:
        node: object = self.data
        for part in key.split("."):
            if not isinstance(node, dict):
                raise LiteConfigError(f"{self.path}: {key}: expected a table above it")
            if part not in node:
                return None
            node = node[part]
        return node

    def _bad(self, key: str, what: str, value: object) -> LiteConfigError:
        return LiteConfigError(f"{self.path}: {key}: {what} (got {value!r})")

    def text(self, key: str, default: str) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._bad(key, "must be a string", value)
        return value

    def texts(self, key: str) -> list[str]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "must be a list of strings", value)
        return list(value)

    def number(self, key: str, default: int, minimum: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(key, f"must be a whole number >= {minimum}", value)
        return value
