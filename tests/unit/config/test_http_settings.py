"""The [http] section: off by default, loopback by default, a token to go beyond."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mailwright.config.schema import HttpSection, Settings


def test_off_and_on_loopback_by_default() -> None:
    http = Settings().http
    assert http.port is None and http.address == "127.0.0.1" and http.token == ""
    assert HttpSection(port=2580).port == 2580


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"address": "localhost", "port": 1}, "IP address"),
        ({"address": "0.0.0.0", "port": 2580}, "not loopback: set a token"),
        ({"address": "::", "port": 2580}, "not loopback: set a token"),
        ({"token": "short"}, "at least 8"),
        ({"token": "has a space"}, "without spaces"),
        ({"port": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_values_name_the_problem(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        HttpSection(**fields)  # type: ignore[arg-type]


def test_a_public_address_is_fine_with_a_token() -> None:
    assert HttpSection(address="0.0.0.0", port=2580, token="long-enough").address == "0.0.0.0"
    assert HttpSection(address="::1", port=2580).address == "::1"
