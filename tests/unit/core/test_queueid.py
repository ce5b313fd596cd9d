"""Queue ids of the workers of one daemon and of the id slots of a shared database:
disjoint partitions, each strictly increasing."""

from __future__ import annotations

import pytest

from mailwright.core import queueid
from mailwright.core.queueid import QueueIdGenerator, is_queue_id


def test_partitions_never_collide_even_within_one_millisecond() -> None:
    workers = [QueueIdGenerator() for _ in range(4)]
    for index, generator in enumerate(workers):
        generator.partition(index, len(workers))
    ids = [[g.next() for _ in range(20000)] for g in workers]  # many per millisecond
    seen = [i for per_worker in ids for i in per_worker]
    assert len(set(seen)) == len(seen)
    for per_worker in ids:
        assert per_worker == sorted(per_worker) and len(set(per_worker)) == len(per_worker)
        assert all(is_queue_id(i) for i in per_worker)


def test_a_partition_keeps_to_its_part_of_the_tail() -> None:
    generator = QueueIdGenerator()
    generator.partition(1, 2)
    tails = {generator.next()[10:] for _ in range(5000)}
    # the second half of the tail space starts with the digit 'G' (16 of 32)
    assert all(t[0] >= "G" for t in tails)


@pytest.mark.parametrize(("index", "count"), [(2, 2), (-1, 2), (0, 0)])
def test_a_partition_that_does_not_exist_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError):
        QueueIdGenerator().partition(index, count)


def ids_at_one_instant(slots: tuple[int, ...], n: int) -> list[list[str]]:
    generators = [QueueIdGenerator() for _ in slots]
    for slot, generator in zip(slots, generators, strict=True):
        generator.partition(slot, 1024)
    return [[g.next() for _ in range(n)] for g in generators]


def test_processes_of_different_nodes_in_different_id_slots_never_collide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The PostgreSQL store's 1024 id slots (one per writing process on any node): ids
    from different slots differ even when all are made in the same milliseconds."""
    monkeypatch.setattr(queueid.time, "time", lambda: 1_700_000_000.0)  # a frozen clock
    ids = ids_at_one_instant((0, 1, 511, 1023), 40000)  # more than a slot's 32768 per ms
    seen = [i for per_node in ids for i in per_node]
    assert len(set(seen)) == len(seen)
    for per_node in ids:
        assert per_node == sorted(per_node)
        assert all(is_queue_id(i) for i in per_node)
    # the same slot twice (what the database's lock prevents) would collide
    same = ids_at_one_instant((7, 7), 40000)
    assert set(same[0]) & set(same[1])


def test_an_id_slot_keeps_to_its_part_of_the_tail() -> None:
    generator = QueueIdGenerator()
    generator.partition(1023, 1024)  # the last 32768 tails: "ZZ" then three digits
    assert all(generator.next()[10:12] == "ZZ" for _ in range(5000))
