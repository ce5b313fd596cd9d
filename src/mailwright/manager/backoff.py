"""The retry policy: when to try a deferred recipient again, and when to give up.

Exponential back-off: the first retry after ``queue.first_retry`` (5 minutes), each
later one twice as far, capped at ``queue.max_retry_interval`` (1 hour); a message
older than ``queue.max_lifetime`` (5 days) is bounced, and one delay warning is
due after ``queue.delay_warning`` (4 hours; 0 disables it). Pure arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first: float = 300.0
    max_interval: float = 3600.0
    max_lifetime: float = 5 * 86400.0
    delay_warning: float = 4 * 3600.0

    def interval(self, attempts: int) -> float:
        """Wait after the ``attempts``-th failed attempt (1-based)."""
        exponent = max(0, attempts - 1)
        if exponent > 32:  # avoid huge powers; the cap applies anyway
            return self.max_interval
        return float(min(self.first * (2**exponent), self.max_interval))

    def next_attempt(self, attempts: int, now: float, received_at: float) -> float:
        """Next try, but never later than the moment the message expires, so the
        bounce for an expired message goes out on time."""
        return min(now + self.interval(attempts), max(now, received_at + self.max_lifetime))

    def expired(self, received_at: float, now: float) -> bool:
        return now - received_at >= self.max_lifetime

    def warning_due(self, received_at: float, now: float) -> bool:
        return self.delay_warning > 0 and now - received_at >= self.delay_warning
