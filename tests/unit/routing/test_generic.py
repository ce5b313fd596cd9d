"""The outbound address rewriter (routing.generic): the generic table's syntax and lookup
order, masquerading with exceptions and subdomains, and header values edited in place
(display names, comments, encoded words, groups and folding intact; unparsable fields
left alone), checked against the stdlib's own reading of the same field."""

from __future__ import annotations

from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest

from mailwright.config.schema import Settings
from mailwright.core.headers import Header, HeaderList
from mailwright.routing.generic import (
    AddressRewriter,
    GenericTable,
    address_spans,
    load_generic_table,
    parse_generic_table,
    rewriter_from_settings,
)

TABLE = b"""\
# who is who outside
alice@host.lan      alice.smith@example.com
Bob                 robert@example.com
@old.lan            @example.net
carol@host.lan      @example.org
"""


def table() -> GenericTable:
    entries, errors = parse_generic_table(TABLE, "generic")
    assert errors == []
    return entries


def rewriter(**kw: object) -> AddressRewriter:
    args: dict[str, object] = {
        "masquerade_as": "example.com",
        "masquerade_domains": ["host.lan", ".corp.lan"],
        "local_domains": ["host.lan", "localhost"],
        "table": table(),
    }
    args.update(kw)
    return AddressRewriter(**args)  # type: ignore[arg-type]


# ---- the table --------------------------------------------------------------------------
def test_table_bad_lines_are_reported_with_file_and_line_and_skipped() -> None:
    data = (
        b"alice@host.lan alice@example.com\n"
        b"lonely\n"
        b"bob@host.lan not an address\n"
        b"@bad..domain @example.com\n"
        b"ALICE@HOST.LAN other@example.com\n"
        b"x@host.lan \xc3\xa4@example.com\n"
    )
    entries, errors = parse_generic_table(data, "/etc/mailwright/generic")
    assert dict(entries.entries) == {"alice@host.lan": "alice@example.com"}
    text = [str(e) for e in errors]
    assert [t.split(": ", 1)[0] for t in text] == [
        "/etc/mailwright/generic:2",
        "/etc/mailwright/generic:3",
        "/etc/mailwright/generic:4",
        "/etc/mailwright/generic:5",
        "/etc/mailwright/generic:6",
    ]
    assert "has no value" in text[0]
    assert "bad value 'not an address'" in text[1]
    assert "bad key '@bad..domain'" in text[2]
    assert "duplicate key" in text[3] and "first on line 1" in text[3]
    assert "SMTPUTF8" in text[4]


def test_unreadable_table_is_one_error(tmp_path: Path) -> None:
    entries, errors = load_generic_table(tmp_path / "missing")
    assert len(entries) == 0
    assert [e.line for e in errors] == [0] and "cannot read" in str(errors[0])


def test_lookup_order_address_then_local_part_then_domain() -> None:
    r = rewriter(masquerade_as="")
    assert r.address("alice@host.lan") == "alice.smith@example.com"
    assert r.address("ALICE@Host.Lan") == "alice.smith@example.com"  # keys fold case
    assert r.address("bob@host.lan") == "robert@example.com"  # bare key: a local domain
    assert r.address("bob@localhost") == "robert@example.com"
    assert r.address("bob@elsewhere.test") is None  # ... only
    assert r.address("Dave@old.lan") == "Dave@example.net"  # @domain keeps the local part
    assert r.address("carol@host.lan") == "carol@example.org"
    assert r.address("nobody@host.lan") is None


# ---- masquerading -----------------------------------------------------------------------
def test_masquerading_domains_exceptions_and_subdomains() -> None:
    r = rewriter()
    assert r.address("dave@host.lan") == "dave@example.com"
    assert r.address("dave@HOST.LAN") == "dave@example.com"
    assert r.address("root@host.lan") is None  # the exposed user
    assert r.address("Root@host.lan") is None
    assert r.address("dave@sub.host.lan") is None  # no leading dot: this domain only
    assert r.address("dave@corp.lan") == "dave@example.com"  # ".corp.lan": itself ...
    assert r.address("dave@a.b.corp.lan") == "dave@example.com"  # ... and below
    assert r.address("dave@xcorp.lan") is None
    assert r.address("dave@far.test") is None
    assert r.address('"john doe"@host.lan') == '"john doe"@example.com'


def test_the_table_wins_over_masquerading_and_exceptions() -> None:
    r = rewriter(table=parse_generic_table(b"root@host.lan admin@example.com\n", "t")[0])
    assert r.address("root@host.lan") == "admin@example.com"
    r = rewriter()
    assert r.address("alice@host.lan") == "alice.smith@example.com"


def test_envelope_sender() -> None:
    r = rewriter()
    assert r.sender("dave@host.lan") == "dave@example.com"
    assert r.sender("") == ""  # the null sender, never
    assert r.sender("root@host.lan") == "root@host.lan"
    assert r.sender("unqualified") == "unqualified"
    assert r.sender("x@[192.0.2.1]") == "x@[192.0.2.1]"
    assert rewriter(envelope=False).sender("dave@host.lan") == "dave@host.lan"


def test_settings_defaults_masquerade_the_local_domains(tmp_path: Path) -> None:
    settings = Settings(hostname="host.lan", rewrite={"masquerade_as": "Example.COM"})
    r, errors = rewriter_from_settings(settings)
    assert errors == [] and r is not None
    assert r.address("dave@host.lan") == "dave@example.com"
    assert r.address("dave@localhost") == "dave@example.com"
    assert r.address("root@host.lan") is None
    assert rewriter_from_settings(Settings(hostname="host.lan")) == (None, [])
    table = tmp_path / "generic"
    table.write_text("dave dave.jones@example.com\nbroken\n")
    settings = Settings(hostname="host.lan", rewrite={"generic_table": str(table)})
    r, errors = rewriter_from_settings(settings)
    assert r is not None and r.sender("dave@host.lan") == "dave.jones@example.com"
    assert [str(e) for e in errors] == [f"{table}:2: 'broken' has no value (expected 'key value')"]


def test_settings_refuse_a_bad_domain() -> None:
    with pytest.raises(ValueError, match="not a domain"):
        Settings(rewrite={"masquerade_as": "exa mple.com"})
    with pytest.raises(ValueError, match="not a domain"):
        Settings(rewrite={"masquerade_domains": [".bad..lan"]})


# ---- header values ----------------------------------------------------------------------
def rewrite(name: str, value: str, **kw: object) -> str:
    headers = HeaderList([Header(name, (" " + value).encode())])
    return rewriter(**kw).headers(headers)[0].value.decode()[1:]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("dave@host.lan", "dave@example.com"),
        ('"Dave, the Admin" <dave@host.lan>', '"Dave, the Admin" <dave@example.com>'),
        ("Dave (the admin) <dave@host.lan> (work)", "Dave (the admin) <dave@example.com> (work)"),
        ("dave@host.lan (Dave (nested) Jones)", "dave@example.com (Dave (nested) Jones)"),
        ("=?utf-8?q?D=C3=A4ve?= <dave@host.lan>", "=?utf-8?q?D=C3=A4ve?= <dave@example.com>"),
        ('"john doe"@host.lan', '"john doe"@example.com'),
        ("Alice <alice@host.lan>, root@host.lan", "Alice <alice.smith@example.com>, root@host.lan"),
        ("Team: dave@host.lan, <bob@host.lan>;", "Team: dave@example.com, <robert@example.com>;"),
        ("undisclosed-recipients:;", "undisclosed-recipients:;"),
        (
            "Dave\r\n <dave@host.lan>,\r\n\tfar@far.test",
            "Dave\r\n <dave@example.com>,\r\n\tfar@far.test",
        ),
        ("<@relay.test:dave@host.lan>", "<@relay.test:dave@example.com>"),
        ("dave@host.lan,", "dave@example.com,"),
        ("Dave <DAVE@HOST.LAN>", "Dave <DAVE@example.com>"),
        ("dävé@host.lan", "dävé@example.com"),
        # not a clean local@domain: that mailbox is left, the others still rewritten
        ("dave(x)@host.lan, eve@host.lan", "dave(x)@host.lan, eve@example.com"),
        ("Dave dave@host.lan, eve@host.lan", "Dave dave@host.lan, eve@example.com"),
        ("<dave@host.lan> trailing, eve@host.lan", "<dave@host.lan> trailing, eve@example.com"),
        ("dave, eve@host.lan", "dave, eve@example.com"),
        ("<>, eve@host.lan", "<>, eve@example.com"),
    ],
)
def test_header_addresses_are_replaced_in_place(value: str, expected: str) -> None:
    assert rewrite("From", value) == expected


@pytest.mark.parametrize(
    "value",
    [
        '"Dave <dave@host.lan>',  # open quote
        "Dave (comment <dave@host.lan>",  # open comment
        "Dave <dave@host.lan",  # open angle
        "dave@host.lan>",
        "Team: dave@host.lan",  # open group
        "dave@host.lan; eve@host.lan",
        "Team: a: dave@host.lan;",
        "dave\\@host.lan",
        "x@[192.0.2.1",
    ],
)
def test_unparsable_fields_are_left_alone(value: str) -> None:
    assert address_spans(value) is None
    assert rewrite("From", value) == value


def test_non_utf8_field_is_left_alone() -> None:
    header = Header("From", b" D\xe4ve <dave@host.lan>")
    assert rewriter().headers(HeaderList([header]))[0] is header


def test_which_fields() -> None:
    names = ["From", "sender", "Reply-To", "Resent-From", "Resent-Sender", "To", "Cc", "Subject"]
    headers = HeaderList(Header.make(n, "dave@host.lan") for n in names)
    out = rewriter().headers(headers)
    assert [h.text for h in out] == ["dave@example.com"] * 5 + ["dave@host.lan"] * 3
    assert [h.text for h in headers] == ["dave@host.lan"] * 8  # the original is not changed
    out = rewriter(recipient_headers=True).headers(headers)
    assert [h.text for h in out] == ["dave@example.com"] * 7 + ["dave@host.lan"]


@pytest.mark.parametrize(
    "value",
    [
        '"Dave, the Admin" <dave@host.lan>, Eve (x) <eve@host.lan>',
        "Team: dave@host.lan, =?utf-8?q?Ev=C3=A9?= <eve@host.lan>;, z@far.test",
        'dave@host.lan (Dave), "e v e"@host.lan',
    ],
)
def test_spans_agree_with_the_stdlib(value: str) -> None:
    spans = address_spans(value)
    assert spans is not None
    ours = [value[a:b] for a, b in spans]
    parsed = BytesHeaderParser(policy=policy.default).parsebytes(f"To: {value}\r\n\r\n".encode())
    theirs = [a.addr_spec for a in parsed["To"].addresses]
    assert ours == theirs


def test_only_the_smtp_agent_rewrites() -> None:
    from mailwright.daemon.delivery import build_agents
    from mailwright.delivery.smtp import SmtpAgent
    from mailwright.routing.nexthop import Transport

    settings = Settings(hostname="host.lan", rewrite={"masquerade_as": "example.com"})
    agents = build_agents(settings)
    smtp, lmtp = agents[Transport.SMTP], agents[Transport.LMTP]
    assert isinstance(smtp, SmtpAgent) and isinstance(lmtp, SmtpAgent)
    assert smtp.rewriter is not None and smtp.rewriter.sender("a@host.lan") == "a@example.com"
    assert lmtp.rewriter is None  # LMTP is final delivery: the original addresses
    plain = build_agents(Settings(hostname="host.lan"))[Transport.SMTP]
    assert isinstance(plain, SmtpAgent) and plain.rewriter is None


def test_the_request_that_leaves_has_its_size_adjusted() -> None:
    from mailwright.delivery.smtp import rewritten
    from tests.support.delivery_request import request, smtp_hop

    message = b"From: Dave <dave@host.lan>\r\nTo: eve@host.lan\r\n\r\nbody\r\n"
    original = request(smtp_hop("127.0.0.1"), "eve@host.lan", message=message, sender="d@host.lan")
    out = rewritten(original, rewriter())
    assert out.sender == "d@example.com" and original.sender == "d@host.lan"
    assert [r.address for r in out.recipients] == ["eve@host.lan"]
    expected = message.replace(b"dave@host.lan", b"dave@example.com")
    assert out.headers.encode() + b"\r\n" + b"".join(out.body()) == expected
    assert out.size == len(expected) and original.size == len(message)
    assert rewritten(original, None) is original
