"""Fuzz target: the milter codec (``policy/milter/codec.py``) on anything a filter sends.

The input is a byte stream from a filter. ``PacketDecoder`` frames it (with the default
limit and with a small one), whole and in pieces cut where a seed from the input says;
each packet goes through ``decode_response``; the strings in each packet are also
handed to the MTA-side encoders. Checks:

- decoding raises nothing but the codec's ``ProtocolError``;
- framing does not depend on how the stream is cut, and ``needed()`` is 0 exactly when
  a packet is complete;
- a packet is never longer than the limit, and its command is one byte;
- a decoded response encodes back to a packet that decodes to the same response, and
  every modification names the action it needs;
- the MTA's packets (connect, helo, mail, rcpt, header, macros, unknown, body) frame as
  one packet with the values back in their NUL-terminated strings; the encoders refuse
  a NUL in a string with ``ValueError`` and nothing else.
"""

from __future__ import annotations

import random
import sys
import zlib

from _harness import fuzz, instrumented

with instrumented(__name__):
    from mailwright.policy.milter import codec

SMALL_LIMIT = 64


def _frame(chunks: list[bytes], limit: int) -> tuple[list[codec.Packet], bool]:
    """The packets in the stream, and whether it ended in a protocol error."""
    decoder = codec.PacketDecoder(limit)
    packets: list[codec.Packet] = []
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while True:
                needed = decoder.needed()
                packet = decoder.next_packet()
                assert (needed == 0) == (packet is not None), f"needed() {needed} for {packet}"
                if packet is None:
                    break
                assert len(packet.cmd) == 1 and len(packet.data) <= limit
                packets.append(packet)
    except codec.ProtocolError:
        return packets, True
    return packets, False


def _pieces(data: bytes) -> list[bytes]:
    rng = random.Random(zlib.crc32(data))
    cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, 1 + len(data) // 8)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _decode(packet: codec.Packet) -> None:
    try:
        response = codec.decode_response(packet)
    except codec.ProtocolError:
        return
    if not isinstance(response, codec.OptNegReply | codec.Simple | codec.ReplyCode):
        assert codec.required_action(response) in codec.Action
    wire = codec.encode_response(response)
    again, failed = _frame([wire], codec.MAX_RESPONSE)
    assert not failed and len(again) == 1, f"{response} encodes to {wire!r}"
    assert codec.decode_response(again[0]) == response, f"{response} does not round-trip"


def _one_packet(wire: bytes) -> codec.Packet:
    packets, failed = _frame([wire], codec.MAX_DATA)
    assert not failed and len(packets) == 1, f"{wire[:40]!r} is not one packet"
    return packets[0]


def _encoders(strings: list[bytes]) -> None:
    """The MTA's side: values without NUL come back in the packet's strings."""
    a, b, c = ([*strings, b"", b"", b""])[:3]
    try:
        packets = [
            (codec.encode_helo(a), [a]),
            (codec.encode_mail(a, [b, c]), [a, b, c]),
            (codec.encode_rcpt(b, [c]), [b, c]),
            (codec.encode_header(a, b), [a, b]),
            (codec.encode_unknown(c), [c]),
        ]
    except ValueError:
        assert any(b"\0" in s for s in (a, b, c)), "encoder refused a value without NUL"
        return
    for wire, values in packets:
        packet = _one_packet(wire)
        assert codec.split_strings(packet.data, "test") == values
    connect = codec.encode_connect(a, codec.FAMILY_INET, 25, c)
    assert _one_packet(connect).data == a + b"\0" + codec.FAMILY_INET + b"\0\x19" + c + b"\0"
    macros = codec.encode_macros(codec.Stage.HELO, [(a.replace(b"\0", b""), b)])
    assert _one_packet(macros).data[:1] == b"H"
    if a:
        assert _one_packet(codec.encode_body(a)).data == a


def check(data: bytes) -> None:
    for limit in (codec.MAX_RESPONSE, SMALL_LIMIT):
        whole = _frame([data], limit)
        assert _frame(_pieces(data), limit) == whole, "framing depends on the cut"
        assert _frame([data[i : i + 1] for i in range(len(data))], limit) == whole
        for packet in whole[0]:
            _decode(packet)
    for packet in _frame([data], codec.MAX_RESPONSE)[0][:4]:
        strings = packet.data.split(b"\0")
        _encoders([s[:20000] for s in strings[:3]])  # three fit in one packet (MAX_DATA)


if __name__ == "__main__":
    fuzz(check)
    sys.exit(0)
