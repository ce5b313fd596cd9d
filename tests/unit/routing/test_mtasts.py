"""MTA-STS parsing without I/O: the TXT record, the policy file, MX patterns, HTTP answers."""

from __future__ import annotations

import pytest

from mailwright.routing.mtasts import (
    HttpResponse,
    PolicyError,
    StsMode,
    check_response,
    mx_matches,
    parse_policy,
    parse_record,
)
from mailwright.routing.mx import txt_string

GOOD = (
    "version: STSv1\r\nmode: enforce\r\n"
    "mx: mail.example.org\r\nmx: *.example.net\r\nmax_age: 86400\r\n"
)


def test_txt_strings_are_joined_and_unescaped() -> None:
    assert txt_string('"v=STSv1; " "id=20190429T010101;"') == "v=STSv1; id=20190429T010101;"
    assert txt_string(r'"a\"b\059c"') == 'a"b;c'


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
        (["v=STSv1;id=abc"], "abc"),
        (["v=STSv1; id=abc; ext=value;"], "abc"),
        (["v=spf1 -all", "v=STSv1; id=1;"], "1"),
        (["v=spf1 -all"], None),
        ([], None),
    ],
)
def test_record(texts: list[str], expected: str | None) -> None:
    assert parse_record(texts) == expected


@pytest.mark.parametrize(
    "texts",
    [
        ["v=STSv1; id=1;", "v=STSv1; id=2;"],  # two records: no policy
        ["v=STSv1;"],  # no id
        ["v=STSv1; id=has-dash;"],
        ["v=STSv1; id=" + "a" * 33],
        ["v=STSv10; id=1"],
        ["v=STSv1; id=1; junk"],
    ],
)
def test_bad_records(texts: list[str]) -> None:
    with pytest.raises(PolicyError):
        parse_record(texts)


def test_policy_with_crlf_and_lf() -> None:
    for text in (GOOD, GOOD.replace("\r\n", "\n"), GOOD.encode()):
        policy = parse_policy(text)
        assert policy.mode is StsMode.ENFORCE
        assert policy.mx == ("mail.example.org", "*.example.net")
        assert policy.max_age == 86400


def test_policy_fields_and_whitespace() -> None:
    policy = parse_policy(
        "version:STSv1\nmode:   testing  \nmx: MX.Example.ORG.\nmax_age:0\nnew: x\n"
    )
    assert policy.mode is StsMode.TESTING and policy.mx == ("mx.example.org",)
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 1\n").mx == ()
    assert parse_policy(GOOD + "mode: none\n").mode is StsMode.ENFORCE  # the first one counts


@pytest.mark.parametrize(
    "text",
    [
        GOOD.replace("STSv1", "STSv2"),
        GOOD.replace("version: STSv1\r\n", ""),
        GOOD.replace("enforce", "strict"),
        GOOD.replace("86400", "-1"),
        GOOD.replace("86400", "31557601"),
        GOOD.replace("86400", "1e5"),
        GOOD.replace("max_age: 86400\r\n", ""),
        "version: STSv1\nmode: enforce\nmax_age: 1\n",  # no mx
        GOOD + "mx: *.*.example.com\n",
        GOOD + "mx: bad_host.example\n",
        GOOD + "mx: example\n",
        GOOD + "no colon here\n",
        b"version: STSv1\nmode: enforce\nmx: \xff.example\nmax_age: 1\n",
        "",
    ],
)
def test_bad_policies(text: str | bytes) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("mail.example.org", "mail.example.org", True),
        ("mail.example.org", "MAIL.example.org.", True),
        ("mail.example.org", "x.mail.example.org", False),
        ("*.example.net", "mx1.example.net", True),
        ("*.example.net", "example.net", False),
        ("*.example.net", "a.b.example.net", False),
        ("*.example.net", ".example.net", False),
    ],
)
def test_mx_patterns(pattern: str, host: str, expected: bool) -> None:
    assert mx_matches(pattern, host) is expected


def test_policy_matches_any_pattern() -> None:
    policy = parse_policy(GOOD)
    assert policy.matches("mail.example.org") and policy.matches("mx.example.net")
    assert not policy.matches("mail.example.com")


def response(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


def test_http_sized_chunked_and_closed() -> None:
    sized = response("HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 4\n", b"abcdXX")
    assert HttpResponse.parse(sized[:-4], eof=False) is None
    parsed = HttpResponse.parse(sized, eof=False)
    assert parsed is not None and parsed.body == b"abcd"
    chunked = response(
        "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n", b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert HttpResponse.parse(chunked[:-5], eof=False) is None
    parsed = HttpResponse.parse(chunked, eof=False)
    assert parsed is not None and parsed.body == b"abcde"
    closed = response("HTTP/1.0 200 OK\nContent-Type: text/plain\n", b"xyz")
    assert HttpResponse.parse(closed, eof=False) is None
    parsed = HttpResponse.parse(closed, eof=True)
    assert parsed is not None and parsed.body == b"xyz" and parsed.status == 200


@pytest.mark.parametrize(
    ("data", "eof"),
    [
        (b"SMTP/1.0 200 OK\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Type", True),
        (response("HTTP/1.1 200 OK\nContent-Length: 99999999\n"), False),
        (response("HTTP/1.1 200 OK\nContent-Length: 10\n", b"abc"), True),
        (response("HTTP/1.1 200 OK\n", b"x" * 70000), False),
        (response("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n", b"zz\r\n"), True),
        (b"x" * 20000, False),
    ],
)
def test_http_bad_answers(data: bytes, eof: bool) -> None:
    with pytest.raises(PolicyError):
        HttpResponse.parse(data, eof)


def test_response_checks() -> None:
    ok = HttpResponse(200, {"content-type": "text/plain; charset=utf-8"}, GOOD.encode())
    assert check_response(ok).mode is StsMode.ENFORCE
    for bad in (
        HttpResponse(301, {"content-type": "text/plain", "location": "https://x"}, b""),
        HttpResponse(404, {"content-type": "text/plain"}, GOOD.encode()),
        HttpResponse(200, {"content-type": "text/html"}, GOOD.encode()),
        HttpResponse(200, {}, GOOD.encode()),
    ):
        with pytest.raises(PolicyError):
            check_response(bad)
