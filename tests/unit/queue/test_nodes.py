"""A node's state from its heartbeat row: up, stale after three missed intervals, stopped."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailwright.queue.nodes import STALE_BEATS, NodeInfo, node_state


@pytest.mark.parametrize(
    ("age", "state"),
    [(0.0, "up"), (9.9, "up"), (STALE_BEATS * 10.0, "up"), (30.01, "stale"), (3600.0, "stale")],
)
def test_a_running_node_goes_stale_after_three_intervals(age: float, state: str) -> None:
    assert node_state(last_beat=1000.0, heartbeat=10.0, stopped_at=None, now=1000.0 + age) == state


def test_the_interval_is_the_nodes_own() -> None:
    assert node_state(1000.0, 0.5, None, 1001.0) == "up"
    assert node_state(1000.0, 0.5, None, 1001.6) == "stale"


def test_a_node_that_said_it_stopped_is_stopped_however_old() -> None:
    assert node_state(1000.0, 10.0, 1000.0, 1000.0) == "stopped"
    assert node_state(1000.0, 10.0, 1000.0, 99999.0) == "stopped"


def test_json_has_state_and_age_not_the_readers_clock() -> None:
    info = NodeInfo(
        node="mx-1", host="h", pid=7, version="1", started_at=900.0, last_beat=1000.0,
        heartbeat=10.0, workers=2, listeners="127.0.0.1:25", stopped_at=None, delivering=3,
        now=1040.0,
    )  # fmt: skip
    data = info.as_json()
    assert (data["state"], data["age"], data["delivering"]) == ("stale", 40.0, 3)
    assert "now" not in data
    # a beat written a little "after" the reading (another server round trip) is no age < 0
    assert replace(info, now=999.0).age == 0
