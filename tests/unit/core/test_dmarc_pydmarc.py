"""core.dmarc cross-checked against the ``dmarc`` package (pydmarc 1.2.1, MIT), an independent
implementation: records and results on generated cases must agree.

Generated: From domains and authenticated domains from a few organizations (subdomains,
siblings, strangers), SPF and DKIM results, and records with every p/sp/adkim/aspf. pct is
100 (pydmarc does not sample). pydmarc is given our organizational domains (its relaxed
alignment asks ``get_public_suffix``), so what is compared is record parsing, alignment,
the result and the p/sp choice. Where pydmarc departs from RFC 7489 and is left out:
a DKIM or SPF ``temperror`` (pydmarc has no DMARC temperror), and records with a bad p
(pydmarc raises; 6.3 says treat as absent or as ``p=none`` with a usable ``rua``).
"""

from __future__ import annotations

import contextlib
import random

import dmarc as pydmarc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwright.core.dmarc import (
    Discovery,
    Disposition,
    Identifier,
    PublicSuffixes,
    Result,
    evaluate,
    parse_record,
)

SUFFIXES = PublicSuffixes.bundled()
DOMAINS = [
    "example.com",
    "mail.example.com",
    "a.b.example.com",
    "example.co.uk",
    "news.example.co.uk",
    "other.org",
    "mail.other.org",
]


class Psl:
    """What pydmarc asks of a public suffix list: our organizational domain."""

    @staticmethod
    def get_public_suffix(domain: str) -> str:
        return SUFFIXES.org_domain(domain)


records = st.builds(
    lambda p, sp, adkim, aspf: "; ".join(
        ["v=DMARC1", f"p={p}"]
        + ([f"sp={sp}"] if sp else [])
        + ([f"adkim={adkim}"] if adkim else [])
        + ([f"aspf={aspf}"] if aspf else [])
    ),
    st.sampled_from(["none", "quarantine", "reject"]),
    st.sampled_from(["", "none", "quarantine", "reject"]),
    st.sampled_from(["", "r", "s"]),
    st.sampled_from(["", "r", "s"]),
)
identifiers = st.tuples(st.sampled_from(DOMAINS), st.sampled_from(["pass", "fail", "none"]))


@settings(max_examples=600, deadline=None)
@given(
    author=st.sampled_from(DOMAINS),
    record=records,
    at_org=st.booleans(),
    spf=identifiers,
    dkim=st.lists(identifiers, max_size=3),
)
def test_results_agree(
    author: str,
    record: str,
    at_org: bool,
    spf: tuple[str, str],
    dkim: list[tuple[str, str]],
) -> None:
    org = SUFFIXES.org_domain(author)
    policy_domain = org if at_org else author
    ours = evaluate(
        author,
        Discovery(None, policy_domain, parse_record(record)),
        Identifier(*spf),
        [Identifier(d, r, "s1") for d, r in dkim],
        SUFFIXES,
        random.Random(0),
    )
    theirs = pydmarc.DMARCPolicy(
        record=record,
        domain=author,
        org_domain=org if policy_domain != author else None,
        publicsuffix=Psl(),
    )
    results: list[pydmarc.AuthResult] = [
        pydmarc.SPF(spf[0], pydmarc.SPFResult(spf[1]), pydmarc.SPFDomainScope.MFROM)
    ]
    results += [pydmarc.DKIM(d, pydmarc.DKIMResult(r), "s1") for d, r in dkim]
    with contextlib.suppress(pydmarc.PolicyError):  # how it says "fail"
        theirs.verify(auth_results=results)
    assert theirs.result is not None
    assert str(ours.result) == theirs.result.result.value
    assert ours.spf_aligned == (theirs.result.spf is pydmarc.DMARCResult.PASS)
    assert ours.dkim_aligned == (theirs.result.dkim is pydmarc.DMARCResult.PASS)
    if ours.result is Result.FAIL:
        assert str(ours.disposition) == theirs.result.disposition.value
    else:
        assert ours.disposition is Disposition.NONE


@pytest.mark.parametrize(
    "record",
    [
        "v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=r; pct=40; ri=3600; fo=1:d",
        "v=DMARC1;p=none",
        "v=DMARC1; p=quarantine; rua=mailto:a@x.example, mailto:b@y.example!10m",
    ],
)
def test_records_agree(record: str) -> None:
    ours = parse_record(record)
    theirs = pydmarc.DMARC().parse_record(record, "x.example")
    assert str(ours.p) == theirs.p.value
    assert (str(ours.sp) if ours.sp else None) == theirs.sp.value
    assert (str(ours.adkim), str(ours.aspf)) == (theirs.adkim.value, theirs.aspf.value)
    assert (ours.pct, ours.ri) == (theirs.pct, theirs.ri)
    assert [u.address for u in ours.rua] == [u.strip()[7:].split("!")[0] for u in theirs.rua]
