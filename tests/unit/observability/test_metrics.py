"""The metric helpers: labels, the destination cap, results and recent bounces, totals."""

from __future__ import annotations

import pytest

from mailwright.core.address import Address
from mailwright.core.delivery import DeliveryResult, Outcome
from mailwright.core.envelope import Envelope, MailParams
from mailwright.core.reply import Reply
from mailwright.observability import metrics
from mailwright.observability.recent import RECENT
from mailwright.queue.store import (
    MessageState,
    Origin,
    RecipientState,
    StoredMessage,
    StoredRecipient,
)
from mailwright.routing.nexthop import Transport


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_rejections_are_labelled_by_stage_and_status() -> None:
    before = sample("mailwright_rejections_total", stage="rcpt", status="5.7.1")
    metrics.rejected("rcpt", Reply.of(550, "5.7.1", "Relaying denied"))
    metrics.greeted(Reply.of(220, None, "hello"))  # a positive greeting is no rejection
    metrics.greeted(None)
    before_connect = sample("mailwright_rejections_total", stage="connect", status="554")
    metrics.greeted(Reply.of(554, None, "go away"))
    assert sample("mailwright_rejections_total", stage="rcpt", status="5.7.1") == before + 1
    assert (
        sample("mailwright_rejections_total", stage="connect", status="554") == before_connect + 1
    )


def test_destination_labels_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_destinations", set())
    monkeypatch.setattr(metrics, "MAX_DESTINATIONS", 2)
    before = sample("mailwright_outbound_connections_total", destination="other", result="opened")
    for name in ("smtp:a.test", "smtp:b.test", "smtp:c.test", "smtp:d.test", "smtp:a.test"):
        metrics.outbound(name, "opened")
    assert (
        sample("mailwright_outbound_connections_total", destination="smtp:c.test", result="opened")
        == 0
    )
    assert (
        sample("mailwright_outbound_connections_total", destination="other", result="opened")
        == before + 2
    )


def message() -> StoredMessage:
    envelope = Envelope(Address("s", "x.test"), MailParams(), [])
    return StoredMessage(
        "01JD3K7Q2M4XK9A",
        envelope,
        1000.0,
        10,
        MessageState.ACTIVE,
        None,
        Origin(),
        None,
        None,
        False,
        [],
    )


def recipient(address: str) -> StoredRecipient:
    return StoredRecipient(
        "01JD3K7Q2M4XK9A",
        0,
        address,
        None,
        None,
        RecipientState.QUEUED,
        0,
        0.0,
        None,
        None,
        None,
        None,
        None,
        None,
    )


def test_results_count_by_outcome_and_bounces_are_remembered() -> None:
    totals = metrics.totals()
    latency = sample("mailwright_delivery_latency_seconds_count", transport="lmtp")
    ok = DeliveryResult(0, Outcome.DELIVERED, Reply.of(250, "2.0.0", "ok"))
    later = DeliveryResult(0, Outcome.DEFERRED, Reply.of(451, "4.4.1", "refused"))
    failed = DeliveryResult(
        0, Outcome.FAILED, Reply.of(550, "5.1.1", "<no> such user"), "mx.b.test"
    )
    metrics.recorded(
        message(),
        recipient("a@b.test"),
        RecipientState.DELIVERED,
        ok,
        Transport.LMTP.value,
        1012.5,
    )
    metrics.recorded(message(), recipient("a@b.test"), RecipientState.RELAYED, ok, None, 1013.0)
    metrics.recorded(message(), recipient("a@b.test"), RecipientState.QUEUED, later, None, 1014.0)
    metrics.recorded(
        message(),
        recipient("c@b.test"),
        RecipientState.FAILED,
        failed,
        Transport.SMTP.value,
        1015.0,
    )
    assert metrics.totals() - totals == metrics.Totals(delivered=2, deferred=1, bounced=1)
    assert sample("mailwright_delivery_latency_seconds_count", transport="lmtp") == latency + 1
    bounce = RECENT.bounces(1)[0]
    assert (bounce.recipient, bounce.status, bounce.reply, bounce.remote_mta) == (
        "c@b.test",
        "5.1.1",
        "550 5.1.1 <no> such user",
        "mx.b.test",
    )
    assert bounce.sender == "s@x.test" and bounce.at == 1015.0


def test_milter_failures_keep_the_last_error() -> None:
    before = metrics.milter_counts().get("unit-filter", (0, 0))
    metrics.milter_call("unit-filter", "connect")
    metrics.milter_call("unit-filter", "mail")
    metrics.milter_failure("unit-filter", "mail", TimeoutError("read timed out"))
    assert metrics.milter_counts()["unit-filter"] == (before[0] + 2, before[1] + 1)
    failure = RECENT.milter_failures["unit-filter"]
    assert (failure.stage, failure.error) == ("mail", "read timed out")


def test_exposition_is_prometheus_text() -> None:
    metrics.received("unit-listener")
    text = metrics.exposition().decode()
    assert 'mailwright_messages_received_total{listener="unit-listener"}' in text
    assert "# TYPE mailwright_delivery_latency_seconds histogram" in text
    assert "_created" not in text
