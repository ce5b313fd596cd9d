"""Trace header fields (RFC 5321 4.4, RFC 3848): ``Received:``, ``Return-Path:``, counting hops.

Pure functions; values from clients (HELO names) are sanitised so a client can
never inject header lines. Reads no settings.
"""

from __future__ import annotations

import email.utils
import re

from mailwright.core.headers import Header, HeaderList

_UNSAFE = re.compile(r"[^\x21-\x7e\u0080-\U0010ffff]")


def _safe(text: str) -> str:
    return _UNSAFE.sub("?", text)[:255]


def _safe_comment(text: str) -> str:
    """Words separated by single spaces, no parentheses: fit for a ``(...)`` comment."""
    return " ".join(_safe(word).replace("(", "?").replace(")", "?") for word in text.split())


def protocol_name(
    *,
    esmtp: bool = True,
    tls: bool = False,
    auth: bool = False,
    utf8: bool = False,
    lmtp: bool = False,
) -> str:
    """The ``with`` keyword of RFC 3848 / RFC 6531: ESMTP, ESMTPS, ESMTPSA, UTF8SMTPS ..."""
    if lmtp:
        base = "LMTP"
    elif utf8:
        base = "UTF8SMTP"
    elif esmtp:
        base = "ESMTP"
    else:
        return "SMTP"
    return base + ("S" if tls else "") + ("A" if auth else "")


def received(
    *,
    helo: str,
    client_name: str,
    client_address: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipient: str | None,
    when: float | None = None,
    tls: str = "",
    local_user: str = "",
) -> Header:
    if client_address:
        client = (
            f"{_safe(client_name)} [{client_address}]" if client_name else f"[{client_address}]"
        )
        source = f"from {_safe(helo) or 'unknown'} ({client})"
    else:
        source = (
            f"from {_safe(local_user) or 'local'}@localhost" if local_user else "from localhost"
        )
    parts = [source]
    if tls:
        parts.append(f"({_safe_comment(tls)})")
    parts.append(f"by {hostname} (Mailwright) with {protocol} id {queue_id}")
    # RFC 5322 3.6.7: the date always follows a ";", with or without a "for" clause
    date = email.utils.formatdate(when, localtime=True)
    if recipient:
        parts.append(f"for <{_safe(recipient)}>; {date}")
    else:
        parts[-1] += ";"
        parts.append(date)
    value = "\r\n\t".join(parts)
    return Header.make("Received", value)


def hop_count(headers: HeaderList) -> int:
    return headers.count_of("Received")


def return_path(sender: str) -> Header:
    return Header.make("Return-Path", f"<{sender}>")
