"""The milter wire format: framing, the MTA's commands and the filter's replies (sans-I/O).

Every packet is ``uint32 length`` (big-endian, counting the command byte),
one command byte and ``length - 1`` data bytes. ``PacketDecoder`` turns a byte
stream into packets; ``encode_*`` builds the MTA's commands; ``decode_response``
turns a filter's packet into a typed ``Response`` (and ``encode_response`` does
the reverse, for test filters and property tests). Never touches a socket.

Trusts nothing it decodes: a zero length, a packet over ``max_size``, a missing
NUL terminator or a field of the wrong size is a ``ProtocolError``. Outgoing
packets never carry more than 65535 data bytes (libmilter's
``MILTER_MAX_DATA_SIZE``: a bigger packet makes it drop the connection).
Reads no settings.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

MAX_DATA = 65535  # largest data part of one packet, both directions (mfdef.h)
MAX_RESPONSE = 1 << 20  # what we accept to read from a filter before calling it broken


class ProtocolError(Exception):
    """The peer broke the protocol (bad framing, bad field, unexpected packet)."""


class Action(IntFlag):
    """SMFIF_*: what the filter may do at end of message (include/libmilter/mfapi.h)."""

    ADDHDRS = 0x001
    CHGBODY = 0x002
    ADDRCPT = 0x004
    DELRCPT = 0x008
    CHGHDRS = 0x010
    QUARANTINE = 0x020
    CHGFROM = 0x040
    ADDRCPT_PAR = 0x080
    SETSYMLIST = 0x100


class Proto(IntFlag):
    """SMFIP_*: steps the filter skips, replies it waives, extras (include/libmilter/mfdef.h)."""

    NOCONNECT = 0x000001
    NOHELO = 0x000002
    NOMAIL = 0x000004
    NORCPT = 0x000008
    NOBODY = 0x000010
    NOHDRS = 0x000020
    NOEOH = 0x000040
    NR_HDR = 0x000080
    NOUNKNOWN = 0x000100
    NODATA = 0x000200
    SKIP = 0x000400
    RCPT_REJ = 0x000800
    NR_CONN = 0x001000
    NR_HELO = 0x002000
    NR_MAIL = 0x004000
    NR_RCPT = 0x008000
    NR_DATA = 0x010000
    NR_UNKN = 0x020000
    NR_EOH = 0x040000
    NR_BODY = 0x080000
    HDR_LEADSPC = 0x100000


class Stage(IntEnum):
    """Macro stages as numbered in the OPTNEG reply's macro lists (SMFIM_*)."""

    CONNECT = 0
    HELO = 1
    ENVFROM = 2
    ENVRCPT = 3
    DATA = 4
    EOM = 5
    EOH = 6

    @property
    def command(self) -> bytes:
        """The command letter this stage's macros precede (the ``D`` packet's first byte)."""
        return _STAGE_COMMANDS[self]


_STAGE_COMMANDS = {
    Stage.CONNECT: b"C",
    Stage.HELO: b"H",
    Stage.ENVFROM: b"M",
    Stage.ENVRCPT: b"R",
    Stage.DATA: b"T",
    Stage.EOM: b"E",
    Stage.EOH: b"N",
}


# address family byte of CONNECT
FAMILY_UNKNOWN = b"U"
FAMILY_UNIX = b"L"
FAMILY_INET = b"4"
FAMILY_INET6 = b"6"


# ---- framing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Packet:
    cmd: bytes  # one byte
    data: bytes


def encode_packet(cmd: bytes, data: bytes = b"") -> bytes:
    if len(cmd) != 1:
        raise ValueError(f"command must be one byte, not {cmd!r}")
    if len(data) > MAX_DATA:
        raise ValueError(f"milter packet data of {len(data)} bytes exceeds {MAX_DATA}")
    return struct.pack(">I", len(data) + 1) + cmd + data


class PacketDecoder:
    """Incremental decoder: ``feed`` bytes, then take complete packets with ``next_packet``."""

    def __init__(self, max_size: int = MAX_RESPONSE) -> None:
        self._buf = bytearray()
        self._max = max_size

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def pending(self) -> int:
        return len(self._buf)

    def needed(self) -> int:
        """How many more bytes complete the next packet (at least 1 when incomplete)."""
        if len(self._buf) < 4:
            return 4 - len(self._buf)
        length: int = struct.unpack_from(">I", self._buf)[0]
        self._check(length)
        return max(0, 4 + length - len(self._buf))

    def next_packet(self) -> Packet | None:
        if len(self._buf) < 4:
            return None
        (length,) = struct.unpack_from(">I", self._buf)
        self._check(length)
        if len(self._buf) < 4 + length:
            return None
        cmd = bytes(self._buf[4:5])
        data = bytes(self._buf[5 : 4 + length])
        del self._buf[: 4 + length]
        return Packet(cmd, data)

    def _check(self, length: int) -> None:
        if length == 0:
            raise ProtocolError("packet of length 0")
        if length - 1 > self._max:
            raise ProtocolError(f"packet of {length} bytes exceeds the limit of {self._max}")


def _cstr(value: bytes) -> bytes:
    if b"\0" in value:
        raise ValueError("a milter string cannot contain NUL")
    return value + b"\0"


def split_strings(data: bytes, what: str) -> list[bytes]:
    """``str...``: NUL-terminated strings back to back; the last must be terminated."""
    if not data:
        return []
    if not data.endswith(b"\0"):
        raise ProtocolError(f"{what}: string not NUL-terminated")
    return data[:-1].split(b"\0")


def _strings(data: bytes, what: str, count: int, optional: int = 0) -> list[bytes]:
    parts = split_strings(data, what)
    if not count - optional <= len(parts) <= count:
        raise ProtocolError(f"{what}: {len(parts)} strings where {count} expected")
    return parts


# ---- MTA -> filter ------------------------------------------------------------------------


def encode_optneg(version: int, actions: int, protocol: int) -> bytes:
    return encode_packet(b"O", struct.pack(">III", version, actions, protocol))


def encode_macros(stage: Stage, pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A ``D`` packet; NULs in values become spaces, pairs that would not fit are left out."""
    data = bytearray(stage.command)
    for name, value in pairs:
        pair = _cstr(name) + _cstr(value.replace(b"\0", b" "))
        if len(data) + len(pair) <= MAX_DATA:
            data += pair
    return encode_packet(b"D", bytes(data))


def encode_connect(hostname: bytes, family: bytes, port: int = 0, address: bytes = b"") -> bytes:
    data = _cstr(hostname) + family
    if family != FAMILY_UNKNOWN:
        data += struct.pack(">H", port) + _cstr(address)
    return encode_packet(b"C", data)


def encode_helo(name: bytes) -> bytes:
    return encode_packet(b"H", _cstr(name))


def encode_mail(sender: bytes, args: Sequence[bytes] = ()) -> bytes:
    return encode_packet(b"M", b"".join(_cstr(x) for x in (sender, *args)))


def encode_rcpt(recipient: bytes, args: Sequence[bytes] = ()) -> bytes:
    return encode_packet(b"R", b"".join(_cstr(x) for x in (recipient, *args)))


def encode_data() -> bytes:
    return encode_packet(b"T")


def encode_header(name: bytes, value: bytes) -> bytes:
    return encode_packet(b"L", _cstr(name) + _cstr(value))


def encode_eoh() -> bytes:
    return encode_packet(b"N")


def encode_body(chunk: bytes) -> bytes:
    if not chunk:
        raise ValueError("an empty body chunk is never sent")
    return encode_packet(b"B", chunk)


def encode_eom() -> bytes:
    return encode_packet(b"E")  # always empty: some filters ignore a last chunk here


def encode_unknown(line: bytes) -> bytes:
    return encode_packet(b"U", _cstr(line))


def encode_abort() -> bytes:
    return encode_packet(b"A")


def encode_quit() -> bytes:
    return encode_packet(b"Q")


def encode_quit_nc() -> bytes:
    return encode_packet(b"K")


# ---- filter -> MTA ------------------------------------------------------------------------


# one-letter replies without data
CONTINUE = b"c"
ACCEPT = b"a"
REJECT = b"r"
TEMPFAIL = b"t"
DISCARD = b"d"
SKIP = b"s"
PROGRESS = b"p"
SHUTDOWN = b"4"
CONN_FAIL = b"f"
SIMPLE_REPLIES = frozenset({CONTINUE, ACCEPT, REJECT, TEMPFAIL, DISCARD, SKIP, PROGRESS, SHUTDOWN})


@dataclass(frozen=True, slots=True)
class OptNegReply:
    version: int
    actions: int
    protocol: int
    macros: dict[int, bytes] = field(default_factory=dict)  # stage number -> name list


@dataclass(frozen=True, slots=True)
class Simple:
    """continue, accept, reject, tempfail, discard, skip, progress, shutdown (``code``)."""

    code: bytes


@dataclass(frozen=True, slots=True)
class ReplyCode:
    text: bytes  # "550 5.7.1 text", lines separated by CRLF


@dataclass(frozen=True, slots=True)
class AddHeader:
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class InsertHeader:
    index: int
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class ChangeHeader:
    index: int
    name: bytes
    value: bytes  # empty: delete


@dataclass(frozen=True, slots=True)
class AddRecipient:
    address: bytes
    args: bytes | None = None  # ESMTP parameters, space separated (ADDRCPT_PAR only)
    with_args: bool = False  # sent as '2' (ADDRCPT_PAR) rather than '+'


@dataclass(frozen=True, slots=True)
class DeleteRecipient:
    address: bytes


@dataclass(frozen=True, slots=True)
class ChangeFrom:
    address: bytes
    args: bytes | None = None


@dataclass(frozen=True, slots=True)
class ReplaceBody:
    data: bytes


@dataclass(frozen=True, slots=True)
class Quarantine:
    reason: bytes


Modification = (
    AddHeader
    | InsertHeader
    | ChangeHeader
    | AddRecipient
    | DeleteRecipient
    | ChangeFrom
    | ReplaceBody
    | Quarantine
)
Response = OptNegReply | Simple | ReplyCode | Modification

# the action bit each modification needs
REQUIRED_ACTION: dict[type, Action] = {
    AddHeader: Action.ADDHDRS,
    InsertHeader: Action.ADDHDRS,
    ChangeHeader: Action.CHGHDRS,
    DeleteRecipient: Action.DELRCPT,
    ChangeFrom: Action.CHGFROM,
    ReplaceBody: Action.CHGBODY,
    Quarantine: Action.QUARANTINE,
}


def required_action(mod: Modification) -> Action:
    if isinstance(mod, AddRecipient):
        return Action.ADDRCPT_PAR if mod.with_args else Action.ADDRCPT
    return REQUIRED_ACTION[type(mod)]


def decode_response(packet: Packet) -> Response:
    """A filter's packet as a typed response; ``ProtocolError`` if it is malformed."""
    cmd, data = packet.cmd, packet.data
    if cmd in SIMPLE_REPLIES:
        if data:
            raise ProtocolError(f"reply {cmd!r} carries {len(data)} unexpected bytes")
        return Simple(cmd)
    decoder = _DECODERS.get(cmd)
    if decoder is None:
        raise ProtocolError(f"unknown reply {cmd!r}")
    return decoder(data)


def _optneg(data: bytes) -> OptNegReply:
    if len(data) < 12:
        raise ProtocolError(f"OPTNEG reply of {len(data)} bytes, at least 12 expected")
    version, actions, protocol = struct.unpack_from(">III", data)
    macros: dict[int, bytes] = {}
    rest = data[12:]
    while rest:
        if len(rest) < 5:
            raise ProtocolError("truncated macro list in OPTNEG reply")
        (stage,) = struct.unpack_from(">I", rest)
        end = rest.find(b"\0", 4)
        if end < 0:
            raise ProtocolError("macro list in OPTNEG reply not NUL-terminated")
        macros[stage] = rest[4:end]
        rest = rest[end + 1 :]
    return OptNegReply(version, actions, protocol, macros)


def _replycode(data: bytes) -> ReplyCode:
    (text,) = _strings(data, "REPLYCODE", 1)
    return ReplyCode(text)


def _indexed(data: bytes, what: str) -> tuple[int, bytes, bytes]:
    if len(data) < 4:
        raise ProtocolError(f"{what}: missing index")
    (index,) = struct.unpack_from(">I", data)
    name, value = _strings(data[4:], what, 2)
    return index, name, value


def _addheader(data: bytes) -> AddHeader:
    name, value = _strings(data, "ADDHEADER", 2)
    return AddHeader(name, value)


def _insheader(data: bytes) -> InsertHeader:
    return InsertHeader(*_indexed(data, "INSHEADER"))


def _chgheader(data: bytes) -> ChangeHeader:
    return ChangeHeader(*_indexed(data, "CHGHEADER"))


def _addrcpt(data: bytes) -> AddRecipient:
    (address,) = _strings(data, "ADDRCPT", 1)
    return AddRecipient(address)


def _addrcpt_par(data: bytes) -> AddRecipient:
    parts = _strings(data, "ADDRCPT_PAR", 2, optional=1)
    return AddRecipient(parts[0], parts[1] if len(parts) > 1 else None, with_args=True)


def _delrcpt(data: bytes) -> DeleteRecipient:
    (address,) = _strings(data, "DELRCPT", 1)
    return DeleteRecipient(address)


def _chgfrom(data: bytes) -> ChangeFrom:
    parts = _strings(data, "CHGFROM", 2, optional=1)
    return ChangeFrom(parts[0], parts[1] if len(parts) > 1 else None)


def _quarantine(data: bytes) -> Quarantine:
    (reason,) = _strings(data, "QUARANTINE", 1)
    return Quarantine(reason)


_DECODERS: dict[bytes, Callable[[bytes], Response]] = {
    b"O": _optneg,
    b"y": _replycode,
    b"h": _addheader,
    b"i": _insheader,
    b"m": _chgheader,
    b"+": _addrcpt,
    b"2": _addrcpt_par,
    b"-": _delrcpt,
    b"e": _chgfrom,
    b"b": ReplaceBody,
    b"q": _quarantine,
}


def encode_response(response: Response) -> bytes:
    """The filter side of the wire, for test filters and round-trip tests."""
    if isinstance(response, Simple):
        return encode_packet(response.code)
    if isinstance(response, OptNegReply):
        data = struct.pack(">III", response.version, response.actions, response.protocol)
        for stage, names in response.macros.items():
            data += struct.pack(">I", stage) + _cstr(names)
        return encode_packet(b"O", data)
    if isinstance(response, ReplyCode):
        return encode_packet(b"y", _cstr(response.text))
    if isinstance(response, AddHeader):
        return encode_packet(b"h", _cstr(response.name) + _cstr(response.value))
    if isinstance(response, InsertHeader | ChangeHeader):
        cmd = b"i" if isinstance(response, InsertHeader) else b"m"
        head = struct.pack(">I", response.index)
        return encode_packet(cmd, head + _cstr(response.name) + _cstr(response.value))
    if isinstance(response, AddRecipient):
        if not response.with_args:
            return encode_packet(b"+", _cstr(response.address))
        tail = _cstr(response.args) if response.args is not None else b""
        return encode_packet(b"2", _cstr(response.address) + tail)
    if isinstance(response, DeleteRecipient):
        return encode_packet(b"-", _cstr(response.address))
    if isinstance(response, ChangeFrom):
        tail = _cstr(response.args) if response.args is not None else b""
        return encode_packet(b"e", _cstr(response.address) + tail)
    if isinstance(response, ReplaceBody):
        return encode_packet(b"b", response.data)
    return encode_packet(b"q", _cstr(response.reason))
