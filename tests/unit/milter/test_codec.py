"""Property tests of the milter codec: framing, every reply round-trips, garbage is refused."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwright.policy.milter import codec
from mailwright.policy.milter.codec import (
    MAX_DATA,
    Packet,
    PacketDecoder,
    ProtocolError,
    Stage,
    decode_response,
    encode_response,
)

cstr = st.binary(max_size=200).map(lambda b: b.replace(b"\0", b""))
u32 = st.integers(min_value=0, max_value=2**32 - 1)

responses = st.one_of(
    st.sampled_from(sorted(codec.SIMPLE_REPLIES)).map(codec.Simple),
    st.builds(codec.ReplyCode, cstr),
    st.builds(codec.AddHeader, cstr, cstr),
    st.builds(codec.InsertHeader, u32, cstr, cstr),
    st.builds(codec.ChangeHeader, u32, cstr, cstr),
    st.builds(codec.AddRecipient, cstr),
    st.builds(codec.AddRecipient, cstr, st.none() | cstr, st.just(True)),
    st.builds(codec.DeleteRecipient, cstr),
    st.builds(codec.ChangeFrom, cstr, st.none() | cstr),
    st.builds(codec.ReplaceBody, st.binary(max_size=3000)),
    st.builds(codec.Quarantine, cstr),
    st.builds(
        codec.OptNegReply, u32, u32, u32, st.dictionaries(st.integers(0, 6), cstr, max_size=7)
    ),
)


def decode_all(stream: bytes, pieces: list[int]) -> list[Packet]:
    decoder = PacketDecoder()
    out: list[Packet] = []
    pos = 0
    for size in [*pieces, len(stream)]:
        decoder.feed(stream[pos : pos + size])
        pos += size
        while (packet := decoder.next_packet()) is not None:
            out.append(packet)
    assert decoder.pending == 0
    return out


@given(st.lists(responses, max_size=8), st.lists(st.integers(0, 50), max_size=20))
def test_responses_round_trip_through_any_split_of_the_stream(
    items: list[codec.Response], pieces: list[int]
) -> None:
    stream = b"".join(encode_response(r) for r in items)
    decoded = [decode_response(p) for p in decode_all(stream, pieces)]
    assert decoded == items


@given(st.sampled_from(list(Stage)), st.lists(st.tuples(cstr, cstr), max_size=10))
def test_macro_packet_layout(stage: Stage, pairs: list[tuple[bytes, bytes]]) -> None:
    (packet,) = decode_all(codec.encode_macros(stage, pairs), [])
    assert packet.cmd == b"D" and packet.data[:1] == stage.command
    assert codec.split_strings(packet.data[1:], "D") == [x for pair in pairs for x in pair]


@given(cstr, cstr, st.integers(0, 65535))
def test_connect_packet_layout(host: bytes, addr: bytes, port: int) -> None:
    (packet,) = decode_all(codec.encode_connect(host, codec.FAMILY_INET, port, addr), [])
    assert packet.data == host + b"\0" + b"4" + struct.pack(">H", port) + addr + b"\0"
    (unknown,) = decode_all(codec.encode_connect(host, codec.FAMILY_UNKNOWN), [])
    assert unknown.data == host + b"\0U"


@given(st.binary(min_size=1, max_size=MAX_DATA))
def test_body_chunks_up_to_65535_bytes(chunk: bytes) -> None:
    raw = codec.encode_body(chunk)
    assert struct.unpack(">I", raw[:4])[0] == len(chunk) + 1 and raw[4:5] == b"B"


def test_worked_example_from_the_reference() -> None:
    expected = bytes.fromhex("0000000d4f00000006000001ff001fffff")
    assert codec.encode_optneg(6, 0x1FF, 0x1FFFFF) == expected
    raw = bytes.fromhex("0000000d4f00000006000001ff00000400")
    (packet,) = decode_all(raw, [])
    assert decode_response(packet) == codec.OptNegReply(6, 0x1FF, 0x400)


def test_packet_too_big_is_refused_both_ways() -> None:
    with pytest.raises(ValueError):
        codec.encode_body(b"x" * (MAX_DATA + 1))
    decoder = PacketDecoder(max_size=100)
    decoder.feed(struct.pack(">I", 102) + b"b")
    with pytest.raises(ProtocolError):
        decoder.next_packet()
    zero = PacketDecoder()
    zero.feed(b"\0\0\0\0")
    with pytest.raises(ProtocolError):
        zero.next_packet()


@given(st.binary(max_size=40))
def test_garbage_is_a_protocol_error_or_a_valid_response(data: bytes) -> None:
    for cmd in (b"c", b"y", b"h", b"i", b"m", b"+", b"2", b"-", b"e", b"q", b"O", b"Z", b"\0"):
        try:
            decoded = decode_response(Packet(cmd, data))
        except ProtocolError:
            continue
        assert decode_response(Packet(cmd, encode_response(decoded)[5:])) == decoded


@pytest.mark.parametrize(
    ("cmd", "data"),
    [
        (b"c", b"x"),  # continue carries no data
        (b"y", b"550 no terminator"),
        (b"h", b"only-name\0"),
        (b"i", b"\0\0"),  # index cut short
        (b"O", b"\0\0\0\6"),  # OPTNEG too short
        (b"O", b"\0\0\0\6\0\0\0\0\0\0\0\0\0\0\0\0{x}"),  # macro list not terminated
        (b"X", b""),  # unknown reply
    ],
)
def test_malformed_replies(cmd: bytes, data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_response(Packet(cmd, data))
