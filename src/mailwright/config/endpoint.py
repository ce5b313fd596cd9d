"""Where a filter listens: Sendmail's and Postfix's socket specifications.

Accepted spellings: ``unix:/path``, ``local:/path`` or a bare ``/path``;
``inet:PORT@HOST`` and ``inet6:PORT@HOST`` (Sendmail, libmilter); ``inet:HOST:PORT``
and ``inet:[IPV6]:PORT`` (Postfix); a missing host means loopback. Trusts
nothing: a bad spec raises ``ValueError`` with the reason. Reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    family: str  # "unix", "inet" or "inet6"
    path: str = ""  # unix
    host: str = ""  # inet, inet6
    port: int = 0

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        return f"{self.family}:{self.port}@{self.host}"


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{spec!r}: port must be a number 1..65535, not {text!r}")
    return int(text)


def parse_endpoint(spec: str) -> Endpoint:
    spec = spec.strip()
    kind, colon, rest = spec.partition(":")
    if not colon:
        if spec.startswith("/"):
            return Endpoint("unix", path=spec)
        raise ValueError(f"{spec!r}: use unix:/path, inet:PORT@HOST or inet6:PORT@HOST")
    kind = kind.lower()
    if kind in ("unix", "local"):
        if not rest.startswith("/"):
            raise ValueError(f"{spec!r}: a unix socket needs an absolute path")
        return Endpoint("unix", path=rest)
    if kind not in ("inet", "inet6"):
        raise ValueError(f"{spec!r}: unknown socket type {kind!r} (unix, local, inet, inet6)")
    default_host = "::1" if kind == "inet6" else "127.0.0.1"
    if "@" in rest:  # Sendmail: PORT@HOST
        port, _, host = rest.partition("@")
        host = host.strip("[]") or default_host
    elif rest.startswith("["):  # Postfix: [IPV6]:PORT
        host, _, port = rest[1:].partition("]:")
    elif ":" in rest and kind == "inet":  # Postfix: HOST:PORT
        host, _, port = rest.rpartition(":")
    else:
        port, host = rest, default_host
    if not host:
        raise ValueError(f"{spec!r}: empty host")
    family = "inet6" if kind == "inet6" or ":" in host else "inet"
    return Endpoint(family, host=host, port=_port(port, spec))
