"""The router: local domains, transport table, smarthost, MX; reloading the table."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mailwright.config.loader import load_settings
from mailwright.config.schema import Settings
from mailwright.core.reply import Reply
from mailwright.routing.nexthop import NextHop, Transport
from mailwright.routing.router import Router
from mailwright.routing.transport import parse_smarthost, parse_transport_table

LOCAL = NextHop(Transport.LOCAL)


def router(
    table: bytes = b"", smarthost: str = "", local: tuple[str, ...] = ("mx.test",)
) -> Router:
    parsed, errors = parse_transport_table(table)
    assert errors == []
    return Router(local, parsed, parse_smarthost(smarthost) if smarthost else None)


def test_local_domains_come_first() -> None:
    r = router(b"mx.test smtp:[elsewhere.test]\n* smtp:[hub.test]\n", smarthost="[smart.test]")
    assert r.route("mx.test") == LOCAL
    assert r.route("MX.Test.") == LOCAL
    assert r.route("") == LOCAL  # an unqualified address


def test_local_domain_suffixes() -> None:
    r = router(local=(".corp.test", "corp.test"))
    assert r.route("corp.test") == LOCAL
    assert r.route("a.b.corp.test") == LOCAL
    assert r.route("notcorp.test") == NextHop(Transport.SMTP, "notcorp.test", mx=True)


def test_table_before_smarthost() -> None:
    r = router(b"partner.test smtp:[10.1.1.1]:2525\n", smarthost="[smart.test]:587")
    assert r.route("partner.test") == NextHop(Transport.SMTP, "10.1.1.1", 2525, mx=False)
    assert r.route("other.test") == NextHop(Transport.SMTP, "smart.test", 587, mx=False)


def test_table_default_beats_smarthost() -> None:
    r = router(b"* smtp:[hub.test]\n", smarthost="[smart.test]")
    assert r.route("other.test").host == "hub.test"


def test_mx_when_nothing_else_matches() -> None:
    r = router(b"partner.test local\n")
    assert r.route("Example.ORG") == NextHop(Transport.SMTP, "example.org", mx=True)
    assert r.route("example.org").key == "smtp:example.org"


def test_address_literals_go_to_their_address() -> None:
    r = router()
    assert r.route("[192.0.2.1]") == NextHop(Transport.SMTP, "192.0.2.1", mx=False)
    assert r.route("[IPv6:2001:db8::1]") == NextHop(Transport.SMTP, "2001:db8::1", mx=False)
    assert router(local=("[127.0.0.1]",)).route("[127.0.0.1]") == LOCAL


def test_smarthost_by_mx() -> None:
    r = router(smarthost="relay.isp.test")
    assert r.route("example.org") == NextHop(Transport.SMTP, "relay.isp.test", mx=True)


def test_error_entry() -> None:
    r = router(b"gone.test error:5.1.2 gone.test no longer exists\n")
    assert r.route("gone.test").error == Reply.of(550, "5.1.2", "gone.test no longer exists")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_from_settings(tmp_path: Path) -> None:
    table = write(tmp_path / "transport", "partner.test lmtp:unix:/run/lmtp\nbad line-\n")
    settings = Settings.model_validate(
        {
            "hostname": "mx.test",
            "routing": {"transport_table": table, "smarthost": "[smart.test]:2525"},
        }
    )
    r, errors = Router.from_settings(settings)
    assert [str(e) for e in errors] == [
        f"{table}:2: value 'line-': unknown transport 'line-' (expected smtp, lmtp, local or error)"
    ]
    assert r.route("mx.test") == LOCAL  # the host name is a local domain by default
    assert r.route("localhost") == LOCAL
    assert r.route("partner.test").socket_path == "/run/lmtp"  # good lines are used
    assert r.route("other.test") == NextHop(Transport.SMTP, "smart.test", 2525, mx=False)


def test_reload_installs_a_good_table(tmp_path: Path) -> None:
    path = write(tmp_path / "transport", "a.test smtp:[one.test]\n")
    r = Router(["mx.test"], table_path=path)
    assert r.load() == []
    assert r.route("a.test").host == "one.test"
    write(path, "a.test smtp:[two.test]\nb.test local\n")
    assert r.reload() == []
    assert r.route("a.test").host == "two.test"
    assert r.route("b.test") == LOCAL


def test_reload_keeps_the_old_table_when_the_new_one_has_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "transport", "a.test smtp:[one.test]\n")
    r = Router(["mx.test"], table_path=path)
    r.load()
    write(path, "a.test smtp:[two.test]\nb.test smtp:[broken\n")
    errors = r.reload()
    assert [str(e) for e in errors] == [
        f"{path}:2: value 'smtp:[broken': missing ']' after the host"
    ]
    assert r.route("a.test").host == "one.test"
    assert r.route("b.test").host == "b.test"  # not half of the new file either
    path.unlink()
    assert [e.line for e in r.reload()] == [0]
    assert r.route("a.test").host == "one.test"


def test_unreadable_table_at_start_defers_non_local_mail(tmp_path: Path) -> None:
    r = Router(["mx.test"], table_path=tmp_path / "missing", smarthost=parse_smarthost("[s.test]"))
    errors = r.load()
    assert [e.line for e in errors] == [0]
    hop = r.route("example.org")
    assert hop.transport is Transport.ERROR and hop.error is not None
    assert (hop.error.code, hop.error.status) == (451, "4.3.0")
    assert "Transport table unavailable" in hop.error.text and "missing" in hop.error.text
    assert r.route("mx.test") == LOCAL
    write(tmp_path / "missing", "example.org smtp:[fixed.test]\n")
    assert r.reload() == []
    assert r.route("example.org").host == "fixed.test"
    assert r.route("other.org").host == "s.test"


def test_no_table_configured() -> None:
    r = Router(["mx.test"])
    assert r.load() == [] and r.reload() == []
    assert r.route("example.org").key == "smtp:example.org"


def test_config_file_paths_are_relative_to_it(tmp_path: Path) -> None:
    config = tmp_path / "mailwright.toml"
    config.write_text(
        'hostname = "mx.test"\n'
        '[routing]\ntransport_table = "transport"\nsmarthost = "[relay.test]:587"\n'
        '[dns]\nnameservers = ["127.0.0.1"]\nport = 5353\nstatic_table = "hosts"\n'
        '[queue]\ndirectory = "/var/spool/x"\n'
    )
    settings = load_settings(config)
    assert settings.routing.transport_table == tmp_path / "transport"
    assert settings.dns.static_table == tmp_path / "hosts"
    assert settings.queue.directory == Path("/var/spool/x")
    assert settings.dns.port == 5353


@pytest.mark.parametrize(
    ("section", "data", "problem"),
    [
        ("routing", {"smarthost": "[relay"}, "smarthost '[relay': missing ']'"),
        ("dns", {"nameservers": ["localhost"]}, "'localhost' is not an IP address"),
        ("dns", {"port": 0}, "greater than or equal to 1"),
        ("dns", {"address_order": "ipv5"}, "ipv4-first"),
        ("dns", {"resolver": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings(section: str, data: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem.replace("[", r"\[")):
        Settings.model_validate({section: data})


def test_defaults_work_on_a_fresh_machine() -> None:
    settings = Settings()
    assert settings.routing.transport_table is None and settings.routing.smarthost == ""
    assert settings.dns.nameservers == [] and settings.dns.static_table is None
    r, errors = Router.from_settings(settings)
    assert errors == [] and r.route("example.org").key == "smtp:example.org"
