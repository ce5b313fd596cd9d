from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwright.core import xtext
from mailwright.core.address import AddressError, parse_path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<a@b.test>", "a@b.test"),
        ("<A.B@EXAMPLE.Test>", "A.B@example.test"),
        ('<"john doe"@x.test>', '"john doe"@x.test'),
        ('<"a\\"b"@x.test>', '"a\\"b"@x.test'),
        ("<@r1.test,@r2.test:u@x.test>", "u@x.test"),
        ("<u@[192.0.2.1]>", "u@[192.0.2.1]"),
        ("<u@[IPv6:2001:db8::1]>", "u@[IPv6:2001:db8::1]"),
        ("<Postmaster>", "postmaster"),
    ],
)
def test_valid_paths(text: str, expected: str) -> None:
    address = parse_path(text)
    assert address is not None and str(address) == expected


@pytest.mark.parametrize(
    "text",
    [
        "a@b",
        "<a@b",
        "<a b@c>",
        "<a@b..c>",
        "<a@-b.c>",
        "<a@b.c.>",
        "<.a@b.c>",
        "<a.@b.c>",
        "<a@[300.1.1.1]>",
        "<" + "x" * 65 + "@b.c>",
        "<a@" + "b" * 64 + ".c>",
        "<user>",
        "<ü@b.c>",
        "<@r1:>",
        "<a\n@b.c>",  # "$" matches before a final LF: the grammar must not
        "<a@b.c\n>",
        "<a@b\n.c>",
        '<"a\n"@b.c>',
    ],
)
def test_invalid_paths(text: str) -> None:
    with pytest.raises(AddressError):
        parse_path(text)


def test_null_path_only_where_allowed() -> None:
    assert parse_path("<>", allow_null=True) is None
    with pytest.raises(AddressError):
        parse_path("<>")


def test_utf8_paths() -> None:
    address = parse_path("<ü@bücher.test>", utf8=True)
    assert address is not None and address.needs_smtputf8


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=50))
def test_xtext_round_trip(text: str) -> None:
    assert xtext.decode(xtext.encode(text)) == text


@given(st.text(max_size=80))
def test_parse_path_never_raises_anything_but_address_error(text: str) -> None:
    with contextlib.suppress(AddressError):
        parse_path(text, utf8=True, allow_null=True)


def test_the_grammar_is_compiled_on_first_use_not_on_import() -> None:
    # compiling the UTF-8 classes costs sendmail milliseconds at every start
    code = (
        "from mailwright.core import address\n"
        "before = address._pattern.cache_info().currsize\n"
        "address.parse_path('<a@b.example>')\n"
        "print(before, address._pattern.cache_info().currsize)\n"
    )
    src = Path(__file__).resolve().parents[3] / "src"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        check=True,
        text=True,
    )
    assert out.stdout.split() == ["0", "2"]
