"""StaticResolver: the fixed-table resolver for DNS-less hosts and other components' tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailwright.config.schema import Settings
from mailwright.routing.mx import DnsResolver, StaticResolver, resolver_from_settings
from mailwright.routing.resolver import (
    DnsPermanentError,
    DnsTemporaryError,
    MailHost,
    NullMxError,
    Resolver,
)

TABLE = {
    "example.test": "mx1.example.test=127.0.0.1, mx1.example.test=::1, mx2.example.test=127.0.0.2",
    "relay.test": "127.0.0.25",
    "gone.test": "nxdomain",
    "nullmx.test": "NULLMX",
    "flaky.test": "tempfail",
}


def hosts(resolver: Resolver, name: str) -> list[MailHost]:
    return asyncio.run(resolver.mail_hosts(name))


def addresses(resolver: Resolver, name: str) -> list[MailHost]:
    return asyncio.run(resolver.host_addresses(name))


def test_mx_hosts_in_the_order_written() -> None:
    resolver = StaticResolver(TABLE)
    assert hosts(resolver, "example.test") == [
        MailHost("mx1.example.test", "127.0.0.1", 10),
        MailHost("mx1.example.test", "::1", 10),
        MailHost("mx2.example.test", "127.0.0.2", 20),
    ]
    assert hosts(resolver, "EXAMPLE.test.") == hosts(resolver, "example.test")


def test_bare_address_is_the_names_own() -> None:
    resolver = StaticResolver(TABLE)
    assert hosts(resolver, "relay.test") == [MailHost("relay.test", "127.0.0.25", 10)]
    assert addresses(resolver, "relay.test") == [MailHost("relay.test", "127.0.0.25")]


def test_mx_hosts_have_addresses_too() -> None:
    resolver = StaticResolver(TABLE)
    assert addresses(resolver, "mx1.example.test") == [
        MailHost("mx1.example.test", "127.0.0.1"),
        MailHost("mx1.example.test", "::1"),
    ]
    # an MX host name used as a mail domain: implicit MX
    assert hosts(resolver, "mx2.example.test") == [MailHost("mx2.example.test", "127.0.0.2")]


def test_a_mail_domain_has_no_address_of_its_own() -> None:
    with pytest.raises(DnsPermanentError, match="no data record"):
        addresses(StaticResolver(TABLE), "example.test")


def test_failures() -> None:
    resolver = StaticResolver(TABLE)
    with pytest.raises(DnsPermanentError, match=r"name=gone\.test type=MX: Host not found$"):
        hosts(resolver, "gone.test")
    with pytest.raises(NullMxError, match="does not accept mail"):
        hosts(resolver, "nullmx.test")
    with pytest.raises(DnsTemporaryError, match="try again"):
        hosts(resolver, "flaky.test")
    with pytest.raises(DnsTemporaryError):
        addresses(resolver, "flaky.test")
    with pytest.raises(DnsPermanentError) as info:
        addresses(resolver, "nullmx.test")
    assert not isinstance(info.value, NullMxError)  # a host lookup, not a mail domain
    with pytest.raises(DnsPermanentError, match="not in the static table"):
        hosts(resolver, "unknown.test")
    with pytest.raises(DnsPermanentError, match="not in the static table"):
        addresses(resolver, "unknown.test")


def test_default_entry_answers_every_other_name() -> None:
    resolver = StaticResolver({**TABLE, "*": "127.0.0.1"})
    assert hosts(resolver, "anything.test") == [MailHost("anything.test", "127.0.0.1", 10)]
    assert addresses(resolver, "smtp.anything.test") == [
        MailHost("smtp.anything.test", "127.0.0.1")
    ]
    with pytest.raises(DnsPermanentError):
        hosts(resolver, "gone.test")  # explicit entries still win
    assert hosts(resolver, "example.test")[0].name == "mx1.example.test"
    sink = StaticResolver({"*": "sink.test=127.0.0.1"})
    assert hosts(sink, "x.test") == [MailHost("sink.test", "127.0.0.1", 10)]


def test_address_literals_need_no_table() -> None:
    resolver = StaticResolver({})
    assert hosts(resolver, "[192.0.2.1]") == [MailHost("[192.0.2.1]", "192.0.2.1")]
    assert hosts(resolver, "[IPv6:2001:db8::1]") == [MailHost("[IPv6:2001:db8::1]", "2001:db8::1")]
    assert addresses(resolver, "192.0.2.7") == [MailHost("192.0.2.7", "192.0.2.7")]
    with pytest.raises(DnsPermanentError, match="invalid address literal"):
        hosts(resolver, "[192.0.2.300]")


def test_mail_host_lists_are_accepted_as_they_are() -> None:
    resolver = StaticResolver({"x.test": [MailHost("in.x.test", "127.0.0.5", 5)]})
    assert hosts(resolver, "x.test") == [MailHost("in.x.test", "127.0.0.5", 5)]
    assert addresses(resolver, "in.x.test") == [MailHost("in.x.test", "127.0.0.5")]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("mx=not-an-ip", "is not an IP address"),
        ("localhost", "is not an IP address"),
        ("bad_name!=127.0.0.1", "is not a host name"),
        ("127.0.0.1, nxdomain", "must be the only value"),
    ],
)
def test_bad_values(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        StaticResolver({"x.test": value})


def test_file_with_errors(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(
        "# static DNS\n"
        "example.test  mx1.example.test=127.0.0.1 mx2.example.test=[::2]\n"
        "broken.test   mx=nowhere\n"
        "example.test  127.0.0.9\n"
        "lonely.test\n"
        "*             tempfail\n"
    )
    resolver, errors = StaticResolver.from_file(path)
    assert [str(e) for e in errors] == [
        f"{path}:3: 'mx=nowhere': 'nowhere' is not an IP address (write host=address)",
        f"{path}:4: duplicate key 'example.test' (first on line 2), ignored",
        f"{path}:5: 'lonely.test' has no value (expected 'key value')",
    ]
    assert hosts(resolver, "example.test") == [
        MailHost("mx1.example.test", "127.0.0.1", 10),
        MailHost("mx2.example.test", "::2", 20),
    ]
    with pytest.raises(DnsTemporaryError):
        hosts(resolver, "broken.test")  # skipped: falls to "*"


def test_unreadable_file_defers_everything(tmp_path: Path) -> None:
    resolver, errors = StaticResolver.from_file(tmp_path / "missing")
    assert [e.line for e in errors] == [0]
    with pytest.raises(DnsTemporaryError, match="cannot read"):
        hosts(resolver, "example.test")
    with pytest.raises(DnsTemporaryError, match="cannot read"):
        addresses(resolver, "mx.example.test")


def test_resolver_from_settings(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("example.test 127.0.0.1\n")
    resolver, errors = resolver_from_settings(
        Settings.model_validate({"dns": {"static_table": path}})
    )
    assert isinstance(resolver, StaticResolver) and errors == []
    assert hosts(resolver, "example.test") == [MailHost("example.test", "127.0.0.1", 10)]
    resolver, errors = resolver_from_settings(
        Settings.model_validate({"dns": {"nameservers": ["127.0.0.1"]}})
    )
    assert isinstance(resolver, DnsResolver) and errors == []
