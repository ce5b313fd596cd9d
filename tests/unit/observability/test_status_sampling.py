"""The status page's periodic look at the queue when the queue cannot be read.

A real SQLite store, closed (what a database that is away looks like to the monitor:
``StoreError``), and the daemon's real ``Monitor``; the log as pytest captures it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from mailwright.config.schema import Settings
from mailwright.daemon.monitor import Monitor
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.writer import QueueWriter


def test_a_queue_that_cannot_be_read_is_one_line_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteQueueStore(tmp_path / "queue.db")
    store.open()
    store.close()  # every read now fails as a database that is away does: StoreError
    monitor = Monitor(Settings(), store, QueueWriter(store), {})
    with caplog.at_level(logging.WARNING, logger="mailwright"):
        asyncio.run(monitor.sample_quietly())
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage() == "status: cannot sample the queue: queue store is not open"
