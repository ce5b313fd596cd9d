"""DNS blocklists, the pure parts: zone settings, query names (IPv4, IPv6, mapped), which
answers count, TXT text, the reply template, and the configuration errors they give."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mailwright.config.dnsbl import DEFAULT_REPLY, Zone, parse_reply, parse_zone
from mailwright.config.loader import ConfigError, load_settings
from mailwright.config.schema import Settings
from mailwright.policy.dnsbl import client_ip, query_name, read_answer, txt_text


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = client_ip(text)
    assert address is not None
    return address


# ---- query names ---------------------------------------------------------------------------
def test_ipv4_octets_are_reversed() -> None:
    assert query_name(ip("192.0.2.99"), "zen.example") == "99.2.0.192.zen.example"


def test_ipv6_is_32_reversed_nibbles() -> None:
    # RFC 5782 2.4: 2001:db8:1:2:3:4:567:89ab
    name = query_name(ip("2001:db8:1:2:3:4:567:89ab"), "ugly.example.com")
    assert name == (
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com"
    )
    short = query_name(ip("2001:db8::1"), "bl.test")
    assert short.startswith("1.0.0.0.0.0.0.0") and short.count(".") == 33


def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4() -> None:
    assert query_name(ip("::ffff:192.0.2.1"), "bl.test") == "1.2.0.192.bl.test"


def test_what_is_not_an_address_is_not_looked_up() -> None:
    assert client_ip("") is None
    assert client_ip("localhost") is None
    assert client_ip("[192.0.2.1]") == ipaddress.ip_address("192.0.2.1")


# ---- zones and answers ---------------------------------------------------------------------
def test_a_zone_with_answer_filters() -> None:
    zone = parse_zone(" BL.Example. = 127.0.0.2, 127.0.0.10/31 ")
    assert zone.name == "bl.example"
    assert [str(n) for n in zone.answers] == ["127.0.0.2/32", "127.0.0.10/31"]
    assert parse_zone("zen.spamhaus.org") == Zone("zen.spamhaus.org")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty zone name"),
        ("bad zone.example", "not a DNS zone name"),
        ("-bad.example", "not a DNS zone name"),
        ("a..example", "not a DNS zone name"),
        ("[192.0.2.1]", "not a DNS zone name"),
        ("x" * 64 + ".example", "not a DNS zone name"),
        ("a." * 100 + "example", "longer than"),
        ("bl.example=", "no answer addresses"),
        ("bl.example=127.0.0.2,,", "'' is not an IPv4"),
        ("bl.example=127.0.0.300", "'127.0.0.300' is not an IPv4"),
        ("bl.example=::1", "'::1' is not an IPv4"),
    ],
)
def test_bad_zones_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_zone(text)


def test_by_default_127_0_0_0_8_counts_but_127_0_0_1() -> None:
    zone = Zone("bl.test")
    assert read_answer(zone, ["127.0.0.2"]).listed == "127.0.0.2"
    assert read_answer(zone, ["127.0.0.1"]).listed is None  # RFC 5782: "not listed"
    assert read_answer(zone, ["127.1.2.3"]).listed == "127.1.2.3"
    assert read_answer(zone, ["192.0.2.1"]).listed is None  # e.g. a hijacked NXDOMAIN
    assert read_answer(zone, []).listed is None
    assert read_answer(zone, ["127.0.0.1", "127.0.0.4"]).listed == "127.0.0.4"


def test_spamhaus_error_codes_never_count_and_are_reported() -> None:
    for zone in (Zone("zen.test"), parse_zone("zen.test=127.0.0.0/8")):
        answer = read_answer(zone, ["127.255.255.254", "127.255.255.252"])
        assert answer.listed is None
        assert answer.refused == ("127.255.255.254", "127.255.255.252")


def test_an_answer_list_decides_what_counts() -> None:
    zone = parse_zone("bl.test=127.0.0.2,127.0.0.4")
    assert read_answer(zone, ["127.0.0.3"]).listed is None
    assert read_answer(zone, ["127.0.0.3", "127.0.0.4"]).listed == "127.0.0.4"
    assert read_answer(zone, ["127.0.0.2"]).listed == "127.0.0.2"
    wide = parse_zone("bl.test=192.0.2.0/24")  # some lists answer outside 127/8
    assert read_answer(wide, ["192.0.2.7"]).listed == "192.0.2.7"


def test_garbage_records_are_ignored() -> None:
    assert read_answer(Zone("bl.test"), ["not an address", "::1"]).listed is None


def test_txt_becomes_one_line_of_printable_ascii() -> None:
    assert txt_text(['"Listed; see" " https://bl.test/q?1.2.3.4"']) == (
        "Listed; see https://bl.test/q?1.2.3.4"
    )
    assert txt_text(['"a\\013\\010b"', '"\\195\\169"']) == "a b ??"  # CR LF: no injection
    assert len(txt_text([f'"{"x" * 250}"'])) == 200
    assert txt_text([]) == ""


# ---- the reply -----------------------------------------------------------------------------
def test_the_default_reply() -> None:
    reply = parse_reply(DEFAULT_REPLY).render("192.0.2.1", "zen.test")
    assert str(reply) == "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.test"
    assert not parse_reply(DEFAULT_REPLY).wants_txt


def test_reply_templates() -> None:
    template = parse_reply("550 Listed by {zone}: {txt} {{literal}}")
    assert template.wants_txt and template.status == "5.7.1"
    assert str(template.render("192.0.2.1", "bl.test", "see url")) == (
        "550 5.7.1 Listed by bl.test: see url {literal}"
    )
    assert parse_reply("450 try later").status == "4.7.1"
    assert parse_reply("451 4.7.1 {ip} try later").render("::1", "z").code == 451


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("blocked", "write a 4xx or 5xx code"),
        ("250 fine", "write a 4xx or 5xx code"),
        ("554", "write a 4xx or 5xx code"),
        ("554 4.7.1 text", "disagree"),
        ("554 {host}", "unknown field {host}"),
        ("554 {ip.__class__}", "unknown field"),
        ("554 {ip!r}", "unknown field"),
        ("554 {ip:>20}", "unknown field"),
        ("554 {0}", "unknown field"),
        ("554 open {brace", "literal braces"),
    ],
)
def test_bad_replies_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_reply(text)


# ---- settings ------------------------------------------------------------------------------
def test_off_by_default() -> None:
    section = Settings().dnsbl
    assert section.zones == [] and section.timeout == 5.0 and section.reply == DEFAULT_REPLY


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('zones = ["zen spamhaus.org"]', "dnsbl.zones: 'zen spamhaus.org': not a DNS zone name"),
        ('zones = ["bl.test=127.0.0.x"]', "dnsbl.zones: 'bl.test=127.0.0.x': '127.0.0.x' is not"),
        ('zones = ["bl.test", "BL.test."]', "dnsbl.zones: zone 'bl.test' listed twice"),
        ('reply = "554 {client}"', "dnsbl.reply: '554 {client}': unknown field {client}"),
        ('allow = ["192.0.2.0/33"]', "dnsbl.allow: '192.0.2.0/33' is not an IP network"),
        ('timeout = "soon"', "dnsbl.timeout: not a duration"),
        ('zone = ["bl.test"]', "dnsbl.zone: unknown setting"),
    ],
)
def test_configuration_errors_name_file_key_and_problem(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = tmp_path / "mailwright.toml"
    path.write_text(f"[dnsbl]\n{toml}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value)
    assert message in str(info.value), str(info.value)
