"""edge.standby: worker 0 alone listens until two connections are open in the daemon; it
wakes every worker when the shared word changes; forked workers see one word."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator

import pytest

from mailwright.edge.standby import Standby


@pytest.fixture
def standby() -> Iterator[Standby]:
    made = Standby(3)
    yield made
    made.close()


def woken(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_worker_zero_alone_listens_until_it_has_company(standby: Standby) -> None:
    first, second, third = (standby.worker(i) for i in range(3))
    assert [w.listens() for w in (first, second, third)] == [True, False, False]
    assert not first.counted(1)  # one connection: nothing changes
    assert not any(woken(w.fd) for w in (first, second, third))
    assert first.counted(2)
    assert standby.spread
    assert [w.listens() for w in (first, second, third)] == [True, True, True]
    assert all(woken(w.fd) for w in (first, second, third))
    for w in (first, second, third):
        w.drain()
        assert not woken(w.fd)
    assert not first.counted(5) and not first.counted(1)  # still company somewhere
    assert first.counted(0)  # the daemon is idle: the others stand by again
    assert not standby.spread
    assert [w.listens() for w in (first, second, third)] == [True, False, False]
    assert woken(second.fd)


def test_only_worker_zero_changes_the_word(standby: Standby) -> None:
    """Another worker's counts never change it: a worker that died and whose
    replacement is not back yet must not leave nobody listening."""
    second = standby.worker(1)
    assert not second.counted(2)
    assert not standby.spread
    standby.set(True)  # as the supervisor does when a worker dies
    assert not second.counted(0)
    assert standby.spread and second.listens()


def test_a_full_pipe_loses_no_wake_up_that_matters(standby: Standby) -> None:
    """A worker slow to read: the writes that do not fit are dropped, the word is kept."""
    for _ in range(70000):  # more than a pipe holds
        standby.set(True)
    second = standby.worker(1)
    assert woken(second.fd)
    second.drain()
    assert not woken(second.fd) and second.listens()


def test_forked_workers_share_the_word(standby: Standby) -> None:
    pid = os.fork()
    if pid == 0:  # the child: worker 0 gets company
        code = 0 if standby.worker(0).counted(2) else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert standby.spread and standby.worker(2).listens()


def test_worker_index_is_checked(standby: Standby) -> None:
    with pytest.raises(ValueError):
        standby.worker(3)
    with pytest.raises(ValueError):
        Standby(0)
