"""Server-side SVG charts: scales, bars, steps with gaps, and escaping."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from mailwright.web.plot import Series, Style, chart, nice_ceiling

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [
        (0, 1),
        (0.4, 1),
        (1, 1),
        (1.5, 2),
        (2.2, 2.5),
        (3, 5),
        (7, 10),
        (11, 20),
        (240, 250),
        (251, 500),
        (999, 1000),
    ],
)
def test_nice_ceiling(value: float, ceiling: float) -> None:
    assert nice_ceiling(value) == ceiling


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def test_bars_one_per_nonzero_value_scaled_to_the_top() -> None:
    svg = chart("Flow", [Series("in", "#00ff00", [0, 2, None, 5])], Style.BARS, element_id="p")
    root = parse(svg)
    assert root.get("id") == "p"
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert [b.findtext(f"{SVG}title") for b in bars] == ["in: 2", "in: 5"]
    assert {b.get("fill") for b in bars} == {"#00ff00"}
    heights = [float(b.get("height", 0)) for b in bars]
    assert heights[1] == pytest.approx(2.5 * heights[0], abs=0.2)
    assert heights[1] == pytest.approx(200 - 30 - 22)  # 5 is the top of the scale


def test_steps_break_at_missing_values() -> None:
    svg = chart("Queue", [Series("n", "#0000ff", [None, 1, 2, None, 3])], Style.STEPS)
    root = parse(svg)
    assert len(list(root.iter(f"{SVG}polyline"))) == 2  # two runs: [1, 2] and [3]
    assert len(list(root.iter(f"{SVG}polygon"))) == 2


def test_every_label_is_escaped() -> None:
    evil = '<script>alert(1)</script>"'
    svg = chart(evil, [Series(evil, "#000000", [1])], Style.BARS, [(0, evil)], element_id=evil)
    assert "<script>" not in svg
    assert svg.count("&lt;script&gt;") >= 4
    parse(svg)


def test_an_empty_chart_still_draws_axes() -> None:
    svg = chart("Nothing", [Series("x", "#ff0000", [])], Style.STEPS)
    root = parse(svg)
    assert len(list(root.iter(f"{SVG}line"))) == 5  # the axis and four grid lines
    assert list(root.iter(f"{SVG}polyline")) == []
