"""Metrics with several worker processes: real forked workers count, one exposition sums.

Each test switches this process to multiprocess mode (as the supervisor does before
it forks), forks workers with multiprocessing's fork context, and reads the aggregate
here, as the worker serving ``/metrics`` would. Workers that must stay alive (their
sessions count) wait on an event; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailwright.config.schema import Settings
from mailwright.core.address import Address
from mailwright.core.delivery import DeliveryResult, Outcome
from mailwright.core.envelope import Envelope, MailParams
from mailwright.core.reply import Reply
from mailwright.daemon.monitor import Monitor
from mailwright.observability import metrics
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import (
    MessageState,
    Origin,
    RecipientState,
    StoredMessage,
    StoredRecipient,
)
from mailwright.queue.writer import QueueWriter
from mailwright.web.status import Status

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "metrics"
    metrics.use_multiprocess(directory, 3)
    try:
        yield directory
    finally:
        metrics.use_one_process()


def run(target: Callable[..., None], *args: object) -> None:
    """One worker that does its work and exits 0."""
    worker = FORK.Process(target=target, args=args)
    worker.start()
    worker.join()
    assert worker.exitcode == 0


def samples(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` in the exposition, by its labels."""
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            if s.name == name:
                key = tuple(sorted(s.labels.items()))
                assert key not in out, f"{name}{key} twice"
                out[key] = s.value
    return out


def message() -> StoredMessage:
    envelope = Envelope(Address("s", "x.test"), MailParams(), [])
    return StoredMessage(
        "01JD3K7Q2M4XK9A", envelope, 1000.0, 10, MessageState.ACTIVE, None, Origin(),
        None, None, False, [],
    )  # fmt: skip


def recipient() -> StoredRecipient:
    return StoredRecipient(
        "01JD3K7Q2M4XK9A", 0, "a@b.test", None, None, RecipientState.QUEUED, 0, 0.0,
        None, None, None, None, None, None,
    )  # fmt: skip


def traffic(received: int, latency: float) -> None:
    """A worker's work: ``received`` messages in, one rejection, one delivery, a milter."""
    for _ in range(received):
        metrics.received("smtp")
    metrics.rejected("rcpt", Reply.of(550, "5.7.1", "Relaying denied"))
    ok = DeliveryResult(0, Outcome.DELIVERED, Reply.of(250, "2.0.0", "ok"))
    state = RecipientState.DELIVERED
    metrics.recorded(message(), recipient(), state, ok, "lmtp", 1000.0 + latency)
    metrics.milter_call("clamav", "eom")
    metrics.outbound("smtp:mx.b.test", "opened")


def test_counters_and_histograms_sum_over_workers(workers: Path) -> None:
    run(traffic, 1, 0.07)  # latency bucket 0.1
    run(traffic, 2, 3.0)  # bucket 5
    run(traffic, 3, 3.0)
    assert samples("mailwright_messages_received_total") == {(("listener", "smtp"),): 6}
    assert samples("mailwright_rejections_total") == {(("stage", "rcpt"), ("status", "5.7.1")): 3}
    assert samples("mailwright_outbound_connections_total") == {
        (("destination", "smtp:mx.b.test"), ("result", "opened")): 3
    }
    buckets = samples("mailwright_delivery_latency_seconds_bucket")
    assert buckets[(("le", "0.05"), ("transport", "lmtp"))] == 0
    assert buckets[(("le", "0.1"), ("transport", "lmtp"))] == 1
    assert buckets[(("le", "2.5"), ("transport", "lmtp"))] == 1
    assert buckets[(("le", "5.0"), ("transport", "lmtp"))] == 3
    assert buckets[(("le", "+Inf"), ("transport", "lmtp"))] == 3
    assert samples("mailwright_delivery_latency_seconds_count") == {(("transport", "lmtp"),): 3}
    assert samples("mailwright_delivery_latency_seconds_sum")[
        (("transport", "lmtp"),)
    ] == pytest.approx(6.07)
    # what the status page and ``mailwright status`` show
    assert metrics.totals() == metrics.Totals(received=6, rejected=3, delivered=3)
    assert metrics.milter_counts() == {"clamav": (3, 0)}


def checks(spf: tuple[str, ...]) -> None:
    """A worker's authentication results: its SPF results, one DKIM, DMARC, ARC, DANE and TLS
    report."""
    for result in spf:
        metrics.spf_result(result)
    metrics.dkim_result("pass")
    metrics.dmarc_result("pass")
    metrics.arc_result("none")
    metrics.dane("verified")
    metrics.tlsrpt_report("queued")


def test_authentication_results_sum_over_workers(workers: Path) -> None:
    run(checks, ("pass", "fail"))
    run(checks, ("pass",))
    assert metrics.auth_counts() == {
        "spf": {"fail": 1, "pass": 2},
        "dkim": {"pass": 2},
        "dmarc": {"pass": 2},
        "arc": {"none": 2},
        "dane": {"verified": 2},
        "tlsrpt": {"queued": 2},
    }


def test_counts_before_the_fork_are_not_counted_twice(workers: Path) -> None:
    metrics.received("smtp")  # the supervisor's own: in its file, not inherited
    run(traffic, 1, 0.0)
    run(traffic, 1, 0.0)
    assert metrics.totals().received == 3


def test_a_dead_workers_counts_stay_its_sessions_go(workers: Path) -> None:
    def worker(sessions: int, ready: Event, leave: Event) -> None:
        metrics.received("smtp")
        for _ in range(sessions):
            metrics.session_started("smtp")
        metrics.session_started("local")
        metrics.session_ended("local")
        ready.set()
        leave.wait(30)

    leave = FORK.Event()
    started = []
    for sessions in (2, 1):
        ready = FORK.Event()
        process = FORK.Process(target=worker, args=(sessions, ready, leave))
        process.start()
        started.append(process)
        assert ready.wait(30)
    try:
        assert metrics.sessions_active() == {"smtp": 3, "local": 0}
        assert samples("mailwright_sessions_active") == {
            (("listener", "smtp"),): 3,
            (("listener", "local"),): 0,
        }
    finally:
        leave.set()
        for process in started:
            process.join()
    first, second = started
    metrics.worker_exited(first.pid or 0)
    assert metrics.sessions_active() == {"smtp": 1, "local": 0}
    metrics.worker_exited(second.pid or 0)
    assert metrics.sessions_active() == {}
    assert samples("mailwright_sessions_active") == {}
    assert metrics.totals().received == 2  # the dead workers' counts stay


def test_the_serving_worker_sets_the_queue_gauges(workers: Path) -> None:
    sizes = metrics.QueueSizes(5, 1, 2, 3, 0, 1, 60.0)
    run(metrics.set_queue, sizes)  # a worker that served a scrape, then died
    assert samples("mailwright_queue_messages") == {
        (("state", "active"),): 5,
        (("state", "hold"),): 1,
    }
    metrics.set_queue(metrics.QueueSizes(7, 0, 2, 3, 0, 1, 30.0))  # the next scrape
    assert samples("mailwright_queue_messages")[(("state", "active"),)] == 7
    assert samples("mailwright_queue_oldest_message_age_seconds") == {(): 30.0}


def test_one_exposition_without_per_process_series(workers: Path) -> None:
    text = metrics.exposition().decode()
    assert 'mailwright_build_info{version="' in text
    assert "process_cpu_seconds_total" not in text  # one worker's would mislead
    assert "_created" not in text


def test_a_new_supervisor_starts_from_zero(workers: Path) -> None:
    run(traffic, 2, 0.0)
    assert metrics.totals().received == 2
    metrics.use_multiprocess(workers, 3)  # the files of the last run are removed
    assert metrics.totals() == metrics.Totals()
    run(traffic, 1, 0.0)
    assert metrics.totals().received == 1


def test_one_process_again_counts_in_memory(tmp_path: Path) -> None:
    metrics.use_multiprocess(tmp_path / "metrics", 2)
    metrics.use_one_process()
    files = {f: f.read_bytes() for f in (tmp_path / "metrics").iterdir()}
    metrics.received("smtp")
    assert (
        metrics.REGISTRY.get_sample_value(
            "mailwright_messages_received_total", {"listener": "smtp"}
        )
        == 1
    )
    assert "process_cpu_seconds_total" in metrics.exposition().decode()
    assert {f: f.read_bytes() for f in (tmp_path / "metrics").iterdir()} == files  # untouched


def test_status_says_how_many_workers() -> None:
    from mailwright.cli.status import plain_lines
    from mailwright.web.statuspage import meta_line

    older = {  # a daemon without workers, or from before them, sends no worker count
        "hostname": "mx.test",
        "version": "1",
        "pid": 7,
        "started_at": 0.0,
        "now": 60.0,
        "delivery_mode": "background",
        "queue_directory": "/q",
    }
    one = Status.from_json(older)
    assert one.workers == 1
    assert plain_lines(one)[0].startswith("mailwright: up, pid 7, uptime 1m")
    assert "pid 7 · version 1" in meta_line(one)
    four = Status.from_json(older | {"workers": 4})
    assert plain_lines(four)[0].startswith("mailwright: up, pid 7, 4 workers, uptime 1m")
    assert "pid 7 · 4 workers · version 1" in meta_line(four)


def test_the_monitor_shows_every_workers_figures(workers: Path, tmp_path: Path) -> None:
    """The serving worker's status and /metrics: another worker's mail and sessions."""

    def other_worker(ready: Event, leave: Event) -> None:
        metrics.received("smtp-2525")
        metrics.received("smtp-2525")
        metrics.session_started("smtp-2525")
        ready.set()
        leave.wait(30)

    settings = Settings.model_validate(
        {"listeners": [{"port": 2525}], "queue": {"directory": str(tmp_path)}}
    )
    store = SqliteQueueStore(settings.queue.database)
    store.open()
    ready, leave = FORK.Event(), FORK.Event()
    worker = FORK.Process(target=other_worker, args=(ready, leave))
    worker.start()
    try:
        assert ready.wait(30)
        # the serving worker has no session open, and every worker listens
        edge = SimpleNamespace(sessions={}, standby=None)
        monitor = Monitor(settings, store, QueueWriter(store), {}, edge=edge)
        status = asyncio.run(monitor.status())
        assert (status.workers, status.pid) == (3, os.getpid())  # the supervisor's pid
        assert status.listening == 3
        assert status.totals.received == 2
        assert [(li.name, li.sessions) for li in status.listeners] == [("smtp-2525", 1)]
        text = asyncio.run(monitor.metrics()).decode()
        assert 'mailwright_sessions_active{listener="smtp-2525"} 1.0' in text
        assert 'mailwright_queue_messages{state="active"} 0.0' in text
        assert 'mailwright_messages_received_total{listener="smtp-2525"} 2.0' in text
    finally:
        leave.set()
        worker.join()
        store.close()


def test_one_process_ignores_a_foreign_multiprocess_directory(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR in the daemon's environment (meant for another program)."""
    code = (
        "from mailwright.observability import metrics\n"
        "metrics.received('smtp')\n"
        "print(metrics.totals().received)\n"
    )
    src = str(Path(metrics.__file__).parents[2])  # this tree's, not the installed one
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"), PYTHONPATH=src)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr
