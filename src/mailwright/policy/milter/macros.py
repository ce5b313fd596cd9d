"""Milter macros: which are sent before each stage, and their values.

The default lists are a superset of Sendmail's m4 defaults that covers what
common filters look up (opendkim: ``i``, ``{daemon_name}``, ``{auth_type}``;
rspamd and clamav-milter: ``i``; spamass-milter: ``{rcpt_addr}``, ``_``).
A filter's configuration may replace any stage's list, and a filter's own list
from its OPTNEG reply replaces both. Values come from the session and the
transaction; a macro without a value is left out. Names are looked up with or
without braces, and sent as the list spells them.

``{mail_mailer}``/``{mail_host}`` and ``{rcpt_mailer}``/``{rcpt_host}`` report the
route the router gives the address's domain, with Postfix's names: the transport
(``smtp``, ``lmtp``, ``local``, ``error``) and the next hop (``example.org`` for an
MX lookup, ``[host]:port``, ``unix:/path``; our host name for local delivery; the
status code for ``error``). A recipient the MTA refused (shown to filters that
asked for ``SMFIP_RCPT_REJ``) has ``{rcpt_mailer}`` ``error``, ``{rcpt_host}`` the
refusal's enhanced status code and ``{rcpt_addr}`` its text, as with Sendmail and
Postfix.

Trusts the session's facts (they come from the socket and the protocol core).
Settings: ``hostname``, ``routing.local_domains`` and the router's settings
(``routing.transport_table``, ``routing.smarthost``), passed in as ``MacroSource``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from mailwright import __version__
from mailwright.core.address import Address
from mailwright.core.domains import DomainSet
from mailwright.core.envelope import Recipient
from mailwright.core.reply import Reply
from mailwright.policy.hooks import SessionInfo, Transaction
from mailwright.policy.milter.codec import Stage
from mailwright.routing.nexthop import NextHop, Transport

DEFAULTS: dict[Stage, tuple[str, ...]] = {
    Stage.CONNECT: (
        "j",
        "_",
        "{daemon_name}",
        "{daemon_addr}",
        "{daemon_port}",
        "{if_name}",
        "{if_addr}",
        "{client_addr}",
        "{client_name}",
        "{client_port}",
        "{client_ptr}",
        "{client_resolve}",
        "v",
    ),
    Stage.HELO: ("{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}"),
    Stage.ENVFROM: (
        "i",
        "{auth_type}",
        "{auth_authen}",
        "{auth_ssf}",
        "{auth_author}",
        "{mail_mailer}",
        "{mail_host}",
        "{mail_addr}",
    ),
    Stage.ENVRCPT: ("i", "{rcpt_mailer}", "{rcpt_host}", "{rcpt_addr}"),
    Stage.DATA: ("i",),
    Stage.EOH: ("i",),
    Stage.EOM: ("i", "{msg_id}"),
}

CONFIG_STAGES = {
    "connect": Stage.CONNECT,
    "helo": Stage.HELO,
    "envfrom": Stage.ENVFROM,
    "envrcpt": Stage.ENVRCPT,
    "data": Stage.DATA,
    "eoh": Stage.EOH,
    "eom": Stage.EOM,
}


@dataclass(frozen=True, slots=True)
class MacroSource:
    """What the values are computed from, besides the session and the transaction."""

    hostname: str
    local_domains: DomainSet
    route: Callable[[str], NextHop] | None = None  # domain -> next hop (the router's answer)

    def hop(self, domain: str) -> NextHop:
        if self.route is not None:
            return self.route(domain)
        if not domain or domain.lower() in self.local_domains:
            return NextHop(Transport.LOCAL)
        return NextHop(Transport.SMTP, host=domain.lower())


@dataclass(slots=True)
class MacroScope:
    session: SessionInfo
    txn: Transaction | None = None
    recipient: Recipient | None = None
    rejection: Reply | None = None  # the MTA's refusal of ``recipient`` (SMFIP_RCPT_REJ)


def canonical(name: str) -> str:
    """``{client_addr}`` and ``client_addr`` are the same macro."""
    return name[1:-1] if name.startswith("{") and name.endswith("}") else name


def _client_text(s: SessionInfo) -> str:
    if s.is_local:
        return f"{s.local_user or 'root'}@localhost"
    return f"{s.client_name} [{s.client_address}]" if s.client_name else f"[{s.client_address}]"


def _bracketed(address: str) -> str:
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


def _mailer(source: MacroSource, address: Address | None) -> tuple[str, str]:
    """(mailer, host) of the address's route, named as Postfix names them."""
    if address is None or not address.domain:
        return Transport.LOCAL.value, source.hostname  # <> and bare local parts stay here
    hop = source.hop(address.domain)
    if hop.transport is Transport.ERROR:
        error = hop.error
        return "error", (error.status or str(error.code)) if error is not None else "error"
    if hop.transport in (Transport.SMTP, Transport.LMTP):
        return hop.transport.value, hop.key.split(":", 1)[1]
    return hop.transport.value, source.hostname


def _rcpt_route(source: MacroSource, scope: MacroScope) -> tuple[str, str] | None:
    if scope.recipient is None:
        return None
    refusal = scope.rejection
    if refusal is not None:
        return "error", refusal.status or str(refusal.code)
    return _mailer(source, scope.recipient.address)


def _rcpt_addr(source: MacroSource, scope: MacroScope) -> str | None:
    if scope.recipient is None:
        return None
    if scope.rejection is not None:
        return " ".join(scope.rejection.lines)
    return str(scope.recipient.address)


_Getter = Callable[[MacroSource, MacroScope], "str | None"]


def _txn(getter: Callable[[MacroSource, Transaction], str | None]) -> _Getter:
    return lambda src, sc: getter(src, sc.txn) if sc.txn is not None else None


def _part(route: tuple[str, str] | None, index: int) -> str | None:
    return route[index] if route is not None else None


def _nonempty(value: str) -> str | None:
    return value or None


def _msg_id(txn: Transaction) -> str | None:
    header = txn.headers.get("Message-ID") if txn.headers is not None else None
    return header.text if header is not None else None


_GETTERS: dict[str, _Getter] = {
    "j": lambda src, sc: src.hostname,
    "_": lambda src, sc: _client_text(sc.session),
    "v": lambda src, sc: f"Mailwright {__version__}",
    "daemon_name": lambda src, sc: sc.session.listener_name,
    "daemon_addr": lambda src, sc: _nonempty(sc.session.local_address),
    "daemon_port": lambda src, sc: str(sc.session.local_port) if sc.session.local_port else None,
    "if_addr": lambda src, sc: _nonempty(sc.session.local_address),
    "client_addr": lambda src, sc: sc.session.client_address or "127.0.0.1",
    "client_name": lambda src, sc: (
        sc.session.client_name
        or ("localhost" if sc.session.is_local else _bracketed(sc.session.client_address))
    ),
    "client_port": lambda src, sc: str(sc.session.client_port),
    "client_ptr": lambda src, sc: sc.session.client_name or "unknown",
    "client_resolve": lambda src, sc: "OK" if sc.session.client_name else "FAIL",
    "tls_version": lambda src, sc: _nonempty(sc.session.tls_version),
    "cipher": lambda src, sc: _nonempty(sc.session.tls_cipher),
    "cipher_bits": lambda src, sc: (
        str(sc.session.tls_cipher_bits) if sc.session.tls_cipher_bits else None
    ),
    "auth_type": lambda src, sc: _nonempty(sc.session.auth_mechanism),
    "auth_authen": lambda src, sc: _nonempty(sc.session.auth_user),
    "auth_ssf": lambda src, sc: "0" if sc.session.auth_mechanism else None,
    "auth_author": _txn(lambda src, t: t.params.auth),
    "i": _txn(lambda src, t: t.queue_id),
    "mail_addr": _txn(lambda src, t: "" if t.sender is None else str(t.sender)),
    "mail_mailer": _txn(lambda src, t: _mailer(src, t.sender)[0]),
    "mail_host": _txn(lambda src, t: _mailer(src, t.sender)[1]),
    "rcpt_addr": _rcpt_addr,
    "rcpt_mailer": lambda src, sc: _part(_rcpt_route(src, sc), 0),
    "rcpt_host": lambda src, sc: _part(_rcpt_route(src, sc), 1),
    "msg_id": _txn(lambda src, t: _msg_id(t)),
    "quarantine": _txn(lambda src, t: t.hold_reason),
}


def known(name: str) -> bool:
    return canonical(name) in _GETTERS


def values(
    names: Sequence[str], source: MacroSource, scope: MacroScope
) -> Iterator[tuple[bytes, bytes]]:
    """(name, value) pairs for the names that have a value in this scope."""
    for name in names:
        getter = _GETTERS.get(canonical(name))
        value = getter(source, scope) if getter is not None else None
        if value is not None:
            yield name.encode("utf-8"), value.encode("utf-8", "surrogateescape")
