"""The ``dkim_verify`` filter's options and its default authserv-id."""

from __future__ import annotations

import pytest

from mailwright.config.schema import Settings
from mailwright.policy.filters import registry
from mailwright.policy.filters.dkim_verify import DkimVerifyFilter, DkimVerifyOptions


def test_defaults_and_authserv_id() -> None:
    options = registry.validate_options("dkim_verify", {})
    assert isinstance(options, DkimVerifyOptions)
    assert (options.max_signatures, options.verify_trusted, options.authserv_id) == (5, False, "")
    settings = Settings.model_validate({"hostname": "mx.example"})
    assert DkimVerifyFilter("v", DkimVerifyOptions(), settings).authserv_id == "mx.example"
    named = DkimVerifyOptions.model_validate({"authserv_id": "auth.example"})
    assert DkimVerifyFilter("v", named, settings).authserv_id == "auth.example"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"authserv_id": "mx.test; dkim=pass"}, "is not an authserv-id"),
        ({"max_signatures": 0}, "max_signatures"),
        ({"timeout": 0}, "timeout"),
        ({"verfy_trusted": True}, "verfy_trusted"),
    ],
)
def test_bad_options(options: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        registry.validate_options("dkim_verify", options)
