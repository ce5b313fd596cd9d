"""The last hour, minute by minute: queue size and throughput for the status page's plots.

A ring of per-minute samples in memory (nothing is stored on disk; a restart
starts a new hour). Each ``update`` sets the current minute's sample: the queue
size as measured now, and the counts of received, delivered, deferred and
bounced since the minute began (differences of ``metrics.Totals``). The first
update of a new minute closes the previous one; events between the last update
of a minute and the first of the next count in the next. Reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwright.observability.metrics import Totals

MINUTES = 60


@dataclass(frozen=True, slots=True)
class Sample:
    minute: int  # Unix time // 60
    messages: int  # messages in the queue
    deferred: int  # recipients waiting for a retry
    flow: Totals  # counts during this minute


class History:
    def __init__(self, baseline: Totals, minutes: int = MINUTES) -> None:
        self.minutes = minutes
        self._samples: dict[int, Sample] = {}
        self._minute: int | None = None
        self._start = baseline  # totals when the current minute began
        self._last = baseline  # totals at the last update

    def update(self, now: float, totals: Totals, messages: int, deferred: int) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            if self._minute is not None:
                self._start = self._last
            self._minute = minute
            for old in [m for m in self._samples if m <= minute - self.minutes]:
                del self._samples[old]
        self._last = totals
        self._samples[minute] = Sample(minute, messages, deferred, totals - self._start)

    def window(self, now: float) -> list[Sample | None]:
        """The last ``minutes`` minutes, oldest first, ending with the current one;
        None where there is no sample (the daemon was not running)."""
        minute = int(now // 60)
        return [self._samples.get(m) for m in range(minute - self.minutes + 1, minute + 1)]
