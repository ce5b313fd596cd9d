"""The syntax of a next hop's host: ``[host]:port``, ``host:port``, ``host``, and domain keys.

Shared by the configuration (``routing.smarthost`` is checked when the settings load),
routing (transport table, smarthost, client credentials) and anything else that names a
host. Pure parsing; trusts nothing in the text; reads no settings.
"""

from __future__ import annotations

import ipaddress

from mailwright.core.address import AddressError, parse_domain


def normalize_domain(domain: str) -> str:
    """Lower case, no trailing dot, international names as A-labels (so both forms match)."""
    domain = domain.strip().rstrip(".").lower()
    if domain.isascii() or domain.startswith("["):
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def smarthost_parts(text: str) -> tuple[str, int | None, bool]:
    """The ``routing.smarthost`` setting → (host or "", port or None, whether to look up MX).

    ``[host]:port``, ``[host]``, ``host:port`` or ``host``; ``:port`` alone or an empty
    host means the recipient domain's MX. ValueError names the problem.
    """
    if not text.strip():
        raise ValueError("smarthost is empty")
    rest = text.strip()
    try:
        if rest.startswith(":"):
            return "", parse_port(rest), True
        return parse_host_port(rest)
    except ValueError as exc:
        raise ValueError(f"smarthost {text!r}: {exc}") from None


def parse_host_port(text: str) -> tuple[str, int | None, bool]:
    """``[host]:port`` / ``host:port`` → (host, port or None, whether to look up MX)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("missing ']' after the host")
        inner, rest = text[1:end], text[end + 1 :]
        if inner[:5].lower() == "ipv6:":
            inner = inner[5:]
            if not is_ip(inner, version=6):
                raise ValueError(f"{inner!r} is not an IPv6 address")
        return parse_host(inner), parse_port(rest), False
    if text.count(":") > 1:
        raise ValueError("an IPv6 address must be in brackets, e.g. [2001:db8::1]:25")
    host, colon, port = text.partition(":")
    host = parse_host(host)
    return host, parse_port(colon + port), not is_ip(host)


def parse_host(text: str) -> str:
    if is_ip(text):
        return ipaddress.ip_address(text).compressed
    try:
        return normalize_domain(parse_domain(text.rstrip("."), utf8=True))
    except AddressError:
        raise ValueError(f"{text!r} is not a host name or IP address") from None


def parse_port(rest: str) -> int | None:
    if not rest:
        return None
    digits = rest[1:] if rest.startswith(":") else ""
    if not digits.isdigit() or not 1 <= int(digits) <= 65535:
        raise ValueError(f"{rest!r}: expected ':port' with a port from 1 to 65535 after the host")
    return int(digits)


def is_ip(text: str, version: int | None = None) -> bool:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or ip.version == version
