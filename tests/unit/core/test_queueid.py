"""Queue ids of the workers of one daemon: disjoint partitions, each strictly increasing."""

from __future__ import annotations

import pytest

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
