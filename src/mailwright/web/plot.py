"""Small server-side SVG charts for the status page: no script, no external asset.

``chart`` draws one or more series over the same time slots (oldest first), as
grouped bars (counts per minute) or as step areas (a level such as the queue
size, flat across each minute). A missing value (None) leaves its slot empty.
The y axis starts at 0 and ends at a round number. Every text is escaped, so
labels may come from anywhere. Reads no settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from html import escape


class Style(StrEnum):
    BARS = "bars"
    STEPS = "steps"


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    colour: str  # "#rrggbb"
    values: Sequence[float | None]


LEFT, RIGHT, TOP, BOTTOM = 44, 10, 30, 22
AXIS = "#999999"
GRID = "#e4e4e4"
TEXT = "#333333"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value`` (>= 1)."""
    if value <= 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * power >= value:
            return step * power
    return 10.0 * power  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


@dataclass(frozen=True, slots=True)
class _Frame:
    width: float
    height: float
    slots: int
    top: float

    @property
    def plot_width(self) -> float:
        return self.width - LEFT - RIGHT

    @property
    def plot_height(self) -> float:
        return self.height - TOP - BOTTOM

    @property
    def base(self) -> float:
        return TOP + self.plot_height

    def x(self, slot: float) -> float:
        return LEFT + self.plot_width * slot / self.slots

    def y(self, value: float) -> float:
        return self.base - self.plot_height * min(value, self.top) / self.top


def chart(
    title: str,
    series: Sequence[Series],
    style: Style,
    x_labels: Sequence[tuple[int, str]] = (),
    width: int = 720,
    height: int = 200,
    element_id: str = "",
) -> str:
    """The SVG markup; ``x_labels`` are (slot, text) pairs under the x axis."""
    slots = max((len(s.values) for s in series), default=1) or 1
    peak = max((v for s in series for v in s.values if v is not None), default=0.0)
    frame = _Frame(width, height, slots, nice_ceiling(peak))
    ident = f' id="{escape(element_id)}"' if element_id else ""
    parts = [
        f'<svg{ident} xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"'
        f' class="chart chart-{style.value}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        *_axes(frame, x_labels),
        *_legend(title, series),
    ]
    if style is Style.BARS:
        parts += _bars(frame, series)
    else:
        for s in series:
            parts += _steps(frame, s)
    parts.append("</svg>")
    return "\n".join(parts)


def _axes(frame: _Frame, x_labels: Sequence[tuple[int, str]]) -> list[str]:
    out = []
    for i in range(5):
        value = frame.top * i / 4
        y = frame.y(value)
        colour = AXIS if i == 0 else GRID
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{frame.width - RIGHT}" y2="{y:.1f}"'
            f' stroke="{colour}" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11"'
            f' fill="{TEXT}">{_number(value)}</text>'
        )
    for slot, text in x_labels:
        x = frame.x(slot + 0.5)
        out.append(
            f'<text x="{x:.1f}" y="{frame.height - 6}" text-anchor="middle" font-size="11"'
            f' fill="{TEXT}">{escape(text)}</text>'
        )
    return out


def _legend(title: str, series: Sequence[Series]) -> list[str]:
    out = [
        f'<text x="{LEFT}" y="14" font-size="13" font-weight="bold" fill="{TEXT}">'
        f"{escape(title)}</text>"
    ]
    x = LEFT + 8 * len(title) + 24
    for s in series:
        out.append(f'<rect x="{x}" y="5" width="10" height="10" fill="{escape(s.colour)}"/>')
        out.append(
            f'<text x="{x + 14}" y="14" font-size="11" fill="{TEXT}">{escape(s.label)}</text>'
        )
        x += 14 + 7 * len(s.label) + 16
    return out


def _bars(frame: _Frame, series: Sequence[Series]) -> list[str]:
    out = []
    slot_width = frame.plot_width / frame.slots
    bar = slot_width * 0.8 / max(1, len(series))
    for k, s in enumerate(series):
        colour = escape(s.colour)
        for slot, value in enumerate(s.values):
            if not value:
                continue
            x = frame.x(slot) + slot_width * 0.1 + bar * k
            y = frame.y(value)
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{frame.base - y:.1f}"'
                f' fill="{colour}"><title>{escape(s.label)}: {_number(value)}</title></rect>'
            )
    return out


def _runs(values: Sequence[float | None]) -> list[tuple[int, list[float]]]:
    """Contiguous stretches of present values: (first slot, values)."""
    runs: list[tuple[int, list[float]]] = []
    for slot, value in enumerate(values):
        if value is None:
            continue
        if runs and runs[-1][0] + len(runs[-1][1]) == slot:
            runs[-1][1].append(value)
        else:
            runs.append((slot, [value]))
    return runs


def _steps(frame: _Frame, s: Series) -> list[str]:
    out = []
    colour = escape(s.colour)
    for first, values in _runs(s.values):
        edge: list[tuple[float, float]] = []
        for i, value in enumerate(values):
            y = frame.y(value)
            edge += [(frame.x(first + i), y), (frame.x(first + i + 1), y)]
        area = [(edge[0][0], frame.base), *edge, (edge[-1][0], frame.base)]
        out.append(
            f'<polygon points="{_points(area)}" fill="{colour}" fill-opacity="0.3" stroke="none"/>'
        )
        out.append(
            f'<polyline points="{_points(edge)}" fill="none" stroke="{colour}" stroke-width="2.5"/>'
        )
    return out


def _points(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
