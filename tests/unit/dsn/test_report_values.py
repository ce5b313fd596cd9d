"""Values from strangers in a report: xtext round trips, UTF-8, injection, line lengths."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mailwright.core.address import Address
from mailwright.core.delivery import DeliveryRecipient, DeliveryResult, Outcome
from mailwright.core.envelope import MailParams, Notify, Recipient
from mailwright.core.reply import Reply
from mailwright.dsn import (
    Action,
    Diagnostic,
    RecipientReport,
    ReportKind,
    build_report,
    remote_mta_name,
    summary,
)
from mailwright.queue.store import NewMessage, RecipientState, StoredRecipient
from mailwright.smtp.command import parse_mail, parse_rcpt
from mailwright.smtp.extensions import Extensions
from tests.unit.dsn.builders import ARRIVED, HOST, NOW, make_original, original_headers, rcpt
from tests.unit.dsn.reading import parse, raw_parts, report_bytes, status_blocks, text_part


def failure(original_recipients: list[Recipient], **kwargs: Any) -> NewMessage:
    original = make_original(original_recipients, **kwargs)
    lines = [
        RecipientReport.from_recipient(
            r,
            Action.FAILED,
            "5.1.1",
            remote_mta="mx.example.org [192.0.2.1]",
            diagnostic=Diagnostic("smtp", f"550 5.1.1 <{r.address}>... User unknown"),
        )
        for r in original_recipients
    ]
    report = build_report(original, ReportKind.FAILURE, lines, reporting_mta=HOST, now=NOW)
    assert report is not None
    return report


def test_envid_and_orcpt_round_trip_through_xtext() -> None:
    ext = Extensions.everything()
    sender, params, _, _ = parse_mail("FROM:<alice@example.com> RET=HDRS ENVID=QQ+2B1+3Dx", ext)
    recipient, _, _ = parse_rcpt(
        "TO:<bob@example.org> NOTIFY=FAILURE ORCPT=rfc822;Bob+2Bfigures@Example.org", ext, False
    )
    assert params.envid == "QQ+1=x"
    report = failure([recipient], params=params, sender=sender)
    per_message, block = status_blocks(report)
    assert per_message["Original-Envelope-Id"] == "QQ+1=x"
    assert block["Original-Recipient"] == "rfc822;Bob+figures@Example.org"


def test_control_characters_in_envid_and_orcpt_stay_xtext() -> None:
    ext = Extensions.everything()
    _, params, _, _ = parse_mail("FROM:<alice@example.com> ENVID=a+0D+0ABcc:+20evil", ext)
    recipient, _, _ = parse_rcpt("TO:<bob@example.org> ORCPT=rfc822;x+0D+0AX-Evil:+201", ext, False)
    report = failure([recipient], params=params)
    per_message, block = status_blocks(report)
    assert per_message["Original-Envelope-Id"] == "a+0D+0ABcc:+20evil"
    assert block["Original-Recipient"] == "rfc822;x+0D+0AX-Evil:+201"
    assert "Bcc" not in per_message and "X-Evil" not in block


def test_a_reply_cannot_inject_fields_or_lines() -> None:
    bob = rcpt("bob@example.org")
    evil = Diagnostic("smtp", "550 5.1.1 gone\r\nAction: delivered\r\n\r\nX-Evil: 1")
    line = RecipientReport.from_recipient(
        bob, Action.FAILED, "5.1.1", remote_mta="mx\r\nX-Evil: 2 [192.0.2.1]", diagnostic=evil
    )
    report = build_report(
        make_original([bob]), ReportKind.FAILURE, [line], reporting_mta=HOST, now=NOW
    )
    assert report is not None
    blocks = status_blocks(report)
    assert len(blocks) == 2
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 gone  Action: delivered    X-Evil: 1"
    assert all("X-Evil" not in b for b in blocks)
    assert "X-Evil" not in parse(report)


def generated_lines(report: NewMessage) -> list[bytes]:
    """Every line the report generated itself (everything but the returned message)."""
    data = report_bytes(report)
    returned = raw_parts(report)[2].content
    head, _, tail = data.partition(returned)
    return (head + tail).split(b"\r\n")


def test_crlf_everywhere_and_no_line_over_998_octets() -> None:
    bob = rcpt("bob@example.org")
    long_word = "x" * 3000
    long_text = " ".join(["word"] * 600)
    diagnostics = [Diagnostic("smtp", f"550 5.1.1 {long_word}"), Diagnostic("smtp", long_text)]
    lines = [
        RecipientReport.from_recipient(
            bob, Action.FAILED, "5.1.1", remote_mta="mx.example.org", diagnostic=d
        )
        for d in diagnostics
    ]
    original = make_original([bob], params=MailParams(envid="e" * 100))
    report = build_report(original, ReportKind.FAILURE, lines, reporting_mta=HOST, now=NOW)
    assert report is not None
    data = report_bytes(report)
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    for line in generated_lines(report):
        assert len(line) <= 998
    blocks = status_blocks(report)
    # folding keeps the words; a word longer than a line is cut with a space
    assert blocks[2]["Diagnostic-Code"] == f"smtp; {long_text}"
    assert blocks[1]["Diagnostic-Code"].replace(" ", "") == f"smtp;550{'5.1.1'}{long_word}"
    assert long_word in text_part(report).replace("\r\n    ", "").replace("\r\n", "")


def test_smtputf8_original_gives_global_types() -> None:
    sender = Address("jörg", "bücher.example")
    recipient = rcpt("bob@example.org", orcpt="utf-8;b\u00f6b@example.org")
    other = rcpt("zoë@例え.jp")
    report = failure(
        [recipient, other],
        sender=sender,
        params=MailParams(smtputf8=True, envid="ïd"),
        headers=original_headers("Grüße aus Köln"),
        body="Grüße\r\n".encode(),
    )
    assert report.envelope.params.smtputf8
    assert report.envelope.recipients[0].address == sender
    msg = parse(report)
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain",
        "message/global-delivery-status",
        "message/global",
    ]
    assert "jörg@bücher.example" in report_bytes(report).decode("utf-8")
    per_message, bob, zoe = status_blocks(report)
    assert per_message["Original-Envelope-Id"] == "ïd"
    assert per_message["X-Mailwright-Sender"] == "utf-8; jörg@bücher.example"
    assert bob["Original-Recipient"] == "utf-8;böb@example.org"
    assert bob["Final-Recipient"] == "rfc822; bob@example.org"
    assert zoe["Final-Recipient"] == "utf-8; zoë@例え.jp"
    assert "<zoë@例え.jp>: delivery failed" in text_part(report)
    returned = raw_parts(report)[2].content
    assert returned.decode("utf-8").endswith(
        "Subject: Grüße aus Köln\r\n" + "Message-ID: <figures.42@example.com>\r\n\r\nGrüße\r\n"
    )


def test_smtputf8_delay_report_returns_global_headers() -> None:
    bob = rcpt("bob@example.org")
    original = make_original([bob], params=MailParams(smtputf8=True))
    line = RecipientReport.from_recipient(bob, Action.DELAYED, "4.4.1")
    report = build_report(original, ReportKind.DELAY, [line], reporting_mta=HOST, now=NOW)
    assert report is not None
    kinds = [p.get_content_type() for p in parse(report).iter_parts()]
    assert kinds == ["text/plain", "message/global-delivery-status", "message/global-headers"]


def test_utf8_reply_text_in_an_ascii_report() -> None:
    bob = rcpt("bob@example.org")
    line = RecipientReport.from_recipient(
        bob, Action.FAILED, "5.2.2", diagnostic=Diagnostic("smtp", "552 5.2.2 Postfach voll, Grüße")
    )
    report = build_report(
        make_original([bob]), ReportKind.FAILURE, [line], reporting_mta=HOST, now=NOW
    )
    assert report is not None
    assert not report.envelope.params.smtputf8
    assert report_bytes(report).isascii()
    # the words reach the sender in the text part; the status part stays ASCII
    assert "552 5.2.2 Postfach voll, Grüße" in text_part(report)
    assert status_blocks(report)[1]["Diagnostic-Code"] == "smtp; 552 5.2.2 Postfach voll, Gr??e"


# ---- building recipient lines ----------------------------------------------------------------


def test_from_stored_uses_the_last_result() -> None:
    stored = StoredRecipient(
        message_id="01HF3K7Q2M4XK9A",
        index=0,
        address="bob@example.org",
        orcpt="rfc822;bob+2Bx@example.org",
        notify="FAILURE,SUCCESS",
        state=RecipientState.FAILED,
        attempts=3,
        next_attempt=0.0,
        last_attempt=ARRIVED + 900,
        last_status="5.1.1",
        last_reply="550 5.1.1 <bob@example.org>... User unknown",
        remote_mta="mx.example.org [192.0.2.1]",
        lease_owner=None,
        lease_until=None,
    )
    line = RecipientReport.from_stored(stored, Action.FAILED)
    assert line == RecipientReport(
        final_recipient="bob@example.org",
        action=Action.FAILED,
        status="5.1.1",
        original_recipient="rfc822;bob+x@example.org",
        notify=frozenset({Notify.FAILURE, Notify.SUCCESS}),
        remote_mta="mx.example.org [192.0.2.1]",
        diagnostic=Diagnostic("smtp", "550 5.1.1 <bob@example.org>... User unknown"),
        last_attempt=ARRIVED + 900,
    )
    stored.last_status = stored.last_reply = stored.remote_mta = stored.notify = None
    bare = RecipientReport.from_stored(stored, Action.DELAYED, will_retry_until=NOW)
    assert (bare.status, bare.diagnostic, bare.remote_mta, bare.notify) == ("4.0.0", None, "", None)
    assert bare.will_retry_until == NOW


def test_from_delivery_maps_outcome_and_reply() -> None:
    recipient = DeliveryRecipient(2, "bob@example.org", "rfc822;bob@example.org", None)
    result = DeliveryResult(
        2,
        Outcome.FAILED,
        Reply.of(550, "5.1.1", "<bob@example.org>... User unknown", "see the FAQ", from_peer=True),
        remote_mta="mx.example.org [192.0.2.1]",
    )
    line = RecipientReport.from_delivery(recipient, result, attempted_at=NOW)
    assert line.action is Action.FAILED and line.status == "5.1.1"
    assert str(line.diagnostic) == "smtp; 550 5.1.1 <bob@example.org>... User unknown see the FAQ"
    assert line.original_recipient == "rfc822;bob@example.org"
    assert line.last_attempt == NOW
    peer_ok = Reply.of(250, None, "Ok", from_peer=True)
    relayed = DeliveryResult(2, Outcome.RELAYED, peer_ok, "relay.example")
    line = RecipientReport.from_delivery(recipient, relayed, attempted_at=NOW)
    assert (line.action, line.status, str(line.diagnostic)) == (
        Action.RELAYED,
        "2.0.0",
        "smtp; 250 Ok",
    )
    deferred = DeliveryResult(2, Outcome.DEFERRED, Reply.of(451, "4.3.0", "later"))
    line = RecipientReport.from_delivery(recipient, deferred, attempted_at=NOW)
    assert (line.action, line.status) == (Action.DELAYED, "4.3.0")


def test_bad_status_code_is_refused() -> None:
    with pytest.raises(ValueError, match="enhanced status"):
        RecipientReport("bob@example.org", Action.FAILED, "550")


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("550 5.1.1 User unknown", Diagnostic("smtp", "550 5.1.1 User unknown")),
        ("550-5.1.1 first line", Diagnostic("smtp", "550-5.1.1 first line")),
        ("smtp; 421 busy", Diagnostic("smtp", "421 busy")),
        ("X-Unix; exit status 75", Diagnostic("X-Unix", "exit status 75")),
        ("Host not found", Diagnostic("X-Mailwright", "Host not found")),
        (
            "connect to mx: refused; giving up",
            Diagnostic("X-Mailwright", "connect to mx: refused; giving up"),
        ),
    ],
)
def test_diagnostic_from_stored_text(stored: str, expected: Diagnostic) -> None:
    assert Diagnostic.coerce(stored) == expected


@pytest.mark.parametrize(
    ("remote", "name"),
    [
        ("mx.example.org [192.0.2.1]", "mx.example.org"),
        ("mx.example.org", "mx.example.org"),
        ("[192.0.2.1]", "[192.0.2.1]"),
        ("[2001:db8::1]", "[2001:db8::1]"),
        ("", ""),
    ],
)
def test_remote_mta_name(remote: str, name: str) -> None:
    assert remote_mta_name(remote) == name


def test_summary_for_the_log() -> None:
    lines = [
        RecipientReport(
            "bob@example.org",
            Action.FAILED,
            "5.1.1",
            diagnostic=Diagnostic("smtp", "550 5.1.1 User unknown"),
        ),
        RecipientReport(
            "carol@example.net", Action.FAILED, "5.4.4", diagnostic=Diagnostic.own("x" * 300)
        ),
    ]
    text = summary(ReportKind.FAILURE, lines, limit=40)
    assert text == (
        "failure DSN for 2 recipients: <bob@example.org> 5.1.1 (smtp; 550 5.1.1 User unknown), "
        f"<carol@example.net> 5.4.4 (X-Mailwright; {'x' * 26}...)"
    )
    assert re.fullmatch(r"[ -~]+", text)
