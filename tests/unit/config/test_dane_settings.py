"""The DANE settings: off by default, "opportunistic" needs a trusted validating resolver."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mailwright.config.schema import DeliverySection


def test_off_by_default() -> None:
    assert DeliverySection().dane == "off"


def test_opportunistic_needs_dane_nameservers() -> None:
    with pytest.raises(ValidationError, match="dane needs dane_nameservers"):
        DeliverySection(dane="opportunistic")
    section = DeliverySection(dane="opportunistic", dane_nameservers=["127.0.0.1", "::1"])
    assert section.dane_nameservers == ["127.0.0.1", "::1"]


@pytest.mark.parametrize("value", [{"dane": "dane-only"}, {"dane_nameservers": ["localhost"]}])
def test_bad_values_are_refused(value: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DeliverySection.model_validate(value)
