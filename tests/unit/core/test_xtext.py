"""xtext (RFC 3461 4): regressions for what ``fuzz/dsn_params.py`` found."""

from __future__ import annotations

import pytest

from mailwright.core import xtext


@pytest.mark.parametrize("text", ["abc\n", "a+2B\n", "\n"])
@pytest.mark.parametrize("utf8", [False, True])
def test_a_final_newline_is_not_xtext(text: str, utf8: bool) -> None:
    # the pattern ended in "$", which also matches before a final newline
    with pytest.raises(xtext.XtextError):
        xtext.decode(text, utf8=utf8)


def test_valid_xtext_still_decodes() -> None:
    assert xtext.decode("a+2Bb+3D") == "a+b="
    assert xtext.decode("b\u00f6b", utf8=True) == "b\u00f6b"
    assert xtext.decode("") == ""
