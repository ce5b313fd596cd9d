"""The vocabulary of a report: its kind (failure, delay, success) and per-recipient actions.

RFC 3464 2.3.3 names the actions; RFC 3461 4.1 says which NOTIFY keyword asks for
each kind of report. Pure data; reads no settings.
"""

from __future__ import annotations

from enum import StrEnum

from mailwright.core.envelope import Notify


class ReportKind(StrEnum):
    FAILURE = "failure"
    DELAY = "delay"
    SUCCESS = "success"

    @property
    def notify(self) -> Notify:
        """The NOTIFY keyword that asks for this kind of report."""
        return _NOTIFY[self]


class Action(StrEnum):
    """RFC 3464 ``Action`` values."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"  # handed to a next hop that will not send DSNs
    EXPANDED = "expanded"  # delivered to an alias or list that sent it on to others

    @property
    def kind(self) -> ReportKind:
        if self is Action.FAILED:
            return ReportKind.FAILURE
        if self is Action.DELAYED:
            return ReportKind.DELAY
        return ReportKind.SUCCESS

    @property
    def default_status(self) -> str:
        """The status code to use when nothing more precise is known (RFC 3463)."""
        return {ReportKind.FAILURE: "5.0.0", ReportKind.DELAY: "4.0.0"}.get(self.kind, "2.0.0")


_NOTIFY = {
    ReportKind.FAILURE: Notify.FAILURE,
    ReportKind.DELAY: Notify.DELAY,
    ReportKind.SUCCESS: Notify.SUCCESS,
}
