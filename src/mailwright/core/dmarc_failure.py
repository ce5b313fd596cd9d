"""DMARC failure reports (RFC 7489 7.3, in the format of RFC 6591): when one is due, and the
mail that carries it.

``auth_failure`` reads the record's ``fo=`` options against a message's outcome and says
what failed, as the report's ``Auth-Failure`` (``dmarc``, ``signature`` or ``spf``), or
None when no report is due:

- ``0`` (the default): the message failed DMARC (no aligned pass at all);
- ``1``: any mechanism gave something other than an aligned pass (DKIM or SPF);
- ``d``: a DKIM signature failed its verification, aligned or not;
- ``s``: SPF failed, aligned or not.

``FailureReport.mail`` is the message: ``multipart/report; report-type=feedback-report``
with a short text, the ``message/feedback-report`` part (``Feedback-Type: auth-failure``,
the source address, the envelope sender, the reported domain, our
``Authentication-Results``, ``Identity-Alignment``, ``Delivery-Result``, the failed
signature's domain and selector) and the original message's header section only (the
body is never sent: a failure report goes to the domain owner, not to a recipient).

Sans-I/O and pure: trusts the outcome it is given (``core.dmarc``) and copies the
original header section as received. Reads no settings.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate

from mailwright import __version__
from mailwright.core.dmarc import Evaluation, Identifier, Result
from mailwright.core.headers import HeaderList

_OPTIONS = frozenset({"0", "1", "d", "s"})
_DKIM_FAILED = frozenset({"fail", "permerror"})


def failure_options(fo: str) -> frozenset[str]:
    """The known options of ``fo=`` (colon-separated); none known is the default ``0``."""
    chosen = frozenset(o.strip().lower() for o in fo.split(":")) & _OPTIONS
    return chosen or frozenset({"0"})


def auth_failure(
    evaluation: Evaluation, spf: Identifier | None, dkim: Sequence[Identifier]
) -> str | None:
    """What failed, when the policy domain asks for a report about it (``ruf=`` and
    ``fo=``); None when no report is due (no ``ruf``, no policy, a temporary error)."""
    record = evaluation.record
    if record is None or not record.ruf or evaluation.result not in (Result.PASS, Result.FAIL):
        return None
    options = failure_options(record.fo)
    if "0" in options and evaluation.result is Result.FAIL:
        return "dmarc"
    if "1" in options and not (evaluation.spf_aligned and evaluation.dkim_aligned):
        return "dmarc"
    if "d" in options and any(d.result in _DKIM_FAILED for d in dkim):
        return "signature"
    if "s" in options and spf is not None and spf.result == "fail":
        return "spf"
    return None


def _printable(text: str) -> str:
    """A client's ENVID (xtext-decoded) as one field line: controls become spaces."""
    return "".join(c if c >= " " and c != "\x7f" else " " for c in text)


@dataclass(frozen=True, slots=True)
class FailureReport:
    """One message's failure, as the policy domain's ``ruf`` destinations get it."""

    evaluation: Evaluation
    auth_failure: str  # what ``auth_failure`` said
    queue_id: str
    source_ip: str
    envelope_from: str  # "" for the null path
    arrival: float
    headers: HeaderList  # the original's, as received (our own fields added)
    auth_results: str  # our Authentication-Results value: "host; spf=...; dmarc=..."
    delivery_result: str  # RFC 6591: delivered, policy (held), reject
    dkim: tuple[Identifier, ...] = ()
    envelope_id: str | None = None  # ENVID of MAIL FROM (RFC 3461), if the client gave one

    @property
    def header_bytes(self) -> bytes:
        return self.headers.encode()

    def subject(self) -> str:
        domain = self.evaluation.author_domain
        return f"DMARC failure report for {domain} from {self.source_ip}"

    def feedback(self, reporting_mta: str) -> list[str]:
        """The ``message/feedback-report`` fields (RFC 6591 3, RFC 7489 7.3.1)."""
        ev = self.evaluation
        aligned = [name for name, ok in (("dkim", ev.dkim_aligned), ("spf", ev.spf_aligned)) if ok]
        fields = [
            "Feedback-Type: auth-failure",
            f"User-Agent: Mailwright/{__version__}",
            "Version: 1",
            *(
                [f"Original-Envelope-Id: {_printable(self.envelope_id)}"]
                if self.envelope_id
                else []
            ),
            f"Original-Mail-From: <{self.envelope_from}>",
            f"Arrival-Date: {formatdate(self.arrival, localtime=False)}",
            f"Reporting-MTA: dns; {reporting_mta}",
            f"Source-IP: {self.source_ip}",
            f"Reported-Domain: {ev.author_domain}",
            "Authentication-Results: " + self.auth_results.replace("; ", ";\r\n\t"),
            f"Auth-Failure: {self.auth_failure}",
            f"Identity-Alignment: {', '.join(aligned) or 'none'}",
            f"Delivery-Result: {self.delivery_result}",
        ]
        failed = [d for d in self.dkim if d.result in _DKIM_FAILED]
        if self.auth_failure == "signature" and failed:
            domain, selector = _printable(failed[0].domain), _printable(failed[0].selector)
            fields += [f"DKIM-Domain: {domain}", f"DKIM-Selector: {selector}"]
        return fields

    def mail(
        self, reporting_mta: str, sender: str, to: str, now: float
    ) -> tuple[list[tuple[str, str]], bytes]:
        """The header fields and the body (CRLF lines; 8-bit when the original's header
        section or our results are UTF-8) of the report to ``to``."""
        boundary = "=_dmarcf_" + secrets.token_hex(12)
        original = self.header_bytes
        headers_type = "text/rfc822-headers" if original.isascii() else (
            "message/global-headers"  # RFC 6533: UTF-8 header fields
        )  # fmt: skip
        ev = self.evaluation
        fields = [
            ("From", sender),
            ("To", to),
            ("Subject", self.subject()),
            ("Date", formatdate(now, localtime=False)),
            ("Message-ID", f"<{self.queue_id}.{secrets.token_hex(4)}@{reporting_mta}>"),
            ("Auto-Submitted", "auto-generated"),
            ("MIME-Version", "1.0"),
            (
                "Content-Type",
                f'multipart/report; report-type=feedback-report; boundary="{boundary}"',
            ),
        ]
        text = [
            f"This is a DMARC failure report (RFC 7489 7.3) from {reporting_mta} about a",
            f"message from {self.source_ip} whose From domain is {ev.author_domain}: DMARC",
            f"{ev.result} under the policy of {ev.policy_domain} ({self.auth_failure} failed).",
            "Its header section is attached; its body is not.",
        ]
        head = "\r\n".join(
            [
                "This is a MIME-encapsulated message.",
                "",
                f"--{boundary}",
                "Content-Type: text/plain; charset=us-ascii",
                "",
                *text,
                "",
                f"--{boundary}",
                "Content-Type: message/feedback-report",
                "",
                *self.feedback(reporting_mta),
                "",
                f"--{boundary}",
                f"Content-Type: {headers_type}",
                "",
                "",
            ]
        ).encode("utf-8")  # an SMTPUTF8 sender in the results: 8-bit (the caller looks)
        tail = f"\r\n--{boundary}--\r\n".encode("ascii")
        return fields, head + original + tail
