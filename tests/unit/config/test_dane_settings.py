"""The DANE settings: off by default, "opportunistic" (and the tls_policy levels "dane" and
"dane-only") need a trusted validating resolver."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mailwright.config.schema import DeliverySection, TlsLevel


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


def test_dane_levels_per_destination() -> None:
    section = DeliverySection.model_validate(
        {"tls_policy": {"a.test": "dane-only", ".b.test": "dane"}, "dane_nameservers": ["::1"]}
    )
    assert section.dane == "off" and section.dane_used
    assert not DeliverySection(tls_policy={"a.test": TlsLevel.VERIFY}).dane_used


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"tls_policy": {"a.test": "dane-only"}}, "dane needs dane_nameservers"),
        ({"tls_policy": {"[relay.test]": "dane"}, "dane_nameservers": ["::1"]}, r"not to \[host\]"),
        ({"tls_default": "dane-only", "dane_nameservers": ["::1"]}, "tls_default cannot be"),
    ],
)
def test_dane_levels_where_they_cannot_be(value: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        DeliverySection.model_validate(value)


def test_the_status_page_counts_dane_on_for_one_destination() -> None:
    from mailwright.config.schema import Settings
    from mailwright.daemon.monitor import _auth_enabled

    per_destination = {"tls_policy": {"a.test": "dane"}, "dane_nameservers": ["::1"]}
    assert _auth_enabled(Settings.model_validate({"delivery": per_destination}))["dane"]
    assert not _auth_enabled(Settings())["dane"]
