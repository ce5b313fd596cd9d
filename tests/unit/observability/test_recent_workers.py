"""Recent events of several workers: each forked worker records into its own rings of a
``SharedRecent``; any process reads every worker's, newest first (issue 14)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from mailwright.observability.recent import (
    RECORD,
    Bounce,
    ErrorLog,
    LogEntry,
    Recent,
    SharedRecent,
)
from tests.support.forked import in_worker


@pytest.fixture
def shared() -> Iterator[SharedRecent]:
    yield SharedRecent(2, keep=5)


def bounce(at: float, recipient: str, reply: str = "550 5.1.1 no such user") -> Bounce:
    return Bounce(at, "Q1", "s@x.test", recipient, "5.1.1", reply, "mx.test")


def test_every_workers_bounces_and_warnings_newest_first(shared: SharedRecent) -> None:
    def worker_one() -> None:
        recent = Recent()
        recent.share(shared, 1)
        recent.bounce(bounce(10.0, "one@b.test"))
        recent.bounce(bounce(30.0, "three@b.test"))
        recent.milter_failed("spam", "mail", "timed out", at=40.0)
        handler = ErrorLog(recent)
        logger = logging.getLogger("mailwright.test.recent")
        logger.addHandler(handler)
        logger.warning("worker %d: disk nearly full", 1)

    in_worker(worker_one)
    reader = Recent()
    reader.share(shared, 0)
    reader.bounce(bounce(20.0, "two@b.test"))
    reader.milter_failed("spam", "connect", "refused", at=35.0)
    reader.milter_failed("virus", "body", "closed", at=5.0)
    assert [b.recipient for b in reader.bounces()] == ["three@b.test", "two@b.test", "one@b.test"]
    assert [b.recipient for b in reader.bounces(1)] == ["three@b.test"]
    assert reader.bounces()[0] == bounce(30.0, "three@b.test")
    assert [e.message for e in reader.errors()] == ["worker 1: disk nearly full"]
    failures = reader.milter_failures
    assert (failures["spam"].stage, failures["spam"].error) == ("mail", "timed out")
    assert failures["virus"].error == "closed"


def test_a_worker_keeps_only_its_last_events(shared: SharedRecent) -> None:
    recent = Recent()
    recent.share(shared, 1)
    for n in range(12):
        recent.logged(LogEntry(float(n), "WARNING", f"number {n}"))
    assert [e.message for e in recent.errors()] == [f"number {n}" for n in range(11, 6, -1)]


def test_texts_too_long_for_a_record_are_cut_not_lost(shared: SharedRecent) -> None:
    recent = Recent()
    recent.share(shared, 0)
    long = "\U0001f600" * RECORD  # 4 bytes each in UTF-8
    recent.bounce(bounce(1.0, "x@b.test", reply="550 " + long))
    recent.logged(LogEntry(2.0, "ERROR", "lone surrogate \udcff kept"))
    found = recent.bounces()[0]
    assert found.recipient == "x@b.test" and found.reply.startswith("550 \U0001f600")
    assert len(found.reply.encode()) < RECORD
    assert recent.errors()[0].message == "lone surrogate \udcff kept"


def test_a_worker_number_outside_the_share_is_refused(shared: SharedRecent) -> None:
    with pytest.raises(ValueError):
        Recent().share(shared, 2)
