"""Keyed slots in shared memory: lookup, bounded probing, eviction, gauges and windows
(one process here; tests/unit/policy/test_sharedlimits.py forks)."""

from __future__ import annotations

from mailwright.core import sharedwindow
from mailwright.core.sharedgauge import SharedGauge
from mailwright.core.sharedtable import PROBES, KeyHash, SlotTable, shared_words
from mailwright.core.sharedwindow import SharedWindow


def test_key_hash_is_salted_and_never_zero() -> None:
    one, other = KeyHash(b"a" * 16), KeyHash(b"b" * 16)
    assert one("192.0.2.1") == KeyHash(b"a" * 16)("192.0.2.1")  # the same salt: the same key
    assert one("192.0.2.1") != other("192.0.2.1")
    assert KeyHash()("x") != KeyHash()("x")  # a random salt each boot
    assert all(one(str(n)) != 0 for n in range(1000))


def test_claim_and_find_probe_a_bounded_run_of_slots() -> None:
    words = shared_words(SlotTable.size(rows=2, slots=16, slot_words=2))
    table = SlotTable(words, 0, rows=2, slots=16, slot_words=2)
    keys = [16 * n + 3 for n in range(1, PROBES + 2)]  # all start at slot 3
    indexes = [table.claim(0, key, score=1, evict=False) for key in keys[:PROBES]]
    assert len(set(indexes)) == PROBES
    assert [table.find(0, key) for key in keys[:PROBES]] == indexes
    assert table.find(1, keys[0]) == -1  # another worker's row
    for index in indexes:
        words[index + 1] = 1  # live counts: none may be taken
    assert table.claim(0, keys[PROBES], score=1, evict=False) == -1
    words[indexes[2] + 1] = 0  # one count fell to 0: its slot is reused
    assert table.claim(0, keys[PROBES], score=1, evict=False) == indexes[2]
    assert table.find(0, keys[2]) == -1 and table.find(0, keys[PROBES]) == indexes[2]
    table.clear_row(0)
    assert all(table.find(0, key) == -1 for key in keys)


def test_gauge_sums_rows_and_reports_when_it_has_no_slot() -> None:
    gauge = SharedGauge.make(shared_words(2 * (1 + 8 * 2)), 0, rows=2, slots=8)
    assert gauge.change(0, 5, 1) and gauge.change(1, 5, 1) and gauge.change(1, 5, 1)
    gauge.change_total(0, 1)
    gauge.change_total(1, 2)
    assert gauge.value(5) == 3 and gauge.total() == 3 and gauge.value(6) == 0
    assert all(gauge.change(0, key, 1) for key in range(100, 107))  # 8 slots: all live
    assert not gauge.change(0, 200, 1)  # full: the caller counts it
    assert gauge.change(1, 200, 1)  # the other row has room
    gauge.clear_row(1)
    assert gauge.value(5) == 1 and gauge.total() == 1


def window_table(rows: int = 2, slots: int = 64) -> SharedWindow:
    words = shared_words(sharedwindow.table_size(rows, slots))
    return SharedWindow.make(words, 0, rows=rows, slots=slots)


def test_window_counts_every_row_and_forgets_old_events() -> None:
    window, now = window_table(), 1000.0
    assert [window.add(0, 7, 60.0, now) for _ in range(3)] == [1, 2, 3]
    assert window.add(1, 7, 60.0, now + 30) == 4  # another worker, the same key
    assert window.count(7, 60.0, now + 30) == 4 and window.count(8, 60.0, now + 30) == 0
    # forgotten between 60 s and 60 s + one bucket (10 s) after they happened
    assert window.count(7, 60.0, now + 59) == 4
    assert window.count(7, 60.0, now + 71) == 1
    assert window.count(7, 60.0, now + 101) == 0
    assert window.add(0, 7, 60.0, now + 200) == 1  # an old bucket starts again at 0


def test_window_clear_reaches_every_row() -> None:
    window, now = window_table(), 1000.0
    window.add(0, 7, 900.0, now)
    window.add(1, 7, 900.0, now)
    window.clear(1, 7, now)
    assert window.count(7, 900.0, now) == 0
    assert window.add(0, 7, 900.0, now) == 1  # at the same instant, after the clear
    assert window.add(1, 7, 900.0, now + 1) == 2
    window.clear(0, 7, now + 1)
    assert window.count(7, 900.0, now + 2) == 0
    window.clear(0, 99, now)  # a key nobody counted: nothing to do
    assert window.table.find(0, 99) == -1


def test_full_window_forgets_the_least_recently_used_key() -> None:
    window, now = window_table(rows=1, slots=4), 1000.0
    for key in range(1, 101):  # 100 keys, 4 slots: never fails
        assert window.add(0, key, 60.0, now + key / 1000) == 1
    assert window.add(0, 100, 60.0, now + 1) == 2  # the most recent key is kept
    assert window.count(1, 60.0, now + 1) == 0  # the oldest went
