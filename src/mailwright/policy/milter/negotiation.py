"""Option negotiation: what we offer a filter, checking its answer, and what may be sent after.

We offer what Sendmail offers for the configured protocol version (2, 3, 4 or 6,
like Postfix's ``milter_protocol``), ``RCPT_REJ`` included for version 6: a
filter that asks for it is also shown the recipients the MTA itself refused.
The filter's answer must be version 2..ours and ask only for offered bits, else
the filter counts as failed. The resulting ``Options`` say, per step, whether
to send it at all (``NO*`` bits, version) and whether to wait for a reply
(``NR_*`` bits), and which macros to send per stage (the filter's own lists
from the OPTNEG reply replace the configured ones when it was granted
``SETSYMLIST``). Sans-I/O; reads no settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from mailwright.policy.milter.codec import Action, OptNegReply, Proto, ProtocolError, Stage

SUPPORTED_VERSIONS = (2, 3, 4, 6)
_V2_PROTO = 0x7F  # the seven NO* bits CONNECT..EOH
_OFFERS: dict[int, tuple[int, int]] = {
    2: (0x3F, _V2_PROTO),
    3: (0x3F, _V2_PROTO | Proto.NOUNKNOWN),
    4: (0x3F, _V2_PROTO | Proto.NOUNKNOWN | Proto.NODATA),
    6: (0x1FF, 0x1FFFFF),
}


class NegotiationError(ProtocolError):
    """The filter's OPTNEG answer is unacceptable."""


@dataclass(frozen=True, slots=True)
class Offer:
    version: int
    actions: int
    protocol: int

    @classmethod
    def for_version(cls, version: int) -> Offer:
        if version not in _OFFERS:
            raise ValueError(f"milter protocol version {version} is not one of 2, 3, 4, 6")
        actions, protocol = _OFFERS[version]
        return cls(version, actions, int(protocol))


class Step(Enum):
    """A command that carries a verdict; value = (skip bit, no-reply bit, first version)."""

    CONNECT = (Proto.NOCONNECT, Proto.NR_CONN, 2)
    HELO = (Proto.NOHELO, Proto.NR_HELO, 2)
    MAIL = (Proto.NOMAIL, Proto.NR_MAIL, 2)
    RCPT = (Proto.NORCPT, Proto.NR_RCPT, 2)
    DATA = (Proto.NODATA, Proto.NR_DATA, 4)
    HEADER = (Proto.NOHDRS, Proto.NR_HDR, 2)
    EOH = (Proto.NOEOH, Proto.NR_EOH, 2)
    BODY = (Proto.NOBODY, Proto.NR_BODY, 2)
    UNKNOWN = (Proto.NOUNKNOWN, Proto.NR_UNKN, 3)
    EOM = (Proto(0), Proto(0), 2)


# macro stages and the version that first carries them (Postfix: DATA v4, EOH v6)
_MACRO_VERSION = {
    Stage.CONNECT: 2,
    Stage.HELO: 2,
    Stage.ENVFROM: 2,
    Stage.ENVRCPT: 2,
    Stage.DATA: 4,
    Stage.EOH: 6,
    Stage.EOM: 2,
}

_SPLIT = re.compile(r"[\s,]+")


def parse_macro_list(text: str | bytes) -> tuple[str, ...]:
    """``"j {client_addr}"`` or ``"j, {client_addr}"`` -> names."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return tuple(name for name in _SPLIT.split(text) if name)


@dataclass(frozen=True, slots=True)
class Options:
    """What was agreed with one filter."""

    version: int
    actions: Action
    protocol: Proto
    macros: Mapping[Stage, tuple[str, ...]] = field(default_factory=dict)

    def sends(self, step: Step) -> bool:
        skip, _, since = step.value
        return self.version >= since and not (self.protocol & skip)

    def waits(self, step: Step) -> bool:
        _, no_reply, _ = step.value
        return not (self.protocol & no_reply)

    def sends_macros(self, stage: Stage) -> bool:
        return self.version >= _MACRO_VERSION[stage]

    def macro_names(self, stage: Stage) -> tuple[str, ...]:
        return self.macros.get(stage, ())

    @property
    def leading_space(self) -> bool:
        return bool(self.protocol & Proto.HDR_LEADSPC)

    @property
    def rcpt_rejected(self) -> bool:
        """The filter wants the recipients the MTA refused too (``SMFIP_RCPT_REJ``)."""
        return bool(self.protocol & Proto.RCPT_REJ)

    @property
    def skip(self) -> bool:
        return bool(self.protocol & Proto.SKIP)

    def allows(self, action: Action) -> bool:
        return bool(self.actions & action)


def negotiate(
    offer: Offer, reply: OptNegReply, configured: Mapping[Stage, Sequence[str]]
) -> Options:
    """Check the filter's answer against our offer; ``NegotiationError`` if it is unacceptable."""
    if not 2 <= reply.version <= offer.version:
        raise NegotiationError(
            f"filter speaks protocol version {reply.version}, we offered 2..{offer.version}"
        )
    extra_actions = reply.actions & ~offer.actions
    if extra_actions:
        raise NegotiationError(f"filter asks for actions 0x{extra_actions:x} we did not offer")
    extra_proto = reply.protocol & ~offer.protocol
    if extra_proto:
        raise NegotiationError(f"filter asks for protocol bits 0x{extra_proto:x} not offered")
    macros = {stage: tuple(names) for stage, names in configured.items()}
    if reply.actions & Action.SETSYMLIST:
        for number, names in reply.macros.items():
            try:
                macros[Stage(number)] = parse_macro_list(names)
            except ValueError:
                raise NegotiationError(f"macro list for unknown stage {number}") from None
    return Options(reply.version, Action(reply.actions), Proto(reply.protocol), macros)
