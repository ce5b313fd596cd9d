"""DATA/BDAT framing and content checks against a whole-message reference model.

The readers work incrementally (and take fast paths for clean chunks); the model below
computes the same results from the complete input in the most obvious way. Any split of
the input must give the model's content, leftover and problem.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailwright.core.reply import Reply
from mailwright.smtp.data import (
    BARE_LINE,
    TOO_BIG,
    BareLinePolicy,
    ContentChecks,
    DataLimits,
    DataReader,
    too_long_line,
)

# lines rich in the bytes that matter: CR, LF, dots, and long runs
atoms = st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"x", b"yy", b"z" * 25, b"\r\n."])
blobs = st.lists(atoms, max_size=40).map(b"".join)
limits = st.builds(
    DataLimits,
    max_size=st.sampled_from([0, 0, 50, 200]),
    max_line=st.sampled_from([0, 12, 30, 1000]),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


def model_problem(content: bytes, limits: DataLimits) -> Reply | None:
    """The reply for unstuffed ``content`` under REJECT, computed on the whole content."""
    if limits.max_size and len(content) > limits.max_size:
        return TOO_BIG
    lf_ok = all(i > 0 and content[i - 1] == 13 for i, b in enumerate(content) if b == 10)
    cr_ok = all(
        i + 1 < len(content) and content[i + 1] == 10 for i, b in enumerate(content) if b == 13
    )
    if not (lf_ok and cr_ok):
        return BARE_LINE
    if limits.max_line:
        segments = content.split(b"\n")
        terminated = [len(s) + 1 for s in segments[:-1]]
        if any(n > limits.max_line for n in terminated) or len(segments[-1]) >= limits.max_line:
            return too_long_line(limits.max_line)
    return None


def model_data(wire: bytes) -> tuple[bytes, bytes] | None:
    """(unstuffed content, leftover) of a DATA stream, or None while it has not ended."""
    if wire.startswith(b".\r\n"):
        return b"", wire[3:]
    end = wire.find(b"\r\n.\r\n")
    if end < 0:
        return None
    raw = wire[: end + 2]
    if raw.startswith(b"."):
        raw = raw[1:]
    return raw.replace(b"\r\n.", b"\r\n"), wire[end + 5 :]


@given(blobs, blobs, limits, st.lists(st.integers(min_value=0), max_size=12))
@settings(max_examples=1500)
@example(b"a" * 40 + b"\r\n", b"", DataLimits(max_line=30), [5])
@example(b"\r\n." + b"z" * 40, b"", DataLimits(max_line=12), [])
def test_data_reader_matches_model(
    body: bytes, tail: bytes, limits: DataLimits, cuts: list[int]
) -> None:
    wire = body + b"\r\n.\r\n" + tail
    expected = model_data(wire)
    assert expected is not None
    content, leftover = expected
    reader = DataReader(limits)
    got, rest = bytearray(), b""
    for chunk in split(wire, cuts):
        if reader.done:
            rest += chunk
            continue
        data, extra = reader.feed(chunk)
        got += data
        rest += extra
    assert reader.done
    reader.checks.finish()
    assert rest == leftover
    problem = model_problem(content, limits)
    assert reader.checks.problem() == problem
    if problem is None:
        assert bytes(got) == content
    assert reader.checks.size == len(content)


@given(blobs, limits, st.lists(st.integers(min_value=0), max_size=12))
@settings(max_examples=1000)
def test_content_checks_any_split_match_model(
    content: bytes, limits: DataLimits, cuts: list[int]
) -> None:
    checks = ContentChecks(limits)
    got = bytearray()
    for chunk in split(content, cuts):
        got += checks.check(chunk)
    checks.finish()
    problem = model_problem(content, limits)
    assert checks.problem() == problem
    if problem is None:
        assert bytes(got) == content


@given(blobs, st.sampled_from([0, 12, 1000]), st.lists(st.integers(min_value=0), max_size=12))
@settings(max_examples=500)
def test_normalize_policy_any_split_gives_crlf_content(
    body: bytes, max_line: int, cuts: list[int]
) -> None:
    limits = DataLimits(max_line=max_line, bare_lines=BareLinePolicy.NORMALIZE)
    wire = body + b"\r\n.\r\n"
    expected = model_data(wire)
    assert expected is not None
    content = expected[0]
    normalized = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    reader = DataReader(limits)
    got = bytearray()
    for chunk in split(wire, cuts):
        if not reader.done:
            got += reader.feed(chunk)[0]
    reader.checks.finish()
    assert reader.done
    assert reader.checks.problem() == model_problem(normalized, DataLimits(max_line=max_line))
    assert bytes(got) == normalized


@given(blobs, st.sampled_from([0, 12, 1000]), st.lists(st.integers(min_value=0), max_size=12))
@settings(max_examples=500)
@example(b"a\nb\r\nc\r\n", 0, [4])  # a CR at the end of one chunk, its LF in the next
def test_normalize_content_checks_any_split(content: bytes, max_line: int, cuts: list[int]) -> None:
    # BDAT chunks may end anywhere, even between the CR and the LF of a line end
    checks = ContentChecks(DataLimits(max_line=max_line, bare_lines=BareLinePolicy.NORMALIZE))
    got = bytearray()
    for chunk in split(content, cuts):
        got += checks.check(chunk)
    checks.finish()
    normalized = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    assert bytes(got) == normalized
    assert checks.problem() == model_problem(normalized, DataLimits(max_line=max_line))
