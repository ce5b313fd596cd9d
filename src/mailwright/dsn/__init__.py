"""Delivery status notifications (RFC 3464 / RFC 6522): bounces, delay warnings, success notices.

A report is just another queued message: ``build_report`` returns a
``queue.store.NewMessage`` (or None when no report is due) for the scheduler to queue
in the same transaction as the results it reports. See ``dsn.report`` for the rules,
and ``dsn.notices`` for which reports a message's delivery results call for.
Reads no settings.
"""

from mailwright.dsn.action import Action, ReportKind
from mailwright.dsn.body import ReportBody
from mailwright.dsn.diagnostic import Diagnostic, remote_mta_name, said
from mailwright.dsn.original import (
    BOUNCE_PROTOCOL,
    DOUBLE_BOUNCE_PROTOCOL,
    BodyReader,
    OriginalMessage,
)
from mailwright.dsn.recipient import RecipientReport, decode_orcpt, parse_notify
from mailwright.dsn.report import (
    DEFAULT_DOUBLE_BOUNCE,
    SUBJECTS,
    build_report,
    build_reports,
    report_recipient,
    summary,
)

__all__ = [
    "BOUNCE_PROTOCOL",
    "DEFAULT_DOUBLE_BOUNCE",
    "DOUBLE_BOUNCE_PROTOCOL",
    "SUBJECTS",
    "Action",
    "BodyReader",
    "Diagnostic",
    "OriginalMessage",
    "RecipientReport",
    "ReportBody",
    "ReportKind",
    "build_report",
    "build_reports",
    "decode_orcpt",
    "parse_notify",
    "remote_mta_name",
    "report_recipient",
    "said",
    "summary",
]
