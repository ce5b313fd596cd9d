"""core.dmarc: record syntax (RFC 7489 6.3), organizational domains from a small local Public
Suffix List, alignment, discovery (6.6.3), evaluation with p/sp/pct, the RFC5322.From rule."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from mailwright.core.dmarc import (
    Alignment,
    Discovery,
    Disposition,
    FromError,
    Identifier,
    PublicSuffixes,
    Record,
    RecordError,
    ReportUri,
    Result,
    TempError,
    aligned,
    author_domains,
    check_list,
    discover,
    evaluate,
    parse_record,
    parse_uri,
    resinfo,
)
from mailwright.core.headers import Header, HeaderList

PSL = """// a small list for the tests
com
uk
co.uk
*.ck
!www.ck
// ===BEGIN PRIVATE DOMAINS===
blogspot.com
"""


@pytest.fixture
def psl(tmp_path: Path) -> PublicSuffixes:
    path = tmp_path / "psl.dat"
    path.write_text(PSL)
    return PublicSuffixes.from_file(path)


# ---- record syntax
def test_defaults_are_filled_in() -> None:
    assert parse_record("v=DMARC1; p=reject") == Record(Disposition.REJECT)


def test_a_report_address_with_a_line_feed_is_not_usable() -> None:
    assert parse_uri("mailto:x%0A@rep.test") is None
    assert parse_uri("mailto:x@rep.test%0A") is None
    assert parse_uri("mailto:x@rep.test") == ReportUri("x@rep.test")


def test_every_tag() -> None:
    record = parse_record(
        "v=DMARC1;p=quarantine; sp=none ; adkim=s; aspf=s; pct=20; ri=3600; fo=1;"
        " rua=mailto:a@rep.test!10m,mailto:b@rep.test, https://x.test/; ruf=mailto:f@x.test"
    )
    assert record == Record(
        Disposition.QUARANTINE,
        Disposition.NONE,
        Alignment.STRICT,
        Alignment.STRICT,
        20,
        (ReportUri("a@rep.test", 10 << 20), ReportUri("b@rep.test")),
        3600,
        "1",
        (ReportUri("f@x.test"),),
    )


@pytest.mark.parametrize(
    "text",
    ["v=DMARC2; p=reject", "p=reject; v=DMARC1", "v=dmarc1; p=reject", "v=spf1 -all", ""],
)
def test_not_a_dmarc_record(text: str) -> None:
    with pytest.raises(RecordError):
        parse_record(text)


def test_bad_p_without_rua_is_no_record_and_with_rua_is_none() -> None:
    with pytest.raises(RecordError):
        parse_record("v=DMARC1; p=block")
    with pytest.raises(RecordError):
        parse_record("v=DMARC1; p=reject; sp=bogus")
    record = parse_record("v=DMARC1; p=block; rua=mailto:r@x.test")
    assert record.p is Disposition.NONE and record.rua == (ReportUri("r@x.test"),)


def test_bad_optional_values_take_their_defaults_and_unknown_tags_are_ignored() -> None:
    record = parse_record("v=DMARC1; p=REJECT; pct=250; adkim=x; ri=soon; np=reject; x=y")
    assert record == Record(Disposition.REJECT)
    assert parse_record("v=DMARC1; p=none; pct=0").pct == 0


@pytest.mark.parametrize(
    ("text", "uri"),
    [
        ("mailto:dmarc@example.org", ReportUri("dmarc@example.org")),
        ("mailto:d@EXAMPLE.org!50k", ReportUri("d@example.org", 50 << 10)),
        ("mailto:d%2Bx@example.org?subject=y", ReportUri("d+x@example.org")),
        ("mailto:d@example.org!big", None),
        ("https://example.org/report", None),
        ("mailto:nobody", None),
    ],
)
def test_report_uris(text: str, uri: ReportUri | None) -> None:
    assert parse_uri(text) == uri


# ---- organizational domains and alignment
def test_org_domains_from_the_local_list(psl: PublicSuffixes) -> None:
    assert psl.org_domain("mail.example.com") == "example.com"
    assert psl.org_domain("a.b.example.co.uk") == "example.co.uk"
    assert psl.org_domain("x.foo.ck") == "x.foo.ck"  # *.ck: foo.ck is a public suffix
    assert psl.org_domain("a.www.ck") == "www.ck"  # !www.ck: the exception
    assert psl.org_domain("me.blogspot.com") == "me.blogspot.com"  # private section counts
    assert psl.org_domain("co.uk") == "co.uk"  # a public suffix is its own
    assert psl.org_domain("Sub.Example.COM.") == "example.com"


def test_the_bundled_list_knows_real_suffixes() -> None:
    assert PublicSuffixes.bundled().org_domain("a.b.example.co.uk") == "example.co.uk"


def test_a_file_that_is_not_a_list_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<html><body>Not found</body></html>\n")
    with pytest.raises(ValueError, match="not a Public Suffix List"):
        PublicSuffixes.from_file(page)
    assert check_list(PSL) == 6


def test_alignment(psl: PublicSuffixes) -> None:
    assert aligned("example.com", "EXAMPLE.com.", Alignment.STRICT, psl)
    assert not aligned("example.com", "mail.example.com", Alignment.STRICT, psl)
    assert aligned("news.example.com", "mail.example.com", Alignment.RELAXED, psl)
    assert not aligned("example.com", "example.net", Alignment.RELAXED, psl)
    assert not aligned("a.blogspot.com", "b.blogspot.com", Alignment.RELAXED, psl)
    assert not aligned("a.co.uk", "b.co.uk", Alignment.RELAXED, psl)


# ---- discovery
def run_discover(
    domain: str, org: str, zone: dict[str, list[str]], fail: frozenset[str] = frozenset()
) -> tuple[Discovery, list[str]]:
    """Discovery over a static zone; the names asked, in order."""
    asked: list[str] = []

    async def lookup(name: str) -> list[str]:
        asked.append(name)
        if name in fail:
            raise TempError("SERVFAIL")
        return zone.get(name, [])

    return asyncio.run(discover(domain, org, lookup)), asked


def test_discovery_falls_back_to_the_organizational_domain() -> None:
    zone = {"_dmarc.example.com": ["v=spf1 -all", "v=DMARC1; p=reject; sp=quarantine"]}
    found, asked = run_discover("mail.example.com", "example.com", zone)
    assert asked == ["_dmarc.mail.example.com", "_dmarc.example.com"]
    assert found.result is None and found.domain == "example.com"
    assert found.record is not None and found.record.sp is Disposition.QUARANTINE


def test_discovery_uses_the_author_domain_first() -> None:
    zone = {
        "_dmarc.mail.example.com": ["v=DMARC1; p=none"],
        "_dmarc.example.com": ["v=DMARC1; p=reject"],
    }
    found, asked = run_discover("mail.example.com", "example.com", zone)
    assert asked == ["_dmarc.mail.example.com"] and found.domain == "mail.example.com"


def test_no_record_several_records_and_dns_failure() -> None:
    assert run_discover("example.com", "example.com", {})[0].result is Result.NONE
    two = {"_dmarc.example.com": ["v=DMARC1; p=none", "v=DMARC1; p=reject"]}
    assert run_discover("example.com", "example.com", two)[0].result is Result.PERMERROR
    failed = run_discover("a.example.com", "example.com", {}, frozenset({"_dmarc.example.com"}))[0]
    assert failed.result is Result.TEMPERROR
    # an unusable record counts as none found, so the organizational domain is asked
    zone = {
        "_dmarc.a.example.com": ["v=DMARC1; p=bogus"],
        "_dmarc.example.com": ["v=DMARC1; p=reject"],
    }
    found = run_discover("a.example.com", "example.com", zone)[0]
    assert found.domain == "example.com" and found.record == Record(Disposition.REJECT)


# ---- evaluation
def found(text: str, domain: str = "example.com") -> Discovery:
    return Discovery(None, domain, parse_record(text))


SPF_PASS = Identifier("bounce.example.com", "pass")


def test_pass_through_relaxed_spf(psl: PublicSuffixes) -> None:
    ev = evaluate("example.com", found("v=DMARC1; p=reject"), SPF_PASS, [], psl, random.Random(1))
    assert (ev.result, ev.spf_aligned, ev.dkim_aligned) == (Result.PASS, True, False)


def test_strict_spf_does_not_align_a_subdomain(psl: PublicSuffixes) -> None:
    ev = evaluate(
        "example.com", found("v=DMARC1; p=reject; aspf=s"), SPF_PASS, [], psl, random.Random(1)
    )
    assert (ev.result, ev.disposition) == (Result.FAIL, Disposition.REJECT)


def test_pass_through_dkim_only_when_it_passes_and_aligns(psl: PublicSuffixes) -> None:
    record = found("v=DMARC1; p=quarantine; adkim=s")
    dkim = [
        Identifier("other.org", "pass", "s1"),
        Identifier("example.com", "fail", "s2"),
        Identifier("example.com", "pass", "s3"),
    ]
    ev = evaluate("example.com", record, Identifier("x.org", "pass"), dkim, psl, random.Random(1))
    assert ev.result is Result.PASS and ev.dkim_domains == ("example.com",)
    ev = evaluate("example.com", record, None, dkim[:2], psl, random.Random(1))
    assert (ev.result, ev.disposition) == (Result.FAIL, Disposition.QUARANTINE)


def test_sp_applies_to_subdomains_found_through_the_org_domain(psl: PublicSuffixes) -> None:
    record = found("v=DMARC1; p=reject; sp=quarantine")
    ev = evaluate("news.example.com", record, None, [], psl, random.Random(1))
    assert ev.requested is Disposition.QUARANTINE
    ev = evaluate("example.com", record, None, [], psl, random.Random(1))
    assert ev.requested is Disposition.REJECT


def test_pct_samples_with_the_random_it_is_given(psl: PublicSuffixes) -> None:
    record = found("v=DMARC1; p=reject; pct=30")
    rng = random.Random(7)
    expected = random.Random(7)
    outcomes = [evaluate("example.com", record, None, [], psl, rng) for _ in range(1000)]
    applied = sum(1 for ev in outcomes if ev.disposition is Disposition.REJECT)
    assert applied == sum(1 for _ in range(1000) if expected.random() * 100 < 30)
    assert 250 < applied < 350
    out = [ev for ev in outcomes if ev.sampled_out]
    assert out and all(ev.disposition is Disposition.QUARANTINE for ev in out)
    assert all(ev.result is Result.FAIL for ev in outcomes)
    none = found("v=DMARC1; p=quarantine; pct=0")
    ev = evaluate("example.com", none, None, [], psl, rng)
    assert (ev.disposition, ev.sampled_out) == (Disposition.NONE, True)


def test_temperror_when_an_aligned_identifier_could_not_be_checked(psl: PublicSuffixes) -> None:
    record = found("v=DMARC1; p=reject")
    dkim = [Identifier("example.com", "temperror", "s1")]
    ev = evaluate("example.com", record, None, dkim, psl, random.Random(1))
    assert (ev.result, ev.disposition) == (Result.TEMPERROR, Disposition.REJECT)
    other = [Identifier("other.org", "temperror", "s1")]
    assert evaluate("example.com", record, None, other, psl, random.Random(1)).result is Result.FAIL


def test_discovery_results_pass_through(psl: PublicSuffixes) -> None:
    none = Discovery(Result.NONE, "example.com", problem="no DMARC record")
    ev = evaluate("example.com", none, SPF_PASS, [], psl, random.Random(1))
    assert (ev.result, ev.disposition) == (Result.NONE, Disposition.NONE)


def test_resinfo() -> None:
    ev = evaluate(
        "example.com",
        found("v=DMARC1; p=reject; sp=none"),
        None,
        [],
        PublicSuffixes.bundled(),
        random.Random(1),
    )
    assert resinfo(ev, Disposition.QUARANTINE) == (
        "dmarc=fail (p=REJECT sp=NONE dis=QUARANTINE) header.from=example.com"
    )


# ---- the author domain (6.6.1)
def headers(*fields: tuple[str, str]) -> HeaderList:
    return HeaderList(Header.make(name, value) for name, value in fields)


def test_author_domains() -> None:
    assert author_domains(headers(("From", '"Ann" <ann@Example.COM>'))) == ["example.com"]
    two = headers(("From", "a@one.test, b@two.test, c@one.test"))
    assert author_domains(two) == ["one.test", "two.test"]
    assert author_domains(headers(("Subject", "x"))) == []


@pytest.mark.parametrize(
    "fields",
    [
        [("From", "a@one.test"), ("From", "b@two.test")],
        [("From", "nobody")],
        [("From", "undisclosed:;")],
        [("From", "a@-bad-.test")],
    ],
)
def test_an_unclear_author_is_an_error(fields: list[tuple[str, str]]) -> None:
    with pytest.raises(FromError):
        author_domains(headers(*fields))
