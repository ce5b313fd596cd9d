"""Regressions for what ``fuzz/dsn_params.py`` found in the delivery-status fields."""

from __future__ import annotations

import pytest

from mailwright.dsn import Action, Diagnostic, RecipientReport, ReportKind, build_report
from mailwright.smtp.command import Extensions, parse_mail, parse_rcpt
from tests.unit.dsn.builders import HOST, NOW, make_original
from tests.unit.dsn.reading import status_blocks


@pytest.mark.parametrize(
    ("envid", "decoded"),
    [
        ("+FF+85", "\u00ff\u0085"),  # the fuzzer's input: a NEL at the end
        ("a\u3000", "a\u3000"),  # an ideographic space, sent as is under SMTPUTF8
        ("\u2028b", "\u2028b"),
    ],
)
def test_envid_and_orcpt_with_unicode_space_at_an_end_read_back(envid: str, decoded: str) -> None:
    # str.strip() took U+0085, U+2028, U+3000 off the value's ends, and xtext cannot
    # protect them, so the report said "\u00ff" for the ENVID "\u00ff\u0085"
    ext = Extensions.everything()
    _, params, _, _ = parse_mail(f"FROM:<alice@example.com> SMTPUTF8 ENVID={envid}", ext)
    recipient, _, _ = parse_rcpt(f"TO:<bob@example.org> ORCPT=utf-8;{envid}", ext, True)
    assert params.envid == decoded
    original = make_original([recipient], params=params)
    line = RecipientReport.from_recipient(
        recipient, Action.FAILED, "5.1.1", diagnostic=Diagnostic("smtp", "550 5.1.1 gone")
    )
    report = build_report(original, ReportKind.FAILURE, [line], reporting_mta=HOST, now=NOW)
    assert report is not None
    per_message, block = status_blocks(report)
    assert per_message["Original-Envelope-Id"] == decoded
    assert block["Original-Recipient"] == f"utf-8;{decoded}"
