"""Who gets a report, about which recipients: NOTIFY, null senders and double bounces."""

from __future__ import annotations

import pytest

from mailwright.core.address import Address
from mailwright.core.envelope import Notify, Recipient
from mailwright.core.headers import HeaderList
from mailwright.dsn import (
    BOUNCE_PROTOCOL,
    DOUBLE_BOUNCE_PROTOCOL,
    Action,
    Diagnostic,
    OriginalMessage,
    RecipientReport,
    ReportKind,
    build_report,
    build_reports,
)
from mailwright.queue.store import NewMessage, Origin
from tests.unit.dsn.builders import HOST, NOW, make_original, rcpt
from tests.unit.dsn.reading import parse, raw_parts, status_blocks, text_part

ACTION_OF = {
    ReportKind.FAILURE: Action.FAILED,
    ReportKind.DELAY: Action.DELAYED,
    ReportKind.SUCCESS: Action.DELIVERED,
}
STATUS_OF = {ReportKind.FAILURE: "5.1.1", ReportKind.DELAY: "4.4.1", ReportKind.SUCCESS: "2.0.0"}


def report_for(
    kind: ReportKind, recipients: list[Recipient], original: OriginalMessage | None = None
) -> NewMessage | None:
    original = original or make_original(recipients)
    lines = [
        RecipientReport.from_recipient(
            r,
            ACTION_OF[kind],
            STATUS_OF[kind],
            diagnostic=Diagnostic("smtp", f"{STATUS_OF[kind]} for {r.address}"),
        )
        for r in recipients
    ]
    return build_report(original, kind, lines, reporting_mta=HOST, now=NOW)


@pytest.mark.parametrize(
    ("notify", "kind", "reported"),
    [
        (None, ReportKind.FAILURE, True),
        (None, ReportKind.DELAY, True),
        (None, ReportKind.SUCCESS, False),
        ("NEVER", ReportKind.FAILURE, False),
        ("NEVER", ReportKind.DELAY, False),
        ("NEVER", ReportKind.SUCCESS, False),
        ("FAILURE", ReportKind.FAILURE, True),
        ("FAILURE", ReportKind.DELAY, False),
        ("FAILURE", ReportKind.SUCCESS, False),
        ("DELAY", ReportKind.DELAY, True),
        ("DELAY", ReportKind.FAILURE, False),
        ("SUCCESS", ReportKind.SUCCESS, True),
        ("SUCCESS", ReportKind.FAILURE, False),
        ("SUCCESS,FAILURE,DELAY", ReportKind.FAILURE, True),
        ("SUCCESS,FAILURE,DELAY", ReportKind.DELAY, True),
        ("SUCCESS,FAILURE,DELAY", ReportKind.SUCCESS, True),
    ],
)
def test_notify_decides_whether_a_recipient_is_reported(
    notify: str | None, kind: ReportKind, reported: bool
) -> None:
    report = report_for(kind, [rcpt("bob@example.org", notify=notify)])
    assert (report is not None) is reported


def test_one_report_lists_exactly_the_recipients_that_asked() -> None:
    recipients = [
        rcpt("a@example.org"),
        rcpt("b@example.org", notify="NEVER"),
        rcpt("c@example.org", notify="FAILURE"),
        rcpt("d@example.org", notify="SUCCESS"),
        rcpt("e@example.org", notify="DELAY,FAILURE"),
    ]
    report = report_for(ReportKind.FAILURE, recipients)
    assert report is not None
    finals = [b["Final-Recipient"] for b in status_blocks(report)[1:]]
    assert finals == ["rfc822; a@example.org", "rfc822; c@example.org", "rfc822; e@example.org"]
    text = text_part(report)
    assert "<b@example.org>" not in text and "<d@example.org>" not in text


def test_build_reports_makes_one_report_per_event() -> None:
    bob, carol, dave = (
        rcpt("bob@example.org", notify="SUCCESS,FAILURE"),
        rcpt("carol@example.net"),
        rcpt("dave@example.net", notify="NEVER"),
    )
    original = make_original([bob, carol, dave])
    lines = [
        RecipientReport.from_recipient(bob, Action.DELIVERED, "2.0.0"),
        RecipientReport.from_recipient(carol, Action.FAILED, "5.1.1"),
        RecipientReport.from_recipient(dave, Action.FAILED, "5.1.1"),
        RecipientReport.from_recipient(carol, Action.DELAYED, "4.4.1"),
    ]
    reports = build_reports(original, lines, reporting_mta=HOST, now=NOW)
    subjects = [parse(r)["Subject"] for r in reports]
    assert subjects == [
        "Undelivered Mail Returned to Sender",
        "Delayed Mail (still being retried)",
        "Successful Mail Delivery Report",
    ]
    actions = [[b["Action"] for b in status_blocks(r)[1:]] for r in reports]
    assert actions == [["failed"], ["delayed"], ["delivered"]]
    assert len({r.queue_id for r in reports}) == 3


def test_an_action_of_another_kind_is_refused() -> None:
    bob = rcpt("bob@example.org")
    line = RecipientReport.from_recipient(bob, Action.DELIVERED, "2.0.0")
    with pytest.raises(ValueError, match="not a failure report"):
        build_report(make_original([bob]), ReportKind.FAILURE, [line], reporting_mta=HOST)


def test_no_recipients_no_report() -> None:
    assert build_report(make_original(), ReportKind.FAILURE, [], reporting_mta=HOST) is None


# ---- null senders and double bounces ---------------------------------------------------------


def as_original(report: NewMessage) -> OriginalMessage:
    """A queued report seen as the original of a further report."""
    return OriginalMessage(
        queue_id=report.queue_id,
        envelope=report.envelope,
        received_at=report.received_at,
        headers=report.headers,
        body=report.body.chunks,
        body_size=report.body.size,
        origin=report.origin,
    )


def failing(original: OriginalMessage) -> list[RecipientReport]:
    return [
        RecipientReport.from_recipient(
            r,
            Action.FAILED,
            "5.1.1",
            remote_mta="mx.example.com [192.0.2.9]",
            diagnostic=Diagnostic("smtp", "550 5.1.1 No such user here"),
        )
        for r in original.envelope.recipients
    ]


def test_a_failed_bounce_goes_to_the_postmaster_and_a_failed_double_bounce_is_dropped() -> None:
    bob = rcpt("bob@example.org")
    first = report_for(ReportKind.FAILURE, [bob])
    assert first is not None and first.origin.protocol == BOUNCE_PROTOCOL

    # the bounce itself fails (alice's mailbox is gone): NOTIFY=NEVER does not stop this
    bounce = as_original(first)
    assert bounce.envelope.recipients[0].notify == frozenset({Notify.NEVER})
    double = build_report(bounce, ReportKind.FAILURE, failing(bounce), reporting_mta=HOST, now=NOW)
    assert double is not None
    assert double.origin.protocol == DOUBLE_BOUNCE_PROTOCOL
    assert double.envelope.sender is None
    assert [r.address for r in double.envelope.recipients] == [Address("postmaster", HOST)]
    assert double.envelope.recipients[0].notify == frozenset({Notify.NEVER})
    msg = parse(double)
    assert msg["To"].addresses[0].addr_spec == f"postmaster@{HOST}"
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    blocks = status_blocks(double)
    assert "X-Mailwright-Sender" not in blocks[0]
    assert blocks[1]["Final-Recipient"] == "rfc822; alice@example.com"
    assert "empty return address" in " ".join(text_part(double).split())
    # the failed bounce is returned whole
    assert raw_parts(double)[2].content == b"".join(bounce.message_chunks())

    # the double bounce fails too: nobody hears of it
    again = as_original(double)
    assert build_report(again, ReportKind.FAILURE, failing(again), reporting_mta=HOST) is None


@pytest.mark.parametrize("kind", [ReportKind.DELAY, ReportKind.SUCCESS])
def test_no_delay_or_success_report_about_a_null_sender_message(kind: ReportKind) -> None:
    bob = rcpt("bob@example.org", notify="SUCCESS,DELAY")
    original = make_original([bob], sender=None)
    assert report_for(kind, [bob], original) is None


def test_a_foreign_null_sender_message_double_bounces() -> None:
    bob = rcpt("bob@example.org", notify="NEVER")
    original = make_original([bob], sender=None, origin=Origin(protocol="ESMTP"))
    report = report_for(ReportKind.FAILURE, [bob], original)
    assert report is not None
    assert report.origin.protocol == DOUBLE_BOUNCE_PROTOCOL
    assert report.envelope.recipients[0].address == Address("postmaster", HOST)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("abuse-desk@example.com", Address("abuse-desk", "example.com")),
        ("hostmaster", Address("hostmaster", HOST)),
        (Address("postmaster", ""), Address("postmaster", HOST)),
        (Address("root", "example.net"), Address("root", "example.net")),
    ],
)
def test_double_bounce_recipient_setting(setting: str | Address, expected: Address) -> None:
    bob = rcpt("bob@example.org")
    original = make_original([bob], sender=None)
    report = build_report(
        original,
        ReportKind.FAILURE,
        failing(original),
        reporting_mta=HOST,
        double_bounce_recipient=setting,
    )
    assert report is not None
    assert report.envelope.recipients[0].address == expected


def test_no_double_bounce_recipient_drops_the_failure() -> None:
    bob = rcpt("bob@example.org")
    original = make_original([bob], sender=None)
    report = build_report(
        original,
        ReportKind.FAILURE,
        failing(original),
        reporting_mta=HOST,
        double_bounce_recipient=None,
    )
    assert report is None


def test_bad_double_bounce_recipient_is_a_clear_error() -> None:
    original = make_original([rcpt("bob@example.org")], sender=None)
    with pytest.raises(ValueError, match="double_bounce_recipient"):
        build_report(
            original,
            ReportKind.FAILURE,
            failing(original),
            reporting_mta=HOST,
            double_bounce_recipient="a b@@example.com",
        )


def test_report_about_a_message_with_empty_headers() -> None:
    bob = rcpt("bob@example.org")
    original = make_original([bob], headers=HeaderList(), body=b"just text\r\n")
    report = report_for(ReportKind.FAILURE, [bob], original)
    assert report is not None
    assert raw_parts(report)[2].content == b"\r\njust text\r\n"
    assert "Subject:" not in text_part(report)
    assert not any(part.defects for part in parse(report).walk())
