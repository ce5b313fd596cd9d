"""End-of-message modifications: header positions, LEADSPC, envelope edits, all or nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwright.core.address import Address
from mailwright.core.envelope import MailParams, Notify, Recipient
from mailwright.core.headers import Header, HeaderList
from mailwright.core.trace import received
from mailwright.policy.hooks import Transaction
from mailwright.policy.milter import codec
from mailwright.policy.milter.codec import OptNegReply, Proto
from mailwright.policy.milter.modify import Edit, LineEndings, ModificationError, own_trace
from mailwright.policy.milter.negotiation import Offer, negotiate
from mailwright.queue.spool import Spool


def options(protocol: int = 0, actions: int = 0x1FF):  # type: ignore[no-untyped-def]
    return negotiate(Offer.for_version(6), OptNegReply(6, actions, protocol), {})


def transaction() -> Transaction:
    trace = received(
        helo="c.test", client_name="", client_address="192.0.2.1", hostname="mx.test",
        protocol="ESMTP", queue_id="Q1", recipient=None,
    )  # fmt: skip
    headers = HeaderList(
        [trace, Header("Subject", b" one"), Header("X-Twice", b" a"), Header("x-twice", b" b")]
    )
    txn = Transaction("Q1", Address("a", "x.test"), MailParams(), raw_sender="<a@x.test>")
    txn.recipients = [Recipient(Address("b", "y.test")), Recipient(Address("c", "y.test"))]
    txn.headers = headers
    txn.body = Spool.from_bytes(b"old body\r\n")
    return txn


def apply(txn: Transaction, *mods: codec.Modification, protocol: int = 0) -> None:
    edit = Edit.of(txn, options(protocol), "t")
    endings = LineEndings()
    for mod in mods:
        if isinstance(mod, codec.ReplaceBody):
            edit.replace_body(mod.data, endings, None)
        else:
            edit.apply(mod)
    edit.finish_body(endings)
    edit.commit(txn)


def names(txn: Transaction) -> list[str]:
    assert txn.headers is not None
    return [h.name for h in txn.headers]


def test_insert_at_zero_goes_above_our_received_and_change_skips_it() -> None:
    txn = transaction()
    assert own_trace(txn.headers or [], "Q1") is (txn.headers or [])[0]
    apply(
        txn,
        codec.InsertHeader(0, b"DKIM-Signature", b"v=1"),
        codec.ChangeHeader(2, b"X-TWICE", b"second"),
        codec.ChangeHeader(0, b"Subject", b"two"),
        codec.AddHeader(b"X-End", b"last"),
    )
    assert names(txn) == ["DKIM-Signature", "Received", "Subject", "X-Twice", "x-twice", "X-End"]
    assert txn.headers is not None
    assert txn.headers[0].value == b" v=1" and txn.headers[4].value == b" second"
    assert txn.headers[2].value == b" two"


def test_change_with_empty_value_deletes_and_missing_occurrence_adds() -> None:
    txn = transaction()
    apply(
        txn,
        codec.ChangeHeader(1, b"x-twice", b""),
        codec.ChangeHeader(1, b"Received", b""),  # our own is not counted: nothing to delete
        codec.ChangeHeader(3, b"Subject", b"new"),
        codec.ChangeHeader(1, b"Missing", b""),
    )
    assert names(txn) == ["Received", "Subject", "x-twice", "Subject"]


def test_leading_space_and_folding() -> None:
    txn = transaction()
    apply(txn, codec.AddHeader(b"X-F", b" a\n\tb\nc"), protocol=Proto.HDR_LEADSPC)
    assert txn.headers is not None
    assert txn.headers[-1].encode() == b"X-F: a\r\n\tb\r\n\tc\r\n"


def test_envelope_edits() -> None:
    txn = transaction()
    apply(
        txn,
        codec.AddRecipient(b"<new@z.test>", b"NOTIFY=NEVER", with_args=True),
        codec.AddRecipient(b"C@Y.TEST"),  # already there
        codec.DeleteRecipient(b"<B@y.test>"),
        codec.ChangeFrom(b"<>", b"BODY=8BITMIME"),
        codec.Quarantine(b"suspicious"),
    )
    assert [str(r.address) for r in txn.recipients] == ["c@y.test", "new@z.test"]
    assert txn.recipients[1].notify == frozenset({Notify.NEVER})
    assert txn.sender is None and txn.params.body == "8BITMIME" and txn.raw_sender == "<>"
    assert txn.hold_reason == "suspicious"


def test_bad_modification_leaves_the_transaction_untouched() -> None:
    txn = transaction()
    before = (list(txn.headers or []), list(txn.recipients), txn.sender)
    edit = Edit.of(txn, options(), "t")
    edit.apply(codec.AddHeader(b"X-Fine", b"yes"))
    edit.replace_body(b"new body", LineEndings(), None)
    with pytest.raises(ModificationError):
        edit.apply(codec.AddRecipient(b"<not an address>"))
    edit.discard_body()
    assert (list(txn.headers or []), list(txn.recipients), txn.sender) == before
    assert b"".join(txn.body.chunks()) == b"old body\r\n"  # type: ignore[union-attr]


def test_body_replacement_needs_chgbody() -> None:
    edit = Edit.of(transaction(), options(actions=0x1FD), "t")
    with pytest.raises(ModificationError):
        edit.replace_body(b"x", LineEndings(), None)


def test_invalid_header_name_is_a_failure() -> None:
    with pytest.raises(ModificationError):
        Edit.of(transaction(), options(), "t").apply(codec.AddHeader(b"Bad Name", b"v"))


@given(st.lists(st.binary(max_size=20), max_size=10))
def test_line_endings_become_crlf_across_packets(pieces: list[bytes]) -> None:
    endings = LineEndings()
    out = b"".join(endings.feed(p) for p in pieces) + endings.close()
    joined = b"".join(pieces)
    expected = joined.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    assert out == expected


@pytest.mark.parametrize(
    ("mod", "needed"),
    [
        (codec.AddHeader(b"X-A", b"1"), codec.Action.ADDHDRS),
        (codec.InsertHeader(0, b"X-A", b"1"), codec.Action.ADDHDRS),
        (codec.ChangeHeader(1, b"Subject", b"x"), codec.Action.CHGHDRS),
        (codec.AddRecipient(b"<d@y.test>"), codec.Action.ADDRCPT),
        (codec.AddRecipient(b"<d@y.test>", b"NOTIFY=NEVER", True), codec.Action.ADDRCPT_PAR),
        (codec.DeleteRecipient(b"<b@y.test>"), codec.Action.DELRCPT),
        (codec.ChangeFrom(b"<z@x.test>"), codec.Action.CHGFROM),
        (codec.ReplaceBody(b"new\r\n"), codec.Action.CHGBODY),
        (codec.Quarantine(b"why"), codec.Action.QUARANTINE),
    ],
)
def test_a_modification_needs_its_negotiated_action(
    mod: codec.Modification, needed: codec.Action
) -> None:
    """Issue 12 item 9: refused (the filter fails), not applied with a warning."""
    txn = transaction()
    edit = Edit.of(txn, options(actions=0x1FF & ~needed), "t")
    with pytest.raises(ModificationError, match=f"without negotiating the {needed.name}"):
        if isinstance(mod, codec.ReplaceBody):
            edit.replace_body(mod.data, LineEndings(), None)
        else:
            edit.apply(mod)
    granted = Edit.of(txn, options(actions=needed), "t")
    if isinstance(mod, codec.ReplaceBody):
        granted.replace_body(mod.data, LineEndings(), None)
        granted.discard_body()
    else:
        granted.apply(mod)
