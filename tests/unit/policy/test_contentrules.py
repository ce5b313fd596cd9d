"""Postfix-style rules files: parsing (good and bad lines), matching, body line splitting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwright.core.headers import Header, HeaderParser
from mailwright.policy import contentrules
from mailwright.policy.contentrules import LINE_LIMIT, BodyLines, RuleError, parse, pieces

GOOD = """\
# a comment, then a blank line

/^Subject: .*viagra/ REJECT No spam here
!/^Received:/ WARN
/^X-Mailer: bulk/i   DISCARD
/^X-Secret:/ IGNORE
/^X-Old: (.*)/ REPLACE X-New: replaced
/^Subject:/ PREPEND X-Seen: yes
/a\\/b/ hold  suspicious   path
/^From:/ REJECT long text
  continued here
/x/ DUNNO
/y/ ok
"""


def test_good_rules() -> None:
    table = parse(GOOD, "hc", body=False)
    rules = table.rules
    assert [r.action for r in rules] == [
        "REJECT",
        "WARN",
        "DISCARD",
        "IGNORE",
        "REPLACE",
        "PREPEND",
        "HOLD",
        "REJECT",
        "DUNNO",
        "OK",
    ]
    assert rules[0].text == "No spam here" and rules[0].where == "hc:3"
    assert rules[1].negated and rules[1].text == ""
    assert rules[6].text == "suspicious   path" and rules[6].matches("see a/b")
    assert rules[7].text == "long text continued here" and rules[7].where == "hc:10"
    assert rules[4].header() == Header("X-New", b" replaced")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("/ok/ REJECT\n\nSubject REJECT", "rc:3: expected /regex/ ACTION"),
        ("/unclosed REJECT", "rc:1: the regex has no closing /"),
        ("/a(/ REJECT", "rc:1: bad regex /a(/"),
        ("/a/x REJECT", "rc:1: unknown flag 'x'"),
        ("/a/", "rc:1: no action after the regex"),
        ("# c\n/a/ FROBNICATE", "rc:2: unknown action 'FROBNICATE'"),
        ("/a/ DUNNO text", "rc:1: DUNNO takes no text"),
        ("/a/ IGNORE text", "rc:1: IGNORE takes no text"),
        ("/a/ REPLACE no colon", "rc:1: REPLACE needs a header line"),
        ("/a/ PREPEND", "rc:1: PREPEND needs a header line"),
        ("if /a/\n/b/ REJECT\nendif", "rc:1: if/endif blocks are not supported"),
        ("/a/ REJECT 4.7.1 later", "rc:1: REJECT needs a 5.x.x status code, not 4.7.1"),
        ("/a/ DEFER 5.7.1 never", "rc:1: DEFER needs a 4.x.x status code, not 5.7.1"),
    ],
)
def test_bad_header_rules(text: str, problem: str) -> None:
    with pytest.raises(RuleError, match=re.escape(problem)):
        parse(text, "rc", body=False)


@pytest.mark.parametrize("action", ["IGNORE", "REPLACE X-A: b", "PREPEND X-A: b"])
def test_body_rules_refuse_header_actions(action: str) -> None:
    with pytest.raises(RuleError, match=r"bc:1: .* works in header_checks only"):
        parse(f"/a/ {action}", "bc", body=True)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match=r"cannot read rules file .*missing"):
        contentrules.load(tmp_path / "missing", body=False)


def test_case_insensitive_by_default_and_i_toggles() -> None:
    table = parse("/^subject: HELLO$/ REJECT\n/^Subject: Bye$/i WARN", "f", body=False)
    assert table.first("SUBJECT: hello") is table.rules[0]
    assert table.first("subject: bye") is None
    assert table.first("Subject: Bye") is table.rules[1]


def test_first_match_wins_and_negation() -> None:
    table = parse("/spam/ WARN\n/spam/ REJECT\n!/ham/ HOLD", "f", body=False)
    assert table.first("more spam") is table.rules[0]
    assert table.first("jam") is table.rules[2]
    assert table.first("ham and eggs") is None


def test_folded_headers_are_unfolded() -> None:
    parser = HeaderParser()
    parser.feed(b"Subject: buy\r\n cheap\r\n\tpills\r\n\r\n")
    (field,) = parser.headers
    line = contentrules.header_line(field)
    assert line == "Subject: buy cheap\tpills"
    assert parse("/^Subject: buy cheap\\s+pills$/ REJECT", "f", body=False).first(line)


def reference_lines(stream: bytes, limit: int) -> list[bytes]:
    """What BodyLines must give, computed on the whole stream at once."""
    stream = stream[:limit]
    segments = stream.split(b"\n")
    if segments[-1] == b"":
        segments.pop()
    return [p for s in segments for p in pieces(s.removesuffix(b"\r"))]


def split_lines(chunks: list[bytes], limit: int) -> list[bytes]:
    lines = BodyLines(limit)
    out: list[bytes] = []
    for chunk in chunks:
        out += lines.feed(chunk)
    return out + lines.finish()


def test_body_lines_simple() -> None:
    body = b"one\r\n\r\nthree\r\nlast"
    assert split_lines([body], 1000) == [b"one", b"", b"three", b"last"]
    assert split_lines([body], 8) == [b"one", b"", b"t"]  # the limit cuts the third line
    long = b"x" * (LINE_LIMIT * 2 + 5) + b"\r\nend\r\n"
    assert split_lines([long], 10**6) == [b"x" * LINE_LIMIT] * 2 + [b"xxxxx", b"end"]
    exact = b"y" * LINE_LIMIT + b"\r\n"
    assert split_lines([exact[:-1], exact[-1:]], 10**6) == [b"y" * LINE_LIMIT]


# lines near LINE_LIMIT long, with CR, LF, CRLF in awkward places
_parts = st.one_of(
    st.sampled_from([b"\r\n", b"\r", b"\n", b"ab", b"", b"\r\r\n"]),
    st.integers(LINE_LIMIT - 3, LINE_LIMIT + 3).map(lambda n: b"z" * n),
)


@given(
    st.lists(_parts, max_size=12).map(b"".join),
    st.lists(st.integers(0, 40000), max_size=6),
    st.integers(0, 50000),
)
def test_body_lines_do_not_depend_on_chunking(body: bytes, cuts: list[int], limit: int) -> None:
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert split_lines(chunks, limit) == reference_lines(body, limit)
