"""The access table, in the spirit of Sendmail's access db: per client, sender and recipient.

One ``key value`` entry per line (``#`` comments), keys tagged:

- ``Connect:`` an IP address, a network (``192.0.2.0/24``, ``2001:db8::/32``, or
  Sendmail's ``192.0.2`` octet prefix), a host name or a domain (the client's
  verified host name and its parent domains);
- ``From:`` / ``To:`` an address ``user@example.com``, a domain ``example.com``
  (also its subdomains), a local part ``user@`` (any domain); ``From:<>`` is the
  null sender.

Values: ``OK`` (accept; stop looking), ``RELAY`` (Connect: the client may relay;
To: mail to it may be relayed; From: the same as OK, it never grants relaying),
``REJECT`` (``550 5.7.1 ... Access denied``; ``554`` at connect), ``DISCARD``
(accept and drop the whole message), ``ERROR:5.7.1:text`` or ``ERROR:550 5.7.1
text`` (that reply), ``TEMPFAIL:text`` (``451 4.7.1 text``; ``421`` at connect).

The most specific entry wins: for a client, the exact address, then the host
name, then networks longest prefix first, then parent domains longest first;
for an address, ``user@domain``, then the domain and its parents (longest
first), then ``user@``. Keys are case-insensitive; a trailing dot is ignored.
The file is reread when it changes (``core.watchedfile``); problems are
``file:line: problem`` and the line is skipped. Trusts the client address from
the socket. Local submissions (the ``sendmail`` command line) are not checked,
as in Sendmail. Settings: ``access.table``, ``hostname``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mailwright.core.address import Address, AddressError, parse_domain
from mailwright.core.envelope import Recipient
from mailwright.core.reply import Reply
from mailwright.core.watchedfile import WatchedFile
from mailwright.policy.hooks import Hook, SessionInfo, Transaction
from mailwright.routing.table import TableError, read_table

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

TAGS = ("connect", "from", "to")
_ERROR_DSN = re.compile(r"^([45])\.\d{1,3}\.\d{1,3}$")
_ERROR_CODE = re.compile(r"^([45])\d\d$")
_OCTETS = re.compile(r"^\d{1,3}(\.\d{1,3}){0,2}$")


class Action(StrEnum):
    OK = "OK"
    RELAY = "RELAY"
    REJECT = "REJECT"
    DISCARD = "DISCARD"
    ERROR = "ERROR"
    TEMPFAIL = "TEMPFAIL"


@dataclass(frozen=True, slots=True)
class Rule:
    tag: str  # connect, from, to
    key: str  # normalised
    action: Action
    reply: Reply | None  # ERROR and TEMPFAIL
    line: int
    text: str  # the entry as written, for ``access test``

    def __str__(self) -> str:
        return f"line {self.line}: {self.text}"


class AccessTable:
    """Parsed rules with the lookups of the module docstring."""

    def __init__(self, rules: list[Rule] | None = None) -> None:
        self.exact: dict[tuple[str, str], Rule] = {}
        self.networks: list[tuple[Network, Rule]] = []
        for rule in rules or []:
            if rule.tag == "connect" and "/" in rule.key:
                self.networks.append((ipaddress.ip_network(rule.key), rule))
            else:
                self.exact.setdefault((rule.tag, rule.key), rule)
        self.networks.sort(key=lambda item: -item[0].prefixlen)

    def __len__(self) -> int:
        return len(self.exact) + len(self.networks)

    # ---- lookups -----------------------------------------------------------------------
    def connect(self, ip: str, host: str = "") -> Rule | None:
        address = _ip(ip)
        if address is not None and (rule := self.exact.get(("connect", str(address)))):
            return rule
        name = host.lower().rstrip(".")
        if name and (rule := self.exact.get(("connect", name))):
            return rule
        if address is not None:
            for network, rule in self.networks:
                if address.version == network.version and address in network:
                    return rule
        for parent in _parents(name)[1:]:
            if rule := self.exact.get(("connect", parent)):
                return rule
        return None

    def address(self, tag: str, address: Address | None) -> Rule | None:
        for key in address_keys(address):
            if rule := self.exact.get((tag, key)):
                return rule
        return None


def address_keys(address: Address | None) -> list[str]:
    """The keys tried for an address, most specific first."""
    if address is None:
        return ["<>"]
    local = address.local.lower()
    if not address.domain:
        return [local, f"{local}@"]
    return [f"{local}@{address.domain.lower()}", *_parents(address.domain), f"{local}@"]


def _parents(domain: str) -> list[str]:
    """``a.b.c`` -> ``a.b.c``, ``b.c``, ``c`` (label by label; literals stay whole)."""
    domain = domain.lower().rstrip(".")
    if not domain:
        return []
    if domain.startswith("["):
        return [domain]
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.removeprefix("IPv6:").strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


# ---- parsing ---------------------------------------------------------------------------
def parse_key(text: str) -> tuple[str, str]:
    """``Tag:key`` -> (tag, normalised key); ``ValueError`` naming the problem."""
    tag, colon, key = text.partition(":")
    tag = tag.lower()
    if not colon or tag not in TAGS:
        raise ValueError(f"{text!r}: a key starts with Connect:, From: or To:")
    if not key:
        raise ValueError(f"{text!r}: nothing after {tag.capitalize()}:")
    if tag == "connect":
        return tag, _connect_key(key)
    return tag, _address_key(tag, key)


def _connect_key(key: str) -> str:
    if "/" in key:
        try:
            return str(ipaddress.ip_network(key, strict=False))
        except ValueError:
            raise ValueError(f"{key!r} is not a network (address/prefix)") from None
    ip = _ip(key)
    if ip is not None:
        return str(ip)
    if _OCTETS.match(key):  # Sendmail's "192.0.2" means 192.0.2.0/24
        octets = [int(o) for o in key.split(".")]
        if any(o > 255 for o in octets):
            raise ValueError(f"{key!r} is not an address prefix")
        padded = octets + [0] * (4 - len(octets))
        return f"{'.'.join(map(str, padded))}/{8 * len(octets)}"
    return _domain(key)


def _address_key(tag: str, key: str) -> str:
    if key == "<>":
        if tag != "from":
            raise ValueError("<> (the null sender) is a From: key only")
        return key
    local, at, domain = key.rpartition("@")
    if not at:
        return _domain(key)
    if not local:
        raise ValueError(f"{key!r}: write a domain without @, or user@ for a local part")
    if any(c.isspace() or c in "<>" for c in local):
        raise ValueError(f"{key!r}: invalid local part")
    return f"{local.lower()}@{_domain(domain)}" if domain else f"{local.lower()}@"


def _domain(text: str) -> str:
    try:
        return parse_domain(text.rstrip("."), utf8=True)
    except AddressError as exc:
        raise ValueError(f"{text!r}: {exc}") from None


def parse_value(text: str, tag: str) -> tuple[Action, Reply | None]:
    word, colon, rest = text.partition(":")
    try:
        action = Action(word.strip().upper())
    except ValueError:
        raise ValueError(
            f"{text!r}: use OK, RELAY, REJECT, DISCARD, ERROR:... or TEMPFAIL:..."
        ) from None
    if action is Action.ERROR:
        if not colon or not rest.strip():
            raise ValueError("ERROR needs a reply: ERROR:5.7.1:text or ERROR:550 5.7.1 text")
        return action, _error_reply(rest.strip().strip('"'))
    if action is Action.TEMPFAIL:
        reason = rest.strip().strip('"') or "Temporary failure, try again later"
        return action, Reply.of(421 if tag == "connect" else 451, "4.7.1", reason)
    if colon:
        raise ValueError(f"{text!r}: {action.value} takes no text")
    return action, None


def _error_reply(text: str) -> Reply:
    # "5.7.1:text" (Sendmail) or "550 5.7.1 text" / "550 text"
    first, colon, rest = text.partition(":")
    if colon and _ERROR_DSN.match(first.strip()):
        status = first.strip()
        return Reply.of(550 if status[0] == "5" else 451, status, rest.strip() or "Access denied")
    parts = text.split(None, 2)
    if not parts or not _ERROR_CODE.match(parts[0]):
        raise ValueError(f"{text!r}: start with a status (5.7.1:text) or a code (550 ...)")
    code = int(parts[0])
    if len(parts) > 1 and _ERROR_DSN.match(parts[1]):
        if parts[1][0] != parts[0][0]:
            raise ValueError(f"{text!r}: the code and the status disagree")
        return Reply.of(code, parts[1], parts[2] if len(parts) > 2 else "Access denied")
    status = "5.7.1" if code >= 500 else "4.7.1"
    return Reply.of(code, status, text[len(parts[0]) :].strip() or "Access denied")


def parse_rules(path: Path) -> tuple[list[Rule], list[TableError]]:
    lines, errors = read_table(path)
    rules: list[Rule] = []
    seen: dict[tuple[str, str], int] = {}
    for entry in lines:
        try:
            tag, key = parse_key(entry.key)
            action, reply = parse_value(entry.value, tag)
        except ValueError as exc:
            errors.append(TableError(str(path), entry.number, str(exc)))
            continue
        if (tag, key) in seen:
            problem = f"{entry.key!r} again (first on line {seen[tag, key]}); ignored"
            errors.append(TableError(str(path), entry.number, problem))
            continue
        seen[tag, key] = entry.number
        rules.append(Rule(tag, key, action, reply, entry.number, f"{entry.key} {entry.value}"))
    return rules, sorted(errors, key=lambda e: e.line)


def read_access(path: Path) -> tuple[AccessTable, list[TableError]]:
    rules, errors = parse_rules(path)
    return AccessTable(rules), errors


def watch(path: Path) -> WatchedFile[AccessTable]:
    return WatchedFile(path, read_access, AccessTable())


# ---- the policy hook -------------------------------------------------------------------
def access_denied(what: str) -> Reply:
    return Reply.of(550, "5.7.1", f"{what}... Access denied")


class AccessControl(Hook):
    """Applies ``Connect:``, ``From:`` and ``To:`` entries (RELAY for To: is ``policy.relay``'s)."""

    name = "access"

    def __init__(self, table: WatchedFile[AccessTable], hostname: str) -> None:
        self.table = table
        self.hostname = hostname
        self._discarding: set[str] = set()  # sessions whose client is DISCARDed

    async def connect(self, session: SessionInfo) -> Reply | None:
        if session.is_local:
            return None
        rule = self.table.current().connect(session.client_address, session.client_name)
        if rule is None or rule.action is Action.OK:
            return None
        if rule.action is Action.RELAY:
            session.trusted_relay = True
            return None
        if rule.action is Action.DISCARD:
            self._discarding.add(session.session_id)
            return None
        if rule.action is Action.REJECT:
            return Reply.of(554, "5.7.1", f"{self.hostname} Access denied")
        assert rule.reply is not None
        # a greeting is 220, 421 or 554 with the host name first (RFC 5321 3.1, 4.2)
        code = 554 if rule.reply.permanent else 421
        return Reply.of(code, rule.reply.status, f"{self.hostname} {rule.reply.text}")

    async def mail(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        if session.is_local:  # the sendmail command line: as Sendmail, no access checks
            return None
        if session.session_id in self._discarding:
            txn.discard = True
        rule = self.table.current().address("from", txn.sender)
        shown = "<>" if txn.sender is None else f"<{txn.sender}>"
        return self._apply(rule, shown, txn)

    async def rcpt(
        self,
        session: SessionInfo,
        txn: Transaction,
        recipient: Recipient,
        raw_params: list[str],
    ) -> Reply | None:
        if session.is_local:
            return None
        address = recipient.address
        rule = self.table.current().address("to", address)
        return self._apply(rule, f"<{address}>", txn)

    @staticmethod
    def _apply(rule: Rule | None, shown: str, txn: Transaction) -> Reply | None:
        if rule is None or rule.action in (Action.OK, Action.RELAY):
            return None
        if rule.action is Action.DISCARD:
            txn.discard = True
            return None
        if rule.action is Action.REJECT:
            return access_denied(shown)
        return rule.reply

    async def close(self, session: SessionInfo) -> None:
        self._discarding.discard(session.session_id)
