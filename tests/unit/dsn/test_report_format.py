"""Each kind of report, parsed back with ``email`` and checked field by field."""

from __future__ import annotations

import email.utils
from email.message import EmailMessage

import pytest

from mailwright.core.address import Address
from mailwright.core.envelope import BodyType, MailParams, Notify, Ret
from mailwright.core.queueid import is_queue_id
from mailwright.dsn import (
    BOUNCE_PROTOCOL,
    Action,
    Diagnostic,
    RecipientReport,
    ReportKind,
    build_report,
)
from mailwright.queue.store import NewMessage
from tests.unit.dsn.builders import ARRIVED, BODY, HOST, NOW, make_original, rcpt
from tests.unit.dsn.reading import parse, raw_parts, report_bytes, status_blocks, text_part

BOB_REPLY = "550 5.1.1 <bob@example.org>... User unknown"
CAROL_REPLY = "552 5.2.2 <carol@example.net>: Mailbox full, quota exceeded"


def timestamp(value: str) -> float:
    return email.utils.parsedate_to_datetime(value).timestamp()


def failure_report(params: MailParams | None = None) -> NewMessage:
    bob = rcpt("bob@example.org", orcpt="rfc822;Bob@Example.org")
    carol = rcpt("carol@example.net")
    original = make_original([bob, carol], params=params or MailParams(envid="QQ314159"))
    reports = [
        RecipientReport.from_recipient(
            bob,
            Action.FAILED,
            "5.1.1",
            remote_mta="mx1.example.org [192.0.2.25]",
            diagnostic=Diagnostic("smtp", BOB_REPLY),
            last_attempt=ARRIVED + 60,
        ),
        RecipientReport.from_recipient(
            carol,
            Action.FAILED,
            "5.2.2",
            remote_mta="mx.example.net [198.51.100.7]",
            diagnostic=Diagnostic("smtp", CAROL_REPLY),
            last_attempt=ARRIVED + 120,
        ),
    ]
    report = build_report(original, ReportKind.FAILURE, reports, reporting_mta=HOST, now=NOW)
    assert report is not None
    return report


def test_failure_report_envelope_and_headers() -> None:
    report = failure_report()
    assert is_queue_id(report.queue_id)
    assert report.envelope.sender is None
    assert len(report.envelope.recipients) == 1
    to = report.envelope.recipients[0]
    assert to.address == Address("alice", "example.com")
    assert to.notify == frozenset({Notify.NEVER})
    assert report.origin.protocol == BOUNCE_PROTOCOL
    assert report.received_at == NOW
    assert report.envelope.params.body is BodyType.SEVEN_BIT
    assert not report.envelope.params.smtputf8

    msg = parse(report)
    assert msg["From"] == "Mail Delivery Subsystem <MAILER-DAEMON@mail.example.com>"
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mail.example.com"
    assert msg["To"].addresses[0].addr_spec == "alice@example.com"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert timestamp(msg["Date"]) == NOW
    assert msg["Message-ID"] == f"<{report.queue_id}@{HOST}>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    assert not msg.defects
    assert all(not p.defects for p in msg.walk())


def test_failure_delivery_status_fields() -> None:
    blocks = status_blocks(failure_report())
    assert len(blocks) == 3
    per_message, bob, carol = blocks
    assert per_message == {
        "Original-Envelope-Id": "QQ314159",
        "Reporting-MTA": f"dns; {HOST}",
        "X-Mailwright-Queue-ID": "01HF3K7Q2M4XK9A",
        "X-Mailwright-Sender": "rfc822; alice@example.com",
        "Arrival-Date": per_message["Arrival-Date"],
    }
    assert timestamp(per_message["Arrival-Date"]) == ARRIVED
    assert bob == {
        "Original-Recipient": "rfc822;Bob@Example.org",
        "Final-Recipient": "rfc822; bob@example.org",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx1.example.org",
        "Diagnostic-Code": f"smtp; {BOB_REPLY}",
        "Last-Attempt-Date": bob["Last-Attempt-Date"],
    }
    assert timestamp(bob["Last-Attempt-Date"]) == ARRIVED + 60
    assert carol == {
        "Final-Recipient": "rfc822; carol@example.net",
        "Action": "failed",
        "Status": "5.2.2",
        "Remote-MTA": "dns; mx.example.net",
        "Diagnostic-Code": f"smtp; {CAROL_REPLY}",
        "Last-Attempt-Date": carol["Last-Attempt-Date"],
    }
    assert timestamp(carol["Last-Attempt-Date"]) == ARRIVED + 120


def test_field_order_in_a_recipient_block() -> None:
    raw = raw_parts(failure_report())[1].content
    block = raw.split(b"\r\n\r\n")[1]
    names = [line.split(b":")[0] for line in block.split(b"\r\n") if line]
    assert names == [
        b"Original-Recipient",
        b"Final-Recipient",
        b"Action",
        b"Status",
        b"Remote-MTA",
        b"Diagnostic-Code",
        b"Last-Attempt-Date",
    ]


def test_no_envid_no_original_envelope_id() -> None:
    blocks = status_blocks(failure_report(MailParams()))
    assert "Original-Envelope-Id" not in blocks[0]


def test_human_readable_part_quotes_each_remote_reply() -> None:
    text = text_part(failure_report())
    assert f"This is the mail delivery system at {HOST}." in text
    assert "could not be delivered" in text
    unwrapped = " ".join(text.split())
    assert "<bob@example.org>: delivery failed (status 5.1.1)" in unwrapped
    assert f"The mail server mx1.example.org [192.0.2.25] said: {BOB_REPLY}" in unwrapped
    assert f"The mail server mx.example.net [198.51.100.7] said: {CAROL_REPLY}" in unwrapped
    assert "the original message are attached" in unwrapped
    assert "Subject: Quarterly figures" in text


def test_own_diagnostic_is_given_as_the_reason() -> None:
    bob = rcpt("bob@example.org")
    original = make_original([bob])
    line = RecipientReport.from_recipient(
        bob,
        Action.FAILED,
        "5.4.4",
        diagnostic=Diagnostic.own("Host or domain name not found: example.org"),
    )
    report = build_report(original, ReportKind.FAILURE, [line], reporting_mta=HOST, now=NOW)
    assert report is not None
    block = status_blocks(report)[1]
    assert block["Diagnostic-Code"] == "X-Mailwright; Host or domain name not found: example.org"
    assert "Remote-MTA" not in block
    assert "Last-Attempt-Date" not in block
    unwrapped = " ".join(text_part(report).split())
    assert "Reason: Host or domain name not found: example.org" in unwrapped


def returned_part(report: NewMessage) -> EmailMessage:
    part = parse(report).get_payload()[2]
    assert isinstance(part, EmailMessage)
    return part


@pytest.mark.parametrize("ret", [Ret.FULL, None])
def test_failure_returns_the_whole_message_byte_for_byte(ret: Ret | None) -> None:
    report = failure_report(MailParams(ret=ret))
    part = returned_part(report)
    assert part.get_content_type() == "message/rfc822"
    inner = part.get_payload(0)
    assert isinstance(inner, EmailMessage)
    assert inner["Subject"] == "Quarterly figures"
    raw = raw_parts(report)[2].content
    original = make_original()
    assert raw == original.headers.encode() + b"\r\n" + BODY


def test_ret_hdrs_returns_only_the_headers() -> None:
    report = failure_report(MailParams(ret=Ret.HDRS))
    part = returned_part(report)
    assert part.get_content_type() == "text/rfc822-headers"
    assert raw_parts(report)[2].content == make_original().headers.encode()
    assert b"the figures are attached" not in report_bytes(report)
    assert "the headers of the message are attached" in " ".join(text_part(report).split())


def test_a_requiretls_message_returns_only_its_headers_under_requiretls() -> None:
    # RFC 8689 5: the body stays on the paths the sender allowed; the report asks for them
    report = failure_report(MailParams(ret=Ret.FULL, requiretls=True))
    assert returned_part(report).get_content_type() == "text/rfc822-headers"
    assert raw_parts(report)[2].content == make_original().headers.encode()
    assert b"the figures are attached" not in report_bytes(report)
    assert "it was sent with REQUIRETLS" in " ".join(text_part(report).split())
    assert report.envelope.params.requiretls
    assert not failure_report(MailParams(ret=Ret.FULL)).envelope.params.requiretls


def test_body_without_final_crlf_is_returned_exactly() -> None:
    bob = rcpt("bob@example.org")
    body = b"no newline at the end"
    original = make_original([bob], body=body)
    line = RecipientReport.from_recipient(bob, Action.FAILED, "5.0.0")
    report = build_report(original, ReportKind.FAILURE, [line], reporting_mta=HOST, now=NOW)
    assert report is not None
    assert raw_parts(report)[2].content == original.headers.encode() + b"\r\n" + body


def test_delay_report() -> None:
    bob = rcpt("bob@example.org")
    original = make_original([bob], params=MailParams(ret=Ret.FULL))
    until = ARRIVED + 5 * 86400
    line = RecipientReport.from_recipient(
        bob,
        Action.DELAYED,
        "4.4.1",
        remote_mta="mx1.example.org [192.0.2.25]",
        diagnostic=Diagnostic("smtp", "421 4.4.1 mx1.example.org: try again later"),
        last_attempt=NOW - 60,
        will_retry_until=until,
    )
    report = build_report(original, ReportKind.DELAY, [line], reporting_mta=HOST, now=NOW)
    assert report is not None
    msg = parse(report)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    assert returned_part(report).get_content_type() == "text/rfc822-headers"
    assert b"the figures are attached" not in report_bytes(report)
    block = status_blocks(report)[1]
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.4.1"
    assert block["Diagnostic-Code"] == "smtp; 421 4.4.1 mx1.example.org: try again later"
    assert timestamp(block["Will-Retry-Until"]) == until
    assert timestamp(block["Last-Attempt-Date"]) == NOW - 60
    text = " ".join(text_part(report).split())
    assert "5 hours 7 minutes after it arrived" in text
    assert "you do not need to send the message again" in text
    assert "said: 421 4.4.1 mx1.example.org: try again later" in text


@pytest.mark.parametrize("action", [Action.DELIVERED, Action.RELAYED, Action.EXPANDED])
def test_success_report(action: Action) -> None:
    bob = rcpt("bob@example.org", notify="SUCCESS,FAILURE")
    original = make_original([bob], params=MailParams(ret=Ret.FULL))
    line = RecipientReport.from_recipient(
        bob,
        action,
        "2.0.0",
        remote_mta="mx1.example.org [192.0.2.25]",
        diagnostic=Diagnostic("smtp", "250 2.0.0 Ok: queued as 4Xyz"),
        last_attempt=NOW,
    )
    report = build_report(original, ReportKind.SUCCESS, [line], reporting_mta=HOST, now=NOW)
    assert report is not None
    assert parse(report)["Subject"] == "Successful Mail Delivery Report"
    assert returned_part(report).get_content_type() == "text/rfc822-headers"
    assert b"the figures are attached" not in report_bytes(report)
    block = status_blocks(report)[1]
    assert block["Action"] == action.value
    assert block["Status"] == "2.0.0"
    assert "Will-Retry-Until" not in block
    assert f"<bob@example.org>: {'delivered' if action is Action.DELIVERED else action.value}" in (
        text_part(report)
    )


@pytest.mark.parametrize(
    ("declared", "headers_8bit", "expected"),
    [
        (BodyType.SEVEN_BIT, False, BodyType.SEVEN_BIT),
        (BodyType.EIGHT_BIT, False, BodyType.EIGHT_BIT),
        (BodyType.BINARY, False, BodyType.BINARY),
        (BodyType.SEVEN_BIT, True, BodyType.EIGHT_BIT),
    ],
)
def test_report_body_type_follows_what_it_carries(
    declared: BodyType, headers_8bit: bool, expected: BodyType
) -> None:
    from tests.unit.dsn.builders import original_headers

    bob = rcpt("bob@example.org")
    headers = original_headers("Grüße" if headers_8bit else "Hello")
    body = "Grüße\r\n".encode() if declared is not BodyType.SEVEN_BIT else BODY
    original = make_original([bob], params=MailParams(body=declared), headers=headers, body=body)
    line = RecipientReport.from_recipient(bob, Action.FAILED, "5.1.1")
    report = build_report(original, ReportKind.FAILURE, [line], reporting_mta=HOST, now=NOW)
    assert report is not None
    assert report.envelope.params.body is expected
    cte = {BodyType.EIGHT_BIT: "8bit", BodyType.BINARY: "binary"}.get(expected)
    assert returned_part(report).get("Content-Transfer-Encoding") == cte
    assert parse(report).get("Content-Transfer-Encoding") == cte


def test_max_return_size_returns_headers_of_a_large_message() -> None:
    bob = rcpt("bob@example.org")
    original = make_original([bob], body=b"x" * 5000 + b"\r\n")
    line = RecipientReport.from_recipient(bob, Action.FAILED, "5.1.1")
    report = build_report(
        original, ReportKind.FAILURE, [line], reporting_mta=HOST, now=NOW, max_return_size=4096
    )
    assert report is not None
    assert returned_part(report).get_content_type() == "text/rfc822-headers"
    assert "too large to return whole" in " ".join(text_part(report).split())
    small = build_report(
        original, ReportKind.FAILURE, [line], reporting_mta=HOST, now=NOW, max_return_size=10_000
    )
    assert small is not None
    assert returned_part(small).get_content_type() == "message/rfc822"
