"""Trace header fields (RFC 5321 4.4, RFC 3848): ``Received:``, ``Return-Path:``, counting hops.

A message from the network gets ``Received: from HELO (NAME [IP]) by HOST (Mailwright)
with PROTOCOL id QID for <RCPT>; DATE``; one submitted by a local user Sendmail's form,
``Received: (from USER@localhost) by HOST (Mailwright) id QID; DATE`` (no ``from``
clause, as there was no client host, and no ``with``: the protocol is ``local``).
Pure functions (but for a cache of the last second's date text); values from clients
(HELO names) are sanitised so a client can never inject header lines. Reads no settings.
"""

from __future__ import annotations

import email.utils
import re
import time

from mailwright.core.headers import Header, HeaderList

LOCAL_PROTOCOL = "local"  # a submission by a local user (sendmail, the submit socket)
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
    local: bool = False,
) -> str:
    """The ``with`` keyword of RFC 3848 / RFC 6531: ESMTP, ESMTPS, ESMTPSA, UTF8SMTPS ...;
    ``local`` for a local submission (recorded in the queue, never written after ``with``)."""
    if local:
        return LOCAL_PROTOCOL
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
    else:  # Sendmail's form for local mail: who submitted, in a comment
        user = _safe_comment(local_user)
        source = f"(from {user}@localhost)" if user else "(from localhost)"
    parts = [source]
    if tls:
        parts.append(f"({_safe_comment(tls)})")
    with_clause = "" if protocol == LOCAL_PROTOCOL else f" with {protocol}"
    parts.append(f"by {hostname} (Mailwright){with_clause} id {queue_id}")
    # RFC 5322 3.6.7: the date always follows a ";", with or without a "for" clause
    date = _date(time.time() if when is None else when)
    if recipient:
        parts.append(f"for <{_safe(recipient)}>; {date}")
    else:
        parts[-1] += ";"
        parts.append(date)
    value = "\r\n\t".join(parts)
    return Header.make("Received", value)


_last_date: tuple[int, str] = (-1, "")  # (second, its date-time): one format per second


def _date(when: float) -> str:
    """RFC 5322 date-time of ``when`` in local time; the format is the same all second,
    and ``formatdate`` costs more than the rest of the header together."""
    global _last_date
    second = int(when)
    if _last_date[0] != second:
        _last_date = (second, email.utils.formatdate(second, localtime=True))
    return _last_date[1]


def hop_count(headers: HeaderList) -> int:
    return headers.count_of("Received")


def return_path(sender: str) -> Header:
    return Header.make("Return-Path", f"<{sender}>")
