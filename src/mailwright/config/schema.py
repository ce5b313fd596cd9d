"""The settings of Mailwright, validated with pydantic; the single reference for every key.

Every setting has a default that serves on a fresh machine. Unknown keys are
errors (a typo must not silently fall back to a default). Sections are added
here by each subsystem; durations are in seconds, sizes in octets.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from mailwright.config.dnsbl import parse_reply, parse_zone
from mailwright.config.endpoint import parse_endpoint
from mailwright.core.arcfields import DEFAULT_HEADERS as ARC_DEFAULT_HEADERS
from mailwright.core.arcfields import UNSIGNABLE as ARC_UNSIGNABLE
from mailwright.core.hostaddresses import own_literals
from mailwright.core.hostport import smarthost_parts


def cidr_list(value: list[str]) -> list[str]:
    """``value`` if every entry is an IP network in CIDR form (a ValueError names one)."""
    for entry in value:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP network in CIDR form") from None
    return value


def authserv_id(value: str) -> str:
    """``value`` if it can be an authserv-id of Authentication-Results (a host name)."""
    if value and not re.fullmatch(r"[A-Za-z0-9._-]+", value):
        raise ValueError(f"{value!r} is not an authserv-id (a host name)")
    return value


def address_list(value: list[str]) -> list[str]:
    """``value`` if every entry is an IP address (a ValueError names one)."""
    for entry in value:
        try:
            ipaddress.ip_address(entry)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address") from None
    return value


CidrList = Annotated[list[str], AfterValidator(cidr_list)]  # IP networks in CIDR form
AddressList = Annotated[list[str], AfterValidator(address_list)]  # IP addresses
AuthservId = Annotated[str, AfterValidator(authserv_id)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> object:
    """Seconds as a number, or Sendmail-style text: "90", "30m", "4h", "1h30m", "5d"."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if not text:
        raise ValueError("empty duration")
    try:
        return float(text)
    except ValueError:
        pass
    total, number = 0.0, ""
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in _UNITS and number:
            total += float(number) * _UNITS[ch]
            number = ""
        else:
            raise ValueError(f"not a duration: {value!r} (use seconds or e.g. 30m, 4h, 5d)")
    if number:
        raise ValueError(f"not a duration: {value!r} (a number needs a unit: s, m, h, d, w)")
    return total


Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
OptionalSeconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]  # 0 = off
Count = Annotated[int, Field(ge=1)]
OptionalPath = Annotated[Path | None, BeforeValidator(lambda v: None if v == "" else v)]


class ListenerKind(StrEnum):
    SMTP = "smtp"  # port 25: MX, relay control applies
    SUBMISSION = "submission"  # port 587 (or 465 with tls = "implicit"): AUTH required
    LMTP = "lmtp"


class ListenerTls(StrEnum):
    STARTTLS = "starttls"  # offer STARTTLS when [tls] has a certificate (RFC 3207)
    IMPLICIT = "implicit"  # TLS from the first byte (RFC 8314, port 465); needs a certificate
    NONE = "none"  # never TLS


class ListenerAuth(StrEnum):
    OFF = "off"  # AUTH never offered
    OFFER = "offer"  # AUTH offered (under TLS) when auth.users_file is set
    REQUIRE = "require"  # AUTH offered, and required before MAIL (530 5.7.0)


class Listener(Section):
    address: str = "127.0.0.1"
    port: Port = 25
    kind: ListenerKind = ListenerKind.SMTP
    name: str = ""  # Sendmail's daemon name ({daemon_name}); defaults to kind-port
    tls: ListenerTls = ListenerTls.STARTTLS
    auth: ListenerAuth | None = None  # default: require on submission, offer on smtp, off on lmtp
    require_tls: bool | None = None  # TLS before MAIL (530 5.7.0); default: on submission

    @property
    def auth_mode(self) -> ListenerAuth:
        if self.auth is not None:
            return self.auth
        return {
            ListenerKind.SUBMISSION: ListenerAuth.REQUIRE,
            ListenerKind.SMTP: ListenerAuth.OFFER,
        }.get(self.kind, ListenerAuth.OFF)

    @property
    def tls_required(self) -> bool:
        if self.require_tls is not None:
            return self.require_tls
        return self.kind is ListenerKind.SUBMISSION

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value.startswith("unix:"):
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                "must be an IP address (e.g. 127.0.0.1 or ::1) or unix:/path"
            ) from None
        return value

    @property
    def display_name(self) -> str:
        return self.name or f"{self.kind.value}-{self.port}"


def _reaches_loopback(address: str) -> bool:
    """Loopback clients can connect to a listener on this address (loopback, or any)."""
    if address.startswith("unix:"):
        return False
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or ip.is_unspecified


class BareLineEndings(StrEnum):
    REJECT = "reject"
    NORMALIZE = "normalize"


class CpuAffinity(StrEnum):
    AUTO = "auto"  # worker N on the Nth CPU this process may run on (several workers only)
    NONE = "none"  # the kernel places the workers


class Timeouts(Section):
    """Server-side SMTP timeouts (RFC 5321 4.5.3.2 minimums as defaults)."""

    command: Seconds = 300.0  # for the next complete command line (4.5.3.2.7; slowloris-proof)
    # between two reads inside DATA/BDAT (4.5.3.2.5); with server.min_data_rate also the
    # deadline of the whole DATA/BDAT request, extended by what arrives (Postfix's
    # smtpd_per_request_deadline)
    data_block: Seconds = 180.0
    shutdown_grace: Seconds = 30.0  # SIGTERM: how long sessions may finish
    tls_handshake: Seconds = 30.0  # STARTTLS or implicit TLS handshake
    # LMTP: how long the end of data waits for the local deliveries before answering
    # 250 and leaving them queued; 0 = answer at the commit (a failure then bounces)
    lmtp_delivery: OptionalSeconds = 90.0


def cores() -> int:
    """The cores this process may run on (its CPU affinity, as ``nproc`` counts them)."""
    return len(os.sched_getaffinity(0)) or 1


def parse_workers(value: object) -> object:
    """``"auto"``: one worker process per core."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return cores()
    return value


# worker processes: "auto" (one per core) or a number; 1 = one process, no supervisor
Workers = Annotated[int, BeforeValidator(parse_workers), Field(ge=1, le=256)]


class ServerSection(Section):
    workers: Workers = Field(default_factory=cores)  # "auto"
    # with several workers, "auto" keeps each on a CPU of its own (read at start only)
    cpu_affinity: CpuAffinity = CpuAffinity.AUTO
    max_message_size: Annotated[int, Field(ge=0)] = 50 * 1024 * 1024  # 0 = unlimited
    max_recipients: Count = 1000
    max_connections: Count = 500
    max_connections_per_ip: Count = 20
    # Sendmail's ClientRate: new connections per client IP per minute; 0 = no limit
    max_connection_rate_per_ip: Annotated[int, Field(ge=0)] = 0
    greet_pause: OptionalSeconds = 0.0  # wait this long before 220; refuse early talkers
    max_command_line: Annotated[int, Field(ge=512)] = 2048
    # octets incl. CRLF; 0 = unlimited (as Sendmail and Postfix; the client folds on the way
    # out); 1000 refuses longer lines with 550 5.6.0 (RFC 5322 2.1.1)
    max_line_length: Annotated[int, Field(ge=0)] = 0
    max_header_size: Annotated[int, Field(ge=1024)] = 1024 * 1024
    bare_line_endings: BareLineEndings = BareLineEndings.REJECT
    max_hop_count: Count = 50
    max_bad_commands: Count = 20
    max_junk_commands: Count = 100
    vrfy: bool = False
    # RFC 8689: offer REQUIRETLS (after STARTTLS; never to LMTP clients): a message sent
    # with it leaves only over TLS verified for its MX host, to a host offering it too
    requiretls: bool = True
    # true: MAIL FROM:/RCPT TO: need <angle brackets> (501 5.5.4), as Postfix's
    # strict_rfc821_envelopes; false accepts FROM:user@domain like Sendmail and Postfix
    strict_rfc821_envelopes: bool = False
    # Postfix 3.7's smtpd_min_data_rate: message content must arrive at this many octets per
    # second on average (after timeouts.data_block of grace) or 421 4.4.2; 0 = per read only
    min_data_rate: Annotated[int, Field(ge=0)] = 500
    listen_backlog: Count = 1024
    # the client's forward-confirmed PTR name, looked up before the greeting (clientname)
    reverse_dns: bool = True
    reverse_dns_timeout: Seconds = 10.0
    timeouts: Timeouts = Timeouts()


class QueueSection(Section):
    """The queue and its retry policy (Sendmail's Timeout.queuewarn / queuereturn).

    ``backend = "postgresql"`` keeps the queue in the PostgreSQL database ``postgresql``
    names (several nodes may share it, ``docs/cluster.md``) instead of ``directory``'s
    ``queue.db``; only its presence is checked here (no connection at load). The password
    may come from ``postgresql_password_file`` (read when the queue is opened, never shown).
    """

    directory: Path = Path("/var/spool/mailwright")
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    postgresql: str = ""  # libpq connection URI or "key=value" string (backend = postgresql)
    postgresql_password_file: Path | None = None  # its first line is the password
    first_retry: Seconds = 300.0  # first retry 5 minutes after a temporary failure ...
    max_retry_interval: Seconds = 3600.0  # ... doubling up to this interval
    delay_warning: OptionalSeconds = 4 * 3600.0  # one "delayed" DSN after this; 0 = never
    max_lifetime: Seconds = 5 * 86400.0  # bounce what is still undelivered after this
    host_status_timeout: OptionalSeconds = 300.0  # don't redial a dead next hop for this long
    double_bounce_recipient: str = "postmaster"

    @model_validator(mode="after")
    def _backend_named(self) -> QueueSection:
        if self.backend == "postgresql" and not self.postgresql.strip():
            raise ValueError(
                'backend = "postgresql" needs postgresql, the database\'s libpq connection'
                ' string (e.g. postgresql = "postgresql://mailwright@db.example.org/mail")'
            )
        return self

    @property
    def database(self) -> Path:
        return self.directory / "queue.db"

    @property
    def spool_dir(self) -> Path:
        return self.directory / "tmp"


class ClusterSection(Section):
    """This node among the nodes of a shared queue (``queue.backend = "postgresql"``,
    ``docs/cluster.md``): its name in the ``nodes`` table and how often it says it is alive
    (a node whose last heartbeat is older than three intervals is shown stale). Read at
    start-up only."""

    node: str = Field(default_factory=lambda: socket.gethostname() or "localhost")
    heartbeat: Seconds = 10.0

    @field_validator("node")
    @classmethod
    def _node_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("node must not be empty")
        return value.strip()


class TlsSection(Section):
    """The server's certificate for STARTTLS and implicit TLS; reloaded on SIGHUP.

    Without a certificate STARTTLS is simply not offered (and AUTH neither, unless
    ``auth.plaintext_on_loopback``). ``mailwright tls selfsigned`` makes a test pair.
    """

    certificate: Path | None = None  # PEM, the chain after the certificate
    key: Path | None = None  # PEM private key; default: in the certificate file
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    ciphers: str = ""  # OpenSSL cipher list for TLS 1.2; empty: OpenSSL's defaults

    @model_validator(mode="after")
    def _pair(self) -> TlsSection:
        if self.key is not None and self.certificate is None:
            raise ValueError("key is set but certificate is not")
        return self


class AuthSection(Section):
    """SMTP AUTH (RFC 4954) on the server: who may log in, and brute-force limits."""

    users_file: Path | None = None  # "user:bcrypt-hash" lines (mailwright auth adduser)
    mechanisms: list[Literal["PLAIN", "LOGIN"]] = ["PLAIN", "LOGIN"]
    plaintext_on_loopback: bool = False  # offer AUTH without TLS to loopback clients
    failure_window: Seconds = 900.0  # failures are counted over this long ...
    max_failures_per_ip: Count = 10  # ... then AUTH from that address gets 454 4.7.0
    max_failures_per_user: Count = 5  # ... or that user name from that address
    max_failures_per_session: Count = 3  # then 421 and the connection is closed
    failure_delay: OptionalSeconds = 1.0  # a failure is answered this late, doubling ...
    max_failure_delay: OptionalSeconds = 16.0  # ... per failure of the address, up to this
    max_concurrent_checks: Count = 4  # password hashes computed at once (CPU bound)

    @field_validator("mechanisms")
    @classmethod
    def _mechanisms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one mechanism (PLAIN, LOGIN)")
        return list(dict.fromkeys(value))


class AccessSection(Section):
    """Sendmail-style access table (``Connect:``/``From:``/``To:`` keys); reread when changed."""

    table: Path | None = None


class TlsLevel(StrEnum):
    """Outbound STARTTLS per destination (Postfix's smtp_tls_security_level names)."""

    NONE = "none"  # never STARTTLS
    MAY = "may"  # STARTTLS when offered, no certificate check (RFC 7435)
    ENCRYPT = "encrypt"  # TLS required, certificate not checked; else defer 4.7.5
    VERIFY = "verify"  # TLS with a certificate valid for the host name; else defer 4.7.5
    # DANE for this destination (MX routes, tls_policy only; docs/dane.md): "dane" as
    # delivery.dane = "opportunistic" does everywhere; "dane-only" defers an MX host
    # without DNSSEC-validated TLSA records (4.7.5), as Postfix's dane-only does
    DANE = "dane"
    DANE_ONLY = "dane-only"

    @property
    def dane(self) -> bool:
        return self in (TlsLevel.DANE, TlsLevel.DANE_ONLY)


class DeliveryMode(StrEnum):
    BACKGROUND = "background"  # deliver as soon as a message is queued (Sendmail -odb)
    QUEUE = "queue"  # only queue; deliver on queue runs (Sendmail -odq, DeliveryMode=q)


class DeliverySection(Section):
    """Outbound delivery: concurrency and client timeouts (RFC 5321 4.5.3.2 minimums)."""

    mode: DeliveryMode = DeliveryMode.BACKGROUND
    queue_run_interval: OptionalSeconds = 0.0  # with mode "queue": run the queue this often

    max_concurrency: Count = 100  # deliveries in flight in total
    max_per_destination: Count = 20  # deliveries in flight to one next hop
    # how long a runner owns the recipients it delivers, renewed every third of it while
    # they are in delivery (queue.lease): only a dead runner's leases expire
    lease: Seconds = 900.0
    connect_timeout: Seconds = 30.0
    greeting_timeout: Seconds = 300.0
    command_timeout: Seconds = 300.0  # MAIL, RCPT
    data_init_timeout: Seconds = 120.0
    data_block_timeout: Seconds = 180.0
    data_done_timeout: Seconds = 600.0  # waiting for the reply to the final dot
    idle_connection_timeout: Seconds = 10.0  # how long a reusable connection stays open
    smtp_port: Port = 25  # port of MX hosts (change it only for tests)
    prefer_ipv6: bool = False
    tls_default: TlsLevel = TlsLevel.MAY
    # per destination: "example.com" (and its subdomains: ".example.com") for MX routes,
    # "[host]" for transport-table and smarthost routes
    tls_policy: dict[str, TlsLevel] = {}
    tls_ca_file: Path | None = None  # CAs for "verify"; default: the system's
    # SMTP AUTH as a client (routing.credentials): "[host]:port  user:password" lines
    auth_table: Path | None = None
    auth_plaintext: bool = False  # send credentials without TLS (loopback peers always may)
    # MTA-STS (RFC 8461, routing.mtasts): honour the policies domains publish for their MX
    # hosts (TXT lookup, HTTPS fetch, in-memory cache); off with dns.static_table (no DNS)
    mta_sts: bool = True
    mta_sts_port: Port = 443  # HTTPS port of mta-sts.<domain> (change it only for tests)
    # RFC 8689 5: a message with "TLS-Required: No" (TLS reports carry it) goes without
    # DANE and MTA-STS, TLS opportunistic; the tls_policy table still applies
    tls_required_no: bool = True

    @field_validator("tls_policy")
    @classmethod
    def _tls_policy(cls, value: dict[str, TlsLevel]) -> dict[str, TlsLevel]:
        for key in value:
            if not key.strip() or any(c.isspace() or c == "@" for c in key):
                raise ValueError(f"{key!r} is not a domain or [host]")
        return value

    # DANE (RFC 7672; delivery.dane, docs/dane.md): "opportunistic" is Postfix's
    # smtp_tls_security_level = dane: MX hosts with DNSSEC-validated TLSA records get TLS
    # that must match them (else 4.7.5), the others opportunistic TLS as before
    dane: Literal["off", "opportunistic"] = "off"
    # validating resolvers (e.g. a local Unbound) whose AD bit is trusted, on dns.port;
    # with dane on, delivery's DNS lookups go to them; needed when dane is on
    dane_nameservers: AddressList = []

    @property
    def dane_used(self) -> bool:
        """DANE anywhere: everywhere, or for a destination of ``tls_policy``."""
        return self.dane != "off" or any(level.dane for level in self.tls_policy.values())

    @model_validator(mode="after")
    def _dane_has_a_trusted_resolver(self) -> DeliverySection:
        if self.tls_default.dane:
            raise ValueError(
                f'tls_default cannot be "{self.tls_default}": DANE everywhere is dane = '
                '"opportunistic"; "dane" and "dane-only" are for tls_policy entries'
            )
        for key, level in self.tls_policy.items():
            if level.dane and key.strip().startswith("["):
                raise ValueError(
                    f'tls_policy {key!r}: "{level}" applies to domains routed by MX, not to '
                    "[host] routes"
                )
        if self.dane_used and not self.dane_nameservers:
            raise ValueError(
                "dane needs dane_nameservers (for delivery.dane, and for the tls_policy levels "
                '"dane" and "dane-only"): the validating resolvers whose answers (the AD bit) '
                "are trusted, e.g. a local Unbound at 127.0.0.1"
            )
        return self


class RelaySection(Section):
    networks: CidrList = ["127.0.0.0/8", "::1/128"]  # clients that may relay anywhere
    domains: list[str] = []  # domains we accept mail for and relay on (".x" = subdomains)


class RoutingSection(Section):
    local_domains: list[str] = []  # empty: the host name and "localhost"
    transport_table: Path | None = None  # "domain  smtp:[host]:port" lines (routing.transport)
    smarthost: str = ""  # "[host]:port" or "host": all non-local mail without a table entry
    # local recipients (routing.aliases, routing.forward, routing.virtual)
    alias_file: OptionalPath = Path("/etc/aliases")  # aliases(5) source; "" = no aliases
    alias_database: Path | None = None  # compiled table; default <queue.directory>/aliases.db
    max_alias_recursion: Count = 10  # deeper is a loop: 554 5.4.6 (MaxAliasRecursion)
    forward_path: list[str] = ["$z/.forward.$w", "$z/.forward"]  # $z home, $w host, $u user
    virtual_user_table: Path | None = None  # virtusertable: "user@domain  target" lines
    virtual_domains: list[str] = []  # domains served only through the virtual user table

    @field_validator("smarthost")
    @classmethod
    def _smarthost(cls, value: str) -> str:
        if value.strip():
            smarthost_parts(value)  # ValueError names the problem
        return value.strip()


class MailboxFormat(StrEnum):
    MBOX = "mbox"  # <mail_spool>/<user>, mail.local compatible
    MAILDIR = "maildir"  # <mail_spool>/<user>/ with tmp, new, cur


class LocalDeliverySection(Section):
    """Final delivery on this host: mailboxes, programs and files (delivery.local)."""

    mail_spool: Path = Path("/var/mail")  # mailboxes of local users
    mailbox_format: MailboxFormat = MailboxFormat.MBOX
    virtual_mailbox_table: Path | None = None  # "name  path" lines instead of passwd users
    virtual_user: str = ""  # as root: owner of virtual mailboxes ("" = the daemon's user)
    default_user: str = "nobody"  # as root: runs programs/files of root-owned alias files
    pipe_timeout: Seconds = 1000.0  # a |command running longer is killed; delivery deferred
    lock_timeout: Seconds = 60.0  # waiting for a mailbox lock; then deferred (4.2.0)
    stale_lock_age: Seconds = 300.0  # an older USER.lock is broken (mail.local)
    mailbox_size_limit: Annotated[int, Field(ge=0)] = 0  # octets; over it: 4.2.2; 0 = none


class AddressOrder(StrEnum):
    """Which addresses of a mail host to try first (or only)."""

    IPV4_FIRST = "ipv4-first"
    IPV6_FIRST = "ipv6-first"
    IPV4_ONLY = "ipv4-only"
    IPV6_ONLY = "ipv6-only"


class DnsSection(Section):
    """The resolver used for MX and address lookups (routing.mx)."""

    nameservers: AddressList = []  # empty: those of /etc/resolv.conf
    port: Port = 53
    timeout: Seconds = 5.0  # one query to one server
    lifetime: Seconds = 15.0  # one lookup, all servers and retries
    address_order: AddressOrder = AddressOrder.IPV4_FIRST
    max_mx_hosts: Count = 10  # MX targets looked up per domain, best first
    cache_size: Annotated[int, Field(ge=0)] = 10000  # answers kept; 0 = no cache
    cache_max_ttl: Annotated[float, Field(ge=0)] = 3600.0  # longer TTLs are cut to this
    negative_ttl: Annotated[float, Field(ge=0)] = 60.0  # NXDOMAIN / no-record answers
    static_table: Path | None = None  # "domain  host=address, ..." file used instead of DNS


class FailurePolicy(StrEnum):
    """What a filter that is down, slow or broken means for the mail (Sendmail's F=)."""

    TEMPFAIL = "tempfail"  # 451 4.7.1: the client retries later (Postfix's default)
    REJECT = "reject"  # 550 5.7.1
    ACCEPT = "accept"  # go on as if the filter were not configured


def parse_milter_timeouts(value: object) -> object:
    """Sendmail's ``T=`` text ("C:30s;S:10s;R:30s;E:5m") or a table."""
    if not isinstance(value, str):
        return value
    names = {"C": "connect", "S": "send", "R": "read", "E": "eom"}
    out: dict[str, str] = {}
    for item in value.replace(",", ";").split(";"):
        if not item.strip():
            continue
        key, colon, amount = item.strip().partition(":")
        if not colon or key.upper() not in names:
            raise ValueError(f"{item!r}: use C:, S:, R: or E: followed by a duration")
        out[names[key.upper()]] = amount
    return out


class MilterTimeouts(Section):
    """Sendmail's per-filter timeouts and defaults (T=C:5m;S:10s;R:10s;E:5m)."""

    connect: Seconds = 300.0  # C: connecting to the filter
    send: Seconds = 10.0  # S: each write to the filter
    read: Seconds = 10.0  # R: each read of a reply (a PROGRESS restarts it)
    eom: Seconds = 300.0  # E: from end of message to the final reply (a PROGRESS restarts it)


MacroNames = Annotated[
    list[str] | None,
    BeforeValidator(lambda v: v.replace(",", " ").split() if isinstance(v, str) else v),
]


class MilterMacros(Section):
    """Macros sent before each stage; unset = Mailwright's defaults (a superset of Sendmail's)."""

    connect: MacroNames = None
    helo: MacroNames = None
    envfrom: MacroNames = None
    envrcpt: MacroNames = None
    data: MacroNames = None
    eoh: MacroNames = None
    eom: MacroNames = None


class FilterScope(Section):
    """Which mail a filter sees (Postfix's smtpd_milters / non_smtpd_milters)."""

    name: str = ""  # for logs; default: the socket or plugin name
    smtpd: bool = True  # mail received over SMTP/LMTP
    non_smtpd: bool = False  # mail submitted locally (the sendmail command line)
    listeners: list[str] = []  # only these listeners (by name); empty = all
    on_failure: FailurePolicy = FailurePolicy.TEMPFAIL


class MilterFilter(FilterScope):
    """An external mail filter spoken to over the milter protocol."""

    milter: str  # unix:/path, inet:PORT@HOST, inet6:PORT@HOST (or Postfix's inet:HOST:PORT)
    protocol: Literal[2, 3, 4, 6] = 6
    timeouts: Annotated[MilterTimeouts, BeforeValidator(parse_milter_timeouts)] = MilterTimeouts()
    macros: MilterMacros = MilterMacros()

    @field_validator("milter")
    @classmethod
    def _milter(cls, value: str) -> str:
        return str(parse_endpoint(value))

    @property
    def display_name(self) -> str:
        return self.name or self.milter


class PluginFilter(FilterScope):
    """An in-process Python filter, loaded by name (entry point group ``mailwright.filters``).

    Only the shape is checked here: the plugin and its own options model are policy code,
    checked where the parts are built (``daemon.generation.check_plugins``, which
    ``mailwright config check`` runs too)."""

    plugin: str
    options: dict[str, Any] = {}

    @property
    def display_name(self) -> str:
        return self.name or self.plugin


def _filter_kind(value: object) -> str:
    if isinstance(value, dict):
        return "milter" if "milter" in value else "plugin"
    return "milter" if isinstance(value, MilterFilter) else "plugin"


FilterEntry = Annotated[
    Annotated[MilterFilter, Tag("milter")] | Annotated[PluginFilter, Tag("plugin")],
    Discriminator(_filter_kind),
]


class LocalSection(Section):
    """Local submission: the ``sendmail`` command line, its Unix socket and the maildrop.

    ``config/lite.py`` reads these keys without pydantic (the fast ``sendmail`` path);
    keep the two in step (a unit test compares them).
    """

    socket: Path | None = None  # default <queue.directory>/submit.sock (mode 0666)
    maildrop: Path | None = None  # default <queue.directory>/maildrop (mode 1733, like /tmp)
    domain: str = ""  # qualifies bare user names, builds From:; default: hostname
    trusted_users: list[str] = []  # may set the sender (-f) without a warning header,
    # besides root and the daemon's own user (Sendmail's class t)
    pickup_interval: Seconds = 60.0  # the daemon also looks at the maildrop this often

    @field_validator("trusted_users")
    @classmethod
    def _users(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or any(c.isspace() or c == ":" for c in name):
                raise ValueError(f"{name!r} is not a login name")
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if any(c.isspace() or c in "@<>" for c in value):
            raise ValueError("must be a domain name")
        return value.lower()


# settings whose value is never repeated in an error message (config check output ends up
# in tickets and chats; a wrong secret is usually a real one with a typo)
SECRET_SETTINGS = frozenset({"http.token", "queue.postgresql"})

_URI_PASSWORD = re.compile(r"(?<=://)([^:@/]*):[^@/]*@")
_KEYWORD_PASSWORD = re.compile(r"(?<![\w])(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def masked_conninfo(conninfo: str) -> str:
    """A libpq connection string with any password in it replaced by ``********``."""
    if not conninfo.lstrip().startswith(("postgresql://", "postgres://")):
        return _KEYWORD_PASSWORD.sub(r"\1********", conninfo)
    masked = _URI_PASSWORD.sub(r"\1:********@", conninfo)
    return re.sub(r"(?<=[?&])password=[^&]*", "password=********", masked)


class HttpSection(Section):
    """The daemon's web endpoint: ``/metrics`` (Prometheus) and the status page.

    Off unless ``port`` is set. ``/metrics`` needs no token from a loopback client
    (unless ``metrics_require_token``); the status page always needs ``token``, given
    as ``Authorization: Bearer`` or through its login form, and is off without one.
    Listening beyond loopback requires a token.
    """

    address: str = "127.0.0.1"
    port: Port | None = None
    token: str = ""
    metrics_require_token: bool = False

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address, e.g. 127.0.0.1 or ::1") from None
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        if value and (len(value) < 8 or any(c.isspace() or not c.isprintable() for c in value)):
            raise ValueError("must be at least 8 printable characters without spaces")
        return value

    @model_validator(mode="after")
    def _exposed_needs_token(self) -> HttpSection:
        exposed = not ipaddress.ip_address(self.address).is_loopback
        if self.port is not None and exposed and not self.token:
            raise ValueError(f"address {self.address} is not loopback: set a token")
        return self


class ServiceSection(Section):
    """Running as a system service (``docs/service.md``): whose rights the daemon uses.

    Started as root, the daemon binds its listeners and the local submission socket,
    forks the privileged helper (local delivery as the recipient), then runs as
    ``user``, which must exist (``useradd --system mailwright``): safe by default, the
    SMTP-facing code never runs as root unless ``user = "root"`` says so explicitly.
    Started as anyone else, ``user`` is ignored and nothing changes identity.
    """

    user: str = "mailwright"  # the service account; "root" = stay root (not recommended)
    group: str = ""  # primary group instead of the user's own
    # a |program or /file controlled by root runs as root (else as local_delivery.default_user)
    root_programs: bool = False
    pid_file: Path | None = None  # serve --daemon, sendmail -bd; default <queue dir>/mailwright.pid

    @field_validator("user", "group")
    @classmethod
    def _name(cls, value: str) -> str:
        if any(c.isspace() or c == ":" for c in value):
            raise ValueError(f"{value!r} is not a user or group name")
        return value


class LogTarget(StrEnum):
    STDERR = "stderr"  # journald under systemd, the terminal under `make run`
    SYSLOG = "syslog"  # a syslog socket (facility mail by default), as Sendmail does
    FILE = "file"  # log.file, appended to; reopened on SIGUSR1 and SIGHUP (logrotate)


class LogFormat(StrEnum):
    TEXT = "text"  # Sendmail's lines: "QUEUEID: from=<a@b>, size=..., relay=..."
    JSON = "json"  # one JSON object per line, the same fields as keys


class LogSection(Section):
    """Where the daemon's log lines go (``observability.logtargets``)."""

    target: LogTarget = LogTarget.STDERR
    format: LogFormat = LogFormat.TEXT
    level: Literal["debug", "info", "warning", "error"] = "info"
    syslog_ident: str = "mailwright"  # e.g. "sm-mta" for scripts that grep Sendmail's name
    syslog_facility: str = "mail"
    syslog_socket: Path = Path("/dev/log")
    file: Path | None = None  # e.g. /var/log/mailwright.log; setting it alone means target "file"

    @model_validator(mode="before")
    @classmethod
    def _file_means_file_target(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("file") is not None and "target" not in data:
            return {**data, "target": LogTarget.FILE.value}
        return data

    @model_validator(mode="after")
    def _file_and_target_agree(self) -> LogSection:
        if self.target is LogTarget.FILE and self.file is None:
            raise ValueError('target = "file" needs file = "/var/log/mailwright.log" (a path)')
        if self.target is not LogTarget.FILE and self.file is not None:
            raise ValueError(
                f'file is set but target = "{self.target.value}": set target = "file"'
                " (or leave target out), or remove file"
            )
        return self

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("syslog_facility")
    @classmethod
    def _facility(cls, value: str) -> str:
        import logging.handlers

        names = logging.handlers.SysLogHandler.facility_names
        if value.lower() not in names:
            raise ValueError(f"{value!r} is not a syslog facility (e.g. mail, local0)")
        return value.lower()

    @field_validator("syslog_ident")
    @classmethod
    def _ident(cls, value: str) -> str:
        if not value or any(c.isspace() or c in "[]:" for c in value):
            raise ValueError(f"{value!r}: use a word such as mailwright or sm-mta")
        return value


class SpfAction(StrEnum):
    """What the SPF check does with a result (policy.spf)."""

    REFUSE = "refuse"  # 550 (5.7.23; 5.7.24 for permerror) or, for temperror, 451 4.7.24
    MARK = "mark"  # accept; the result is in Received-SPF and Authentication-Results


class SpfStage(StrEnum):
    MAIL = "mail"
    RCPT = "rcpt"


class SpfSection(Section):
    """SPF (RFC 7208, policy.spf) of MAIL FROM and HELO; off unless ``enabled``."""

    enabled: bool = False
    fail: SpfAction = SpfAction.REFUSE
    softfail: SpfAction = SpfAction.MARK
    permerror: SpfAction = SpfAction.MARK
    temperror: SpfAction = SpfAction.REFUSE  # refuse = 451 4.7.24, try again later
    helo: bool = True  # check the HELO name too; its fail is treated as the sender's
    stage: SpfStage = SpfStage.RCPT  # where a refusal is answered
    authserv_id: AuthservId = ""  # empty: hostname
    timeout: Seconds = 20.0  # the whole check; then temperror
    allow: CidrList = []  # client networks never checked (CIDR)


def signing_domain(value: str) -> str:
    """A ``d=`` domain of a DKIM or ARC signature, lower case, without a final dot ("" stays)."""
    value = value.lower().rstrip(".")
    if value and not re.fullmatch(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]+", value):
        raise ValueError(f"{value!r} is not a domain name")
    return value


def selector_name(value: str, what: str) -> str:
    """An ``s=`` selector (RFC 6376 3.1: dot-separated sub-domain labels; "" stays)."""
    if value and not re.fullmatch(
        r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*", value
    ):
        raise ValueError(f"{value!r} is not {what}")
    return value


class ArcSection(Section):
    """ARC (RFC 8617): ``verify`` validates the chains of inbound mail (policy.arc) and
    reports ``arc=`` in Authentication-Results; ``seal`` adds an ARC Set to the mail that
    alias expansion, a list or a ``.forward`` sends on by SMTP (delivery.arcseal)."""

    verify: bool = False
    verify_trusted: bool = False  # also validate the mail of trusted and authenticated clients
    seal: bool = False
    domain: str = ""  # d= of our ARC Sets (needed to seal)
    selector: str = ""  # s= (needed to seal); the key is at <selector>._domainkey.<domain>
    key_file: str = ""  # PEM private key, RSA of 2048 bits or more, or Ed25519
    authserv_id: AuthservId = ""  # ours in Authentication-Results and AAR; empty: hostname
    headers: list[str] = list(ARC_DEFAULT_HEADERS)  # what our ARC-Message-Signature signs
    canonicalization: Literal[
        "relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple"
    ] = "relaxed/relaxed"  # of our ARC-Message-Signature
    timeout: Seconds = 10.0  # one key lookup while validating; then the chain fails

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return signing_domain(value)

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return selector_name(value, "a selector")

    @field_validator("headers")
    @classmethod
    def _headers(cls, values: list[str]) -> list[str]:
        for name in values:
            if not re.fullmatch(r"[\x21-\x39\x3b-\x7e]+", name) or name.lower() in ARC_UNSIGNABLE:
                raise ValueError(f"{name!r} cannot be signed by an ARC-Message-Signature")
        return values if any(n.lower() == "from" for n in values) else ["From", *values]

    @model_validator(mode="after")
    def _sealing(self) -> ArcSection:
        if self.seal:
            if not (self.domain and self.selector and self.key_file):
                raise ValueError("arc.seal needs arc.domain, arc.selector and arc.key_file")
            # here, not at the top: loading the settings needs no cryptography otherwise
            from mailwright.core.dkim import load_signing_key

            load_signing_key(self.key_file, "ARC")  # a bad key is a configuration error
        return self


class DmarcAction(StrEnum):
    """What DMARC does with a message whose domain asks for reject or quarantine."""

    REFUSE = "refuse"  # 550 5.7.1 at end of data
    HOLD = "hold"  # accept and keep on hold in the queue
    MARK = "mark"  # accept; dmarc=fail in Authentication-Results


class DmarcSection(Section):
    """DMARC (RFC 7489, policy.dmarc) at end of data; off unless ``enabled``."""

    enabled: bool = False
    reject: DmarcAction = DmarcAction.REFUSE  # the domain says p=reject
    quarantine: DmarcAction = DmarcAction.HOLD  # the domain says p=quarantine
    temperror: SpfAction = SpfAction.REFUSE  # refuse: 451 4.7.1 where the policy would refuse
    malformed_from: SpfAction = SpfAction.REFUSE  # several From fields, or no domain: 550 5.7.1
    authserv_id: AuthservId = ""  # empty: hostname
    timeout: Seconds = 10.0  # the record lookups and DKIM keys DMARC fetches itself
    allow: CidrList = []  # client networks never checked (CIDR)
    psl_file: Path | None = None  # empty: <queue.directory>/public_suffix_list.dat if there
    reports: bool = False  # send aggregate reports (RFC 7489 7.2) to the rua addresses
    report_interval: Seconds = 86400.0  # one report per policy domain per interval
    report_org_name: str = ""  # empty: hostname
    report_from: str = ""  # empty: postmaster@hostname
    # failure reports (RFC 7489 7.3) to the ruf addresses, as the record's fo= asks: the
    # header section only; off by default (OpenDMARC's FailureReports), as most receivers
    failure_reports: bool = False
    # at most one per organizational domain per interval and host; 0: one per failing message
    failure_report_interval: OptionalSeconds = 3600.0

    @field_validator("psl_file", mode="before")
    @classmethod
    def _psl_file(cls, value: Any) -> Any:
        return None if value == "" else value  # empty: the default place

    @field_validator("report_from")
    @classmethod
    def _report_from(cls, value: str) -> str:
        if value and not re.fullmatch(r"[^@\s<>]+@[A-Za-z0-9.-]+", value):
            raise ValueError(f"{value!r} is not an address (user@domain)")
        return value


class DnsblSection(Section):
    """DNS blocklists (policy.dnsbl): listed clients are refused at RCPT; no zones = off."""

    zones: list[str] = []  # "zen.spamhaus.org", or "bl.example=127.0.0.2,127.0.0.4" (answers)
    reply: str = "554 5.7.1 Service unavailable; client [{ip}] blocked using {zone}"
    timeout: Seconds = 5.0  # the whole check, all zones at once; then the client is let in
    allow: CidrList = []  # networks never checked (CIDR)

    @field_validator("zones")
    @classmethod
    def _zones(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for entry in value:
            name = parse_zone(entry).name
            if name in seen:
                raise ValueError(f"zone {name!r} listed twice")
            seen.add(name)
        return value

    @field_validator("reply")
    @classmethod
    def _reply(cls, value: str) -> str:
        parse_reply(value)
        return value


def _default_hostname() -> str:
    return socket.gethostname() or "localhost"


class RewriteSection(Section):
    """Outbound address rewriting (routing.generic): masquerading and the generic table,
    applied only to mail leaving through the SMTP client; local deliveries keep the original."""

    masquerade_as: str = ""  # "example.com": the domain users appear to send from; "" = off
    masquerade_domains: list[str] = []  # empty: the local domains; ".host.lan" = and subdomains
    masquerade_exceptions: list[str] = ["root"]  # local parts never masqueraded (EXPOSED_USER)
    masquerade_envelope: bool = True  # also rewrite the envelope sender (MAIL FROM)
    recipient_headers: bool = False  # also To, Cc, Resent-To, Resent-Cc (allmasquerade)
    generic_table: OptionalPath = Path("/etc/mailwright/generic")  # "key value"; "" = none

    @field_validator("masquerade_as")
    @classmethod
    def _masquerade_as(cls, value: str) -> str:
        from mailwright.core.address import AddressError, parse_domain

        if not value.strip():
            return ""
        try:
            return parse_domain(value.strip())
        except AddressError as exc:
            raise ValueError(f"{value!r} is not a domain: {exc}") from None

    @field_validator("masquerade_domains")
    @classmethod
    def _masquerade_domains(cls, value: list[str]) -> list[str]:
        from mailwright.core.address import AddressError, parse_domain

        for entry in value:
            try:
                parse_domain(entry.removeprefix("."))
            except AddressError as exc:
                raise ValueError(f"{entry!r} is not a domain: {exc}") from None
        return [entry.lower() for entry in value]


class TlsReportingSection(Section):
    """SMTP TLS reporting (RFC 8460; routing.tlsrpt, daemon.tlsreports, docs/tlsrpt.md):
    count the TLS outcome of every SMTP session to an MX host and send each domain that
    publishes a ``_smtp._tls`` record a daily report of its sessions."""

    enabled: bool = False
    organization: str = ""  # organization-name of the reports; default: the host name
    contact: str = ""  # contact-info; default: postmaster@<hostname>
    sender: str = ""  # From and envelope sender of mailed reports; default: noreply-tlsrpt@
    # how often each process adds its counts to the store (tlsrpt.db, or the database)
    flush_interval: Seconds = 60.0
    # reports of a UTC day go out this long after its end (every process has flushed it)
    send_delay: OptionalSeconds = 900.0
    max_report_size: Count = 1024 * 1024  # octets of gzip; a larger report is not mailed
    post_timeout: Seconds = 60.0  # for each https: address
    # a failed POST is tried again after this, doubling up to 4 h, for a day (RFC 8460 5.4)
    post_retry_interval: Seconds = 300.0
    # the DKIM signature RFC 8460 5.3 requires of a mailed report (receivers ignore one
    # without); unset: the key of a ``dkim`` filter whose domains cover the sender's
    dkim_key_file: str = ""  # PEM, RSA of 2048 bits or more, or Ed25519
    dkim_selector: str = ""
    dkim_domain: str = ""  # d=; default: the domain of ``sender``

    @field_validator("dkim_selector")
    @classmethod
    def _dkim_selector(cls, value: str) -> str:
        return selector_name(value, "a DKIM selector")

    @field_validator("dkim_domain")
    @classmethod
    def _dkim_domain(cls, value: str) -> str:
        return signing_domain(value)

    @model_validator(mode="after")
    def _dkim(self) -> TlsReportingSection:
        if not self.dkim_key_file:
            if self.dkim_selector or self.dkim_domain:
                raise ValueError("dkim_selector and dkim_domain need a dkim_key_file")
            return self
        if not self.dkim_selector:
            raise ValueError("dkim_key_file needs a dkim_selector")
        # here, not at the top: loading the settings needs no cryptography otherwise
        from mailwright.core.dkim import load_signing_key

        load_signing_key(self.dkim_key_file, "DKIM")  # a bad key is a configuration error
        return self


class Settings(Section):
    hostname: str = Field(default_factory=_default_hostname)
    listeners: list[Listener] = Field(
        default_factory=lambda: [Listener(address="127.0.0.1", port=25, kind=ListenerKind.SMTP)]
    )
    server: ServerSection = ServerSection()
    queue: QueueSection = QueueSection()
    cluster: ClusterSection = ClusterSection()
    delivery: DeliverySection = DeliverySection()
    relay: RelaySection = RelaySection()
    routing: RoutingSection = RoutingSection()
    dns: DnsSection = DnsSection()
    local: LocalSection = LocalSection()
    tls: TlsSection = TlsSection()
    auth: AuthSection = AuthSection()
    access: AccessSection = AccessSection()
    local_delivery: LocalDeliverySection = LocalDeliverySection()
    http: HttpSection = HttpSection()
    service: ServiceSection = ServiceSection()
    log: LogSection = LogSection()
    dnsbl: DnsblSection = DnsblSection()
    spf: SpfSection = SpfSection()
    arc: ArcSection = ArcSection()
    dmarc: DmarcSection = DmarcSection()
    rewrite: RewriteSection = RewriteSection()
    tls_reporting: TlsReportingSection = TlsReportingSection()
    filters: list[FilterEntry] = []  # milters and in-process filters, called in this order

    @property
    def named_local_domains(self) -> list[str]:
        """The configured local domains (default: the host name and ``localhost``)."""
        return self.routing.local_domains or [self.hostname.lower(), "localhost"]

    @property
    def local_domains(self) -> list[str]:
        """The named local domains, plus the address literals of the addresses our
        listeners are bound to (``root@[127.0.0.1]`` is local, as in Sendmail and Postfix)."""
        literals = own_literals(listener.address for listener in self.listeners)
        return [*self.named_local_domains, *literals]

    @property
    def alias_database(self) -> Path:
        """The compiled alias table (``mailwright aliases build`` writes it)."""
        return self.routing.alias_database or self.queue.directory / "aliases.db"

    @property
    def local_socket(self) -> Path:
        """The local submission socket (``sendmail`` talks to the daemon through it)."""
        return self.local.socket or self.queue.directory / "submit.sock"

    @property
    def pid_file(self) -> Path:
        """Where a detached daemon (``serve --daemon``, ``sendmail -bd``) records its pid."""
        return self.service.pid_file or self.queue.directory / "mailwright.pid"

    @property
    def maildrop_dir(self) -> Path:
        """Where ``sendmail`` leaves messages while the daemon is not running."""
        return self.local.maildrop or self.queue.directory / "maildrop"

    @property
    def local_domain(self) -> str:
        """The domain of local users' addresses (``user`` becomes ``user@<this>``)."""
        return self.local.domain or self.hostname.lower()

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("must be a host name without spaces")
        return value

    @model_validator(mode="after")
    def _unique_listeners(self) -> Settings:
        seen = set()
        for listener in self.listeners:
            key = (listener.address, listener.port)
            if key in seen:
                raise ValueError(f"two listeners on {listener.address}:{listener.port}")
            seen.add(key)
        return self

    @model_validator(mode="after")
    def _implicit_tls_has_certificate(self) -> Settings:
        for listener in self.listeners:
            if listener.tls is ListenerTls.IMPLICIT and self.tls.certificate is None:
                raise ValueError(
                    f'listener {listener.display_name} has tls = "implicit" '
                    "but [tls] certificate is not set"
                )
        return self

    @model_validator(mode="after")
    def _tls_required_can_be_had(self) -> Settings:
        """A listener that wants TLS before MAIL but never offers it refuses every MAIL
        (530 5.7.0 Must issue a STARTTLS command first), unless loopback clients may
        go without TLS there (``auth.plaintext_on_loopback``)."""
        for listener in self.listeners:
            if listener.tls is not ListenerTls.NONE or not listener.tls_required:
                continue
            if self.auth.plaintext_on_loopback and _reaches_loopback(listener.address):
                continue
            why = (
                "a submission listener requires TLS before MAIL"
                if listener.require_tls is None
                else "require_tls = true"
            )
            raise ValueError(
                f'listener {listener.display_name} has tls = "none" but {why}: it would never'
                " offer STARTTLS yet answer every MAIL with 530 5.7.0, so it could never"
                ' accept mail; use tls = "starttls" (with [tls] certificate) or'
                ' tls = "implicit", or set require_tls = false on that listener'
            )
        return self

    @model_validator(mode="after")
    def _unique_filters(self) -> Settings:
        names = [f.display_name for f in self.filters]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two filters named {name!r}: give each a distinct name")
        return self

    def resolve_paths(self, base: Path) -> Settings:
        """Relative paths in the file are relative to the file's directory."""

        # ``base / path`` leaves an absolute path as it is
        def rebase(section: Section, *fields: str) -> Section:
            update = {
                f: Path(os.path.normpath(base / getattr(section, f)))
                for f in fields
                if getattr(section, f) is not None
            }
            return section.model_copy(update=update)

        return self.model_copy(
            update={
                "queue": rebase(self.queue, "directory", "postgresql_password_file"),
                "routing": rebase(
                    self.routing,
                    "transport_table",
                    "alias_file",
                    "alias_database",
                    "virtual_user_table",
                ),
                "dns": rebase(self.dns, "static_table"),
                "rewrite": rebase(self.rewrite, "generic_table"),
                "local": rebase(self.local, "socket", "maildrop"),
                "tls": rebase(self.tls, "certificate", "key"),
                "auth": rebase(self.auth, "users_file"),
                "access": rebase(self.access, "table"),
                "delivery": rebase(self.delivery, "tls_ca_file", "auth_table"),
                "local_delivery": rebase(
                    self.local_delivery, "mail_spool", "virtual_mailbox_table"
                ),
                "service": rebase(self.service, "pid_file"),
                "log": rebase(self.log, "syslog_socket", "file"),
            }
        )
