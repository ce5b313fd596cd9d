"""The published RFC 7208 test suite (openspf.org, release 2014.04, as pyspf 2.0.14 ships it).

Every test case of ``tests/data/rfc7208-tests.yml`` runs through ``core.spf`` over a
static DNS built from its scenario's zone data (``tests.support.spf_zone``). A case
may list several acceptable results; where it gives an ``explanation`` ours must be
it, with ``DEFAULT`` standing for "no explanation from exp=" (the suite's driver
convention). The licence of the suite is ``tests/data/rfc7208-tests.LICENSE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mailwright.core.spf import check_host, run, split_sender
from tests.support.spf_zone import SuiteZone

SUITE = Path(__file__).parents[2] / "data" / "rfc7208-tests.yml"


def load_suite() -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(section, test name, test, zonedata) for every case, in file order."""
    with SUITE.open("rb") as f:
        scenarios = list(yaml.safe_load_all(f))
    return [
        (s["description"], name, test, s.get("zonedata") or {})
        for s in scenarios
        for name, test in s["tests"].items()
    ]


CASES = load_suite()


def evaluate(test: dict[str, Any], zonedata: dict[str, Any]) -> tuple[str, str]:
    """(result, explanation or DEFAULT) of one case."""
    helo, sender = str(test["helo"]), str(test["mailfrom"])
    _, domain = split_sender(sender, helo)
    outcome = run(check_host(str(test["host"]), domain, sender, helo), SuiteZone(zonedata).lookup)
    return str(outcome.result), outcome.explanation or "DEFAULT"


def test_the_whole_suite_is_loaded() -> None:
    assert len(CASES) == 203 and len({section for section, *_ in CASES}) == 16


@pytest.mark.parametrize(
    ("test", "zonedata"),
    [pytest.param(t, z, id=f"{s}/{n}") for s, n, t, z in CASES],
)
def test_rfc7208(test: dict[str, Any], zonedata: dict[str, Any]) -> None:
    result, explanation = evaluate(test, zonedata)
    expected = test["result"] if isinstance(test["result"], list) else [test["result"]]
    assert result in expected, (result, expected, test.get("description"))
    if "explanation" in test:
        assert explanation == test["explanation"]
