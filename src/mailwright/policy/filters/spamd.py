"""The spamd protocol (SPAMC/1.5), client side, sans-I/O: build a request, parse the answer.

Request: ``SYMBOLS SPAMC/1.5`` with ``Content-length`` (and ``User``), a blank
line, the message. Answer: ``SPAMD/1.1 0 EX_OK``, headers including
``Spam: True ; 15.2 / 5.0``, a blank line, and for SYMBOLS the names of the
rules that hit, comma-separated. Trusts nothing from spamd: a malformed answer
is a ``SpamdError``. Reads no settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STATUS = re.compile(rb"^SPAMD/(\d+\.\d+) (\d+) (.*)$")
_SPAM = re.compile(r"^(True|False|Yes|No) ; (-?[0-9.]+) / (-?[0-9.]+)$", re.IGNORECASE)


class SpamdError(Exception):
    """spamd answered something we cannot use."""


@dataclass(frozen=True, slots=True)
class Verdict:
    spam: bool
    score: float
    threshold: float
    rules: tuple[str, ...]


def request(message: bytes, user: str | None = None) -> bytes:
    head = f"SYMBOLS SPAMC/1.5\r\nContent-length: {len(message)}\r\n"
    if user:
        head += f"User: {user}\r\n"
    return head.encode("ascii") + b"\r\n" + message


def parse(answer: bytes) -> Verdict:
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = answer.partition(b"\n\n")
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    status = _STATUS.match(lines[0])
    if status is None:
        raise SpamdError(f"not a spamd answer: {lines[0][:80]!r}")
    if status.group(2) != b"0":
        raise SpamdError(f"spamd error {status.group(2).decode()}: {status.group(3)[:80]!r}")
    fields = {}
    for line in lines[1:]:
        name, colon, value = line.decode("ascii", "replace").partition(":")
        if colon:
            fields[name.strip().lower()] = value.strip()
    found = _SPAM.match(fields.get("spam", ""))
    if found is None:
        raise SpamdError(f"no usable Spam: header in {head[:200]!r}")
    rules = tuple(r for r in body.decode("ascii", "replace").strip().split(",") if r)
    return Verdict(
        spam=found.group(1).lower() in ("true", "yes"),
        score=float(found.group(2)),
        threshold=float(found.group(3)),
        rules=rules,
    )
