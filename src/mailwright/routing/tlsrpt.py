"""SMTP TLS Reporting (RFC 8460): what a delivery attempt's TLS came to, counted cheaply.

Sans-I/O part, used by the SMTP agent and the daily reports (``routing.tlsrpt_report``):

- ``ReportedPolicy``: the policy a session was tried under (RFC 8460 4.4 ``policy``):
  ``sts`` (an MTA-STS policy: its lines and MX patterns), ``tlsa`` (DANE: the MX host's
  usable TLSA records) or ``no-policy-found``; the policy domain is the recipient domain
  of the next hop (an MX route) in every case.
- ``Result``: ``success`` or one of the result types of RFC 8460 4.3.
- ``TlsRecorder``: counts sessions in memory per (UTC day, policy, result, sending IP,
  receiving MX host, receiving IP, the peer's EHLO name, the failure's reason); the
  daemon takes the counts (``take``) and adds them to a store (``routing.tlsrpt_store``)
  every ``tls_reporting.flush_interval`` seconds, so the delivery path never writes a
  row. A success is counted without the addresses (the report gives only totals for
  them), which keeps the rows few. The EHLO name and the reason come from the peer:
  ``detail_text`` makes them printable ASCII of at most ``MAX_DETAIL`` characters.
- ``parse_record``: the ``_smtp._tls.<domain>`` TXT record (``v=TLSRPTv1; rua=...``),
  its ``mailto:`` and ``https:`` addresses.

Trusts nothing from DNS. Reads no settings.
"""

from __future__ import annotations

import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from mailwright.routing.mtasts import StsPolicy


class PolicyType(StrEnum):
    STS = "sts"
    TLSA = "tlsa"
    NONE = "no-policy-found"


class Result(StrEnum):
    """``success``, or a result type of RFC 8460 4.3 (a failed session)."""

    SUCCESS = "success"
    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"


@dataclass(frozen=True, slots=True)
class ReportedPolicy:
    """A policy as a report names it; ``strings`` and ``mx_hosts`` are empty for none."""

    type: PolicyType
    domain: str
    strings: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()

    @classmethod
    def sts(cls, domain: str, policy: StsPolicy | None) -> ReportedPolicy:
        """An MTA-STS policy (its text as RFC 8460 4.4 wants it), or an STS domain whose
        policy could not be had (``policy`` None: no strings)."""
        if policy is None:
            return cls(PolicyType.STS, domain)
        lines = ["version: STSv1", f"mode: {policy.mode.value}"]
        lines += [f"mx: {pattern}" for pattern in policy.mx]
        lines.append(f"max_age: {policy.max_age}")
        return cls(PolicyType.STS, domain, tuple(lines), policy.mx)

    @classmethod
    def tlsa(cls, domain: str, mx_host: str, records: Iterable[object]) -> ReportedPolicy:
        return cls(PolicyType.TLSA, domain, tuple(str(r) for r in records), (mx_host,))

    @classmethod
    def none(cls, domain: str) -> ReportedPolicy:
        return cls(PolicyType.NONE, domain)


@dataclass(frozen=True, slots=True)
class Tally:
    """The key of one counter: a UTC day, a policy, a result and, for a failure, where."""

    day: str  # YYYY-MM-DD, UTC
    policy: ReportedPolicy
    result: Result
    sending_ip: str = ""
    receiving_mx: str = ""
    receiving_ip: str = ""
    receiving_helo: str = ""  # the name in the peer's EHLO/HELO reply (receiving-mx-helo)
    reason: str = ""  # what failed, in a few words (failure-reason-code)


MAX_DETAIL = 100  # characters of an EHLO name or a reason kept


def detail_text(text: str) -> str:
    """A value from the peer (or its error) fit for the JSON report and a database row:
    printable ASCII only (anything else becomes ``?``), at most ``MAX_DETAIL`` characters."""
    cut = text[:MAX_DETAIL]
    return "".join(c if " " <= c <= "~" else "?" for c in cut)


def utc_day(when: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(when))


class TlsRecorder:
    """Session counts of one process, in memory until ``take``n (by the daemon's flush)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: Counter[Tally] = Counter()

    def record(
        self,
        policy: ReportedPolicy,
        result: Result,
        *,
        sending_ip: str = "",
        receiving_mx: str = "",
        receiving_ip: str = "",
        receiving_helo: str = "",
        reason: str = "",
    ) -> None:
        day = utc_day(self._clock())
        if result is Result.SUCCESS:  # a report gives successes as a total only
            self._counts[Tally(day, policy, result)] += 1
            return
        mx = receiving_mx.lower().rstrip(".")
        helo = detail_text(receiving_helo.lower().rstrip("."))
        why = detail_text(reason)
        self._counts[Tally(day, policy, result, sending_ip, mx, receiving_ip, helo, why)] += 1

    def take(self) -> dict[Tally, int]:
        """The counts since the last ``take``, now forgotten here."""
        counts, self._counts = dict(self._counts), Counter()
        return counts

    def give_back(self, counts: dict[Tally, int]) -> None:
        """Counts a store could not take: kept for the next flush."""
        self._counts.update(counts)

    def __len__(self) -> int:
        return len(self._counts)


# ------------------------------------------------------------------ the TXT record


class RecordError(Exception):
    """A ``_smtp._tls`` record that does not make a usable TLSRPT policy."""


@dataclass(frozen=True, slots=True)
class ReportAddresses:
    """Where a domain wants its reports: ``mailto:`` addresses and ``https:`` URLs."""

    mailto: tuple[str, ...]
    https: tuple[str, ...]


def parse_record(texts: Iterable[str]) -> ReportAddresses | None:
    """The report addresses from a domain's ``_smtp._tls`` TXT strings (RFC 8460 3).

    None when no record starts with ``v=TLSRPTv1``; more than one, a malformed one, or
    one without a usable ``rua`` raises ``RecordError`` (the domain gets no report)."""
    records = [t for t in texts if t.startswith("v=TLSRPTv1")]
    if not records:
        return None
    if len(records) > 1:
        raise RecordError(f"{len(records)} TXT records start with v=TLSRPTv1")
    fields = [f.strip(" \t") for f in records[0].split(";")]
    if fields and fields[-1] == "":
        fields.pop()  # a final ";" is allowed
    if not fields or fields[0] != "v=TLSRPTv1":
        raise RecordError(f"malformed TLSRPT record {records[0]!r}")
    rua: list[str] | None = None
    for item in fields[1:]:
        name, equals, value = item.partition("=")
        if not equals or not name or any(c.isspace() for c in name):
            raise RecordError(f"malformed TLSRPT record {records[0]!r}")
        if name == "rua" and rua is None:
            rua = [uri.strip(" \t") for uri in value.split(",")]
    if not rua or not all(rua):
        raise RecordError(f"TLSRPT record without rua: {records[0]!r}")
    mailto, https = [], []
    for uri in rua:
        scheme, _, rest = uri.partition(":")
        if scheme.lower() == "mailto" and "@" in rest:
            mailto.append(urllib.parse.unquote(rest.split("?")[0]))
        elif scheme.lower() == "https" and rest.startswith("//"):
            https.append(uri)
    if not mailto and not https:
        raise RecordError(f"TLSRPT record names no mailto: or https: address: {records[0]!r}")
    return ReportAddresses(tuple(mailto), tuple(https))
