"""RFC 8460 aggregate reports: the JSON of a day, its mail message and its HTTPS POST.

``build_report`` turns one policy domain's counts of a UTC day (``routing.tlsrpt.Tally``)
into the JSON object of RFC 8460 4.4: ``organization-name``, ``date-range``,
``contact-info``, ``report-id``, and one ``policies`` entry per policy the sessions
were tried under, with its ``summary`` (total successful and failed sessions) and
``failure-details`` (per result type, sending IP, receiving MX host and IP; with the MX
host's EHLO name, ``receiving-mx-helo``, and a ``failure-reason-code`` when known).
``compressed`` gzips it; ``file_name`` is the name of RFC 8460 5.1
(``submitter!policy-domain!begin!end.json.gz``).

``report_message`` makes the mail of RFC 8460 5.3, a ``queue.store.NewMessage``: a
``multipart/report; report-type="tlsrpt"`` with a short text and the gzip as
``application/tlsrpt+gzip`` (base64), headers ``TLS-Report-Domain`` and
``TLS-Report-Submitter``, NOTIFY=NEVER (a report that fails is not reported on),
``TLS-Required: No`` (RFC 8689: the SMTP agent delivers it despite the very TLS
failures it may report, as RFC 8460 5.3 asks) and, given a ``core.dkim.Signer``, the
DKIM signature of the reporting domain that RFC 8460 5.3 requires (no ``l=``).
``post_report`` POSTs the gzip to an ``https:`` address (RFC 8460 5.4, ``Content-Type:
application/tlsrpt+gzip``) over our own asyncio TLS stream, the server's certificate
verified for its name, the host found through our DNS resolver; any 2xx is success.

Trusts nothing from the report server. Reads no settings: the caller passes them
(``tls_reporting.*``, ``hostname``, ``delivery.tls_ca_file``).
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import gzip
import json
import secrets
import ssl
import time
import urllib.parse
from collections import defaultdict
from typing import Any, Protocol

from mailwright.core.address import parse_mailbox
from mailwright.core.dkim import Signer, body_hash
from mailwright.core.envelope import Envelope, MailParams, Notify, Recipient
from mailwright.core.headers import Header, HeaderList
from mailwright.dsn.body import ReportBody
from mailwright.dsn.fieldtext import date
from mailwright.queue.store import NewMessage, Origin
from mailwright.routing.mtasts import HttpResponse, PolicyError
from mailwright.routing.resolver import DnsPermanentError, DnsTemporaryError, MailHost
from mailwright.routing.tlsrpt import ReportedPolicy, Result, Tally

MEDIA_TYPE = "application/tlsrpt+gzip"
PROTOCOL = "tlsrpt"  # the origin protocol of a report message (the mail log's proto=)


def day_range(day: str, end: float | None = None) -> tuple[int, int]:
    """Seconds since the epoch of the day's start and end (or ``end``, for a day cut
    short by a forced run)."""
    start = calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    stop = start + 86400 if end is None else min(start + 86400, int(end))
    return start, stop


def _stamp(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _policy(policy: ReportedPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {"policy-type": policy.type.value}
    if policy.strings:
        out["policy-string"] = list(policy.strings)
    out["policy-domain"] = policy.domain
    if policy.mx_hosts:
        out["mx-host"] = list(policy.mx_hosts)
    return out


def _failure(tally: Tally, count: int) -> dict[str, Any]:
    detail: dict[str, Any] = {"result-type": tally.result.value}
    if tally.sending_ip:
        detail["sending-mta-ip"] = tally.sending_ip
    if tally.receiving_mx:
        detail["receiving-mx-hostname"] = tally.receiving_mx
    if tally.receiving_ip:
        detail["receiving-ip"] = tally.receiving_ip
    if tally.receiving_helo:
        detail["receiving-mx-helo"] = tally.receiving_helo
    if tally.reason:
        detail["failure-reason-code"] = tally.reason
    detail["failed-session-count"] = count
    return detail


def build_report(
    domain: str,
    day: str,
    counts: dict[Tally, int],
    *,
    organization: str,
    contact: str,
    submitter: str,
    end: float | None = None,
) -> dict[str, Any]:
    """The report of ``domain`` for ``day`` from the counts (those of other domains and
    days are left out); ``submitter`` is our host name, part of the report id."""
    start, stop = day_range(day, end)
    by_policy: dict[ReportedPolicy, list[tuple[Tally, int]]] = defaultdict(list)
    for tally, count in counts.items():
        if tally.policy.domain == domain and tally.day == day:
            by_policy[tally.policy].append((tally, count))
    policies = []
    for policy in sorted(by_policy, key=lambda p: (p.type.value, p.strings, p.mx_hosts)):
        tallies = by_policy[policy]
        good = sum(n for t, n in tallies if t.result is Result.SUCCESS)
        failures = sorted(
            ((t, n) for t, n in tallies if t.result is not Result.SUCCESS),
            key=lambda item: (item[0].result.value, item[0].receiving_mx, item[0].receiving_ip,
                              item[0].sending_ip, item[0].receiving_helo, item[0].reason),
        )  # fmt: skip
        entry: dict[str, Any] = {
            "policy": _policy(policy),
            "summary": {
                "total-successful-session-count": good,
                "total-failure-session-count": sum(n for _, n in failures),
            },
        }
        if failures:
            entry["failure-details"] = [_failure(t, n) for t, n in failures]
        policies.append(entry)
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": _stamp(start), "end-datetime": _stamp(stop)},
        "contact-info": contact,
        "report-id": f"{_stamp(start)}_{domain}_{submitter}",
        "policies": policies,
    }


def domains(counts: dict[Tally, int], day: str) -> list[str]:
    return sorted({t.policy.domain for t in counts if t.day == day})


def compressed(report: dict[str, Any]) -> bytes:
    data = json.dumps(report, indent=1, sort_keys=False).encode()
    return gzip.compress(data, mtime=0)


def file_name(submitter: str, domain: str, report: dict[str, Any]) -> str:
    """RFC 8460 5.1: ``sender!policy-domain!begin-timestamp!end-timestamp.json.gz``."""
    dates = report["date-range"]
    begin = calendar.timegm(time.strptime(dates["start-datetime"], "%Y-%m-%dT%H:%M:%SZ"))
    end = calendar.timegm(time.strptime(dates["end-datetime"], "%Y-%m-%dT%H:%M:%SZ"))
    return f"{submitter}!{domain}!{begin}!{end}.json.gz"


def _base64_lines(data: bytes) -> bytes:
    text = base64.b64encode(data)
    return b"".join(text[i : i + 76] + b"\r\n" for i in range(0, len(text), 76))


def report_message(
    *,
    queue_id: str,
    sender: str,
    recipient: str,
    submitter: str,
    domain: str,
    report: dict[str, Any],
    data: bytes,
    now: float,
    signer: Signer | None = None,
) -> NewMessage:
    """The mail of RFC 8460 5.3 carrying ``data`` (the gzip of ``report``) to
    ``recipient``, DKIM-signed by ``signer`` when given; raises ``AddressError`` for
    an address that is not one."""
    to, frm = parse_mailbox(recipient), parse_mailbox(sender)
    boundary = f"=_tlsrpt/{secrets.token_hex(12)}"
    name = file_name(submitter, domain, report)
    text = (
        f"This is an aggregate TLS report (RFC 8460) from {submitter}\r\n"
        f"for {domain}, report id {report['report-id']}.\r\n"
    )
    body = b"".join(
        [
            b"This is a multipart message in MIME format.\r\n\r\n",
            f"--{boundary}\r\n".encode(),
            b'Content-Type: text/plain; charset="us-ascii"\r\n',
            b"Content-Transfer-Encoding: 7bit\r\n\r\n",
            text.encode(),
            f"\r\n--{boundary}\r\n".encode(),
            f"Content-Type: {MEDIA_TYPE}\r\n".encode(),
            b"Content-Transfer-Encoding: base64\r\n",
            f'Content-Disposition: attachment;\r\n filename="{name}"\r\n\r\n'.encode(),
            _base64_lines(data),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    subject = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report['report-id']}>"
    headers = HeaderList(
        [
            Header.make("From", str(frm)),
            Header.make("To", str(to)),
            Header.make("Subject", subject),
            Header.make("Date", date(now)),
            Header.make("Message-ID", f"<{queue_id}.tlsrpt@{submitter}>"),
            Header.make("Auto-Submitted", "auto-generated"),
            Header.make("TLS-Report-Domain", domain),
            Header.make("TLS-Report-Submitter", submitter),
            Header.make("TLS-Required", "No"),
            Header.make("MIME-Version", "1.0"),
            Header.make(
                "Content-Type",
                f'multipart/report; report-type="tlsrpt";\r\n boundary="{boundary}"',
            ),
        ]
    )
    if signer is not None:
        bh = body_hash([body], signer.body_canon)
        headers.insert(0, signer.sign(headers, bh, int(now)))
    return NewMessage(
        queue_id=queue_id,
        envelope=Envelope(
            sender=frm,
            params=MailParams(),
            recipients=[Recipient(to, notify=frozenset({Notify.NEVER}))],
        ),
        headers=headers,
        body=ReportBody(body, lambda: [], b"", 0),
        received_at=now,
        origin=Origin(protocol=PROTOCOL, client_name="localhost"),
    )


# ------------------------------------------------------------------ HTTPS


class HostResolver(Protocol):
    async def host_addresses(self, host: str) -> list[MailHost]: ...


class PostError(Exception):
    """The report server could not be reached or did not take the report."""


async def post_report(
    url: str,
    data: bytes,
    *,
    resolver: HostResolver,
    context: ssl.SSLContext,
    timeout: float = 60.0,
) -> int:
    """POST ``data`` to ``url``; the HTTP status (2xx) or ``PostError``."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "https" or not host:
        raise PostError(f"{url}: not an https: URL")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    port = parts.port or 443
    error: Exception = PostError(f"{host} has no address")
    try:
        async with asyncio.timeout(timeout):
            for address in await resolver.host_addresses(host):
                try:
                    return await _post(host, address.address, port, path, data, context)
                except (OSError, ssl.SSLError, PolicyError, PostError) as exc:
                    error = exc
    except TimeoutError:
        error = PostError(f"timed out after {timeout:g}s")
    except (DnsTemporaryError, DnsPermanentError) as exc:
        error = exc
    raise PostError(f"{url}: {error}")


async def _post(
    host: str, address: str, port: int, path: str, data: bytes, context: ssl.SSLContext
) -> int:
    reader, writer = await asyncio.open_connection(address, port, ssl=context, server_hostname=host)
    try:
        authority = host if port == 443 else f"{host}:{port}"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: Mailwright\r\n"
            f"Content-Type: {MEDIA_TYPE}\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode("ascii") + data)
        await writer.drain()
        received = b""
        while True:
            chunk = await reader.read(16384)
            response = HttpResponse.parse(received + chunk, eof=not chunk)
            if response is not None:
                break
            received += chunk
    finally:
        writer.close()
    if not 200 <= response.status < 300:
        raise PostError(f"HTTP status {response.status}")
    return response.status
