"""The host's own addresses, as address literals (``[192.0.2.1]``, ``[IPv6:::1]``).

Mail to ``user@[an address of ours]`` is local, as in Sendmail (class ``w`` holds
every interface address) and Postfix (``inet_interfaces``/``proxy_interfaces``).
``own_literals`` takes the addresses the listeners are bound to: a specific address
stands for itself, a wildcard (``0.0.0.0``, ``::``) for every address of the host's
interfaces (Linux: ``SIOCGIFCONF`` for IPv4, ``/proc/net/if_inet6`` for IPv6; on
failure, only the loopback addresses). Unix-socket listeners have no address.
Trusts the kernel. Reads no settings (the caller passes the listener addresses).
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterable
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SIOCGIFCONF = 0x8912
_IFREQ_SIZE = 40 if struct.calcsize("P") == 8 else 32  # struct ifreq on Linux
_IF_INET6 = Path("/proc/net/if_inet6")
_LOOPBACK: tuple[IPAddress, ...] = (
    ipaddress.IPv4Address("127.0.0.1"),
    ipaddress.IPv6Address("::1"),
)


def literal(ip: IPAddress) -> str:
    """The address literal of ``ip`` as ``core.address.parse_domain`` writes it."""
    if ip.version == 6:
        return f"[IPv6:{ip.compressed}]"
    return f"[{ip}]"


def own_literals(listener_addresses: Iterable[str]) -> list[str]:
    """The address literals that name this host, given where its listeners listen."""
    found: list[IPAddress] = []
    for text in listener_addresses:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue  # a unix: socket
        found.extend(interface_addresses() if ip.is_unspecified else [ip])
    out: list[str] = []
    for ip in found:
        if literal(ip) not in out:
            out.append(literal(ip))
    return out


def interface_addresses() -> list[IPAddress]:
    """Every address of the host's interfaces (the loopback ones at least)."""
    found = [*_ipv4_interfaces(), *_ipv6_interfaces()]
    return found or list(_LOOPBACK)


def _ipv4_interfaces() -> list[IPAddress]:
    size = 64 * _IFREQ_SIZE
    buffer = array.array("B", bytes(size))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("iP", size, buffer.buffer_info()[0])
            answer = fcntl.ioctl(sock.fileno(), _SIOCGIFCONF, request)
    except OSError:
        return []
    length = struct.unpack("iP", answer)[0]
    data = buffer.tobytes()[:length]
    # each ifreq: 16 bytes of name, then a sockaddr_in (family, port, 4 address bytes)
    return [ipaddress.IPv4Address(data[i + 20 : i + 24]) for i in range(0, length, _IFREQ_SIZE)]


def _ipv6_interfaces() -> list[IPAddress]:
    try:
        lines = _IF_INET6.read_text().splitlines()
    except OSError:
        return []
    out: list[IPAddress] = []
    for line in lines:
        fields = line.split()
        if fields and len(fields[0]) == 32:
            out.append(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
    return out
