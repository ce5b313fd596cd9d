"""Each worker delivers with its share of the daemon's delivery limits (issue 14)."""

from __future__ import annotations

import pytest

from mailwright.config.schema import Settings
from mailwright.daemon.delivery import scheduler_settings, worker_share


@pytest.mark.parametrize(
    ("workers", "concurrency", "per_destination"),
    [(1, 100, 20), (2, 50, 10), (3, 33, 6), (64, 1, 1)],
)
def test_the_limits_are_the_daemons_shared_out(
    workers: int, concurrency: int, per_destination: int
) -> None:
    settings = Settings.model_validate(
        {"delivery": {"max_concurrency": 100, "max_per_destination": 20}}
    )
    scheduling = scheduler_settings(worker_share(settings, workers))
    assert (scheduling.max_concurrency, scheduling.max_per_destination) == (
        concurrency,
        per_destination,
    )
    # never more than configured in all, unless the share is the minimum of one each
    assert workers * per_destination <= 20 or per_destination == 1
    assert settings.delivery.max_per_destination == 20  # the configuration is untouched
