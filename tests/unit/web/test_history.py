"""The per-minute history: samples per minute, counts as differences, an hour kept."""

from __future__ import annotations

from mailwright.observability.metrics import Totals
from mailwright.web.history import History

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 60  # the start of a minute


def test_counts_are_per_minute_and_the_queue_size_as_measured() -> None:
    history = History(Totals(received=100))  # counters did not start at zero
    history.update(T0 + 1, Totals(received=103, delivered=1), messages=5, deferred=2)
    history.update(T0 + 50, Totals(received=110, delivered=4), messages=7, deferred=1)
    history.update(T0 + 61, Totals(received=111, delivered=4), messages=6, deferred=1)
    window = history.window(T0 + 61)
    assert len(window) == 60 and window[:-2] == [None] * 58
    first, second = window[-2], window[-1]
    assert first is not None and second is not None
    assert (first.flow.received, first.flow.delivered, first.messages, first.deferred) == (
        10,
        4,
        7,
        1,
    )
    assert (second.flow.received, second.flow.delivered, second.messages) == (1, 0, 6)


def test_a_quiet_minute_stays_empty_and_an_hour_is_kept() -> None:
    history = History(Totals())
    history.update(T0, Totals(received=1), 1, 0)
    history.update(T0 + 180, Totals(received=3), 1, 0)  # nothing sampled for two minutes
    window = history.window(T0 + 180)
    assert [s.flow.received if s else None for s in window[-4:]] == [1, None, None, 2]
    history.update(T0 + 3600, Totals(received=3), 0, 0)  # an hour after the first sample
    window = history.window(T0 + 3600)
    assert window[0] is None and window[2] is not None  # T0 has gone, T0 + 180 is kept
    assert window[2].minute == (T0 + 180) // 60
    history.update(T0 + 3840, Totals(received=3), 0, 0)
    assert [s.minute - T0 // 60 for s in history.window(T0 + 3840) if s] == [60, 64]
