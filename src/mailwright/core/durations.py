"""Durations as people and log readers expect to see them. Pure functions.

``hhmmss`` is Sendmail's ``delay=``/``xdelay=`` form (``[d+]HH:MM:SS``), ``short`` is for
status displays (``3d 4h``, ``2h 5m``, ``5m 10s``), ``words`` for text sent to people
(``2 hours 5 minutes``).
"""

from __future__ import annotations


def _split(seconds: float) -> tuple[int, int, int, int]:
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return days, hours, minutes, secs


def hhmmss(seconds: float) -> str:
    days, h, m, s = _split(seconds)
    text = f"{h:02d}:{m:02d}:{s:02d}"
    return f"{days}+{text}" if days else text


def short(seconds: float) -> str:
    days, hours, minutes, secs = _split(seconds)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def words(seconds: float) -> str:
    days, hours, minutes, _ = _split(seconds)
    parts = [
        f"{n} {unit}{'' if n == 1 else 's'}"
        for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"))
        if n
    ]
    return " ".join(parts) if parts else "less than a minute"
