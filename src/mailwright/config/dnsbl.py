"""The syntax of the ``dnsbl`` settings: zones (``zen.example`` or
``bl.example=127.0.0.2,127.0.0.4/31``) and the reply template (``554 5.7.1 text with
{ip}, {zone} and {txt}``).

Checked when the settings load (``config.schema.DnsblSection``); the check itself is
``policy.dnsbl``. Pure parsing; trusts nothing in the text; ValueError names the problem.
"""

from __future__ import annotations

import ipaddress
import re
import string
from dataclasses import dataclass

from mailwright.core.reply import Reply

DEFAULT_REPLY = "554 5.7.1 Service unavailable; client [{ip}] blocked using {zone}"
FIELDS = frozenset({"ip", "zone", "txt"})
LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")
NOT_LISTED = ipaddress.IPv4Address("127.0.0.1")  # RFC 5782 5: never a listing
REFUSED_NET = ipaddress.IPv4Network("127.255.255.0/24")  # Spamhaus: query refused / error
MAX_TXT = 200  # characters of TXT text put into a reply
# a reversed IPv6 address is 64 characters; a name has at most 253 (RFC 1035, dotted)
MAX_ZONE = 253 - 64 - 1
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_REPLY = re.compile(r"^([45]\d\d)(?:\s+([45]\.\d{1,3}\.\d{1,3}))?\s+(\S.*)$", re.DOTALL)


# ---- zones (pure) ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Zone:
    """One blocklist: its DNS zone and which A answers count as a listing."""

    name: str  # lower case, no final dot
    answers: tuple[ipaddress.IPv4Network, ...] = ()  # empty: 127.0.0.0/8 but 127.0.0.1

    def counts(self, address: ipaddress.IPv4Address) -> bool:
        if address in REFUSED_NET:
            return False
        if self.answers:
            return any(address in net for net in self.answers)
        return address in LOOPBACK_NET and address != NOT_LISTED


def parse_zone(text: str) -> Zone:
    """``zen.example`` or ``bl.example=127.0.0.2,127.0.0.4/31``; ValueError naming the problem."""
    name, equals, answers = text.strip().partition("=")
    zone = zone_name(name)
    if not equals:
        return Zone(zone)
    items = [item.strip() for item in answers.split(",")]
    if not any(items):
        raise ValueError(f"{text!r}: no answer addresses after '='")
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.IPv4Network(item))
        except ValueError:
            raise ValueError(
                f"{text!r}: {item!r} is not an IPv4 address or network (e.g. 127.0.0.2)"
            ) from None
    return Zone(zone, tuple(networks))


def zone_name(text: str) -> str:
    """A zone as an ASCII DNS name in lower case without the final dot; ValueError if not."""
    name = text.strip().lower().removesuffix(".")
    if not name:
        raise ValueError("empty zone name")
    if len(name) > MAX_ZONE:
        raise ValueError(f"{text!r}: zone name longer than {MAX_ZONE} characters")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise ValueError(
                f"{text!r}: not a DNS zone name (labels of letters, digits and '-', "
                "dot-separated, e.g. zen.spamhaus.org)"
            )
    return name


# ---- the reply -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReplyTemplate:
    """``554 5.7.1 text with {ip}, {zone} and {txt}``, checked when the settings are read."""

    code: int
    status: str
    text: str

    @property
    def wants_txt(self) -> bool:
        return any(field == "txt" for _, field, _, _ in string.Formatter().parse(self.text))

    def render(self, ip: str, zone: str, txt: str = "") -> Reply:
        return Reply.of(self.code, self.status, self.text.format(ip=ip, zone=zone, txt=txt))


def parse_reply(text: str) -> ReplyTemplate:
    """``554 5.7.1 text`` or ``554 text`` (status 5.7.1 / 4.7.1); ValueError naming the problem."""
    match = _REPLY.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r}: write a 4xx or 5xx code, optionally a status, then text "
            "(e.g. 554 5.7.1 Service unavailable; client [{ip}] blocked using {zone})"
        )
    code, status, body = int(match[1]), match[2], match[3]
    if status is None:
        status = "5.7.1" if code >= 500 else "4.7.1"
    elif status[0] != str(code)[0]:
        raise ValueError(f"{text!r}: the code {code} and the status {status} disagree")
    try:
        fields = list(string.Formatter().parse(body))
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
    for _, field, spec, conversion in fields:
        if field is None:
            continue
        if field not in FIELDS or spec or conversion:
            raise ValueError(f"{text!r}: unknown field {{{field}}}: use {{ip}}, {{zone}}, {{txt}}")
    return ReplyTemplate(code, status, body)
