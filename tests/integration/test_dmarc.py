"""DMARC (policy.dmarc) through the real daemon and real clients, records served by dnsmasq.

One daemon with SPF, the ``dkim_verify`` filter and DMARC on: a message whose From domain
passes SPF through a subdomain of MAIL FROM (relaxed alignment) passes; one signed by
dkimpy for its From domain (key in DNS) passes through DKIM alone; a failing message of a
``p=reject`` domain is refused with 550 5.7.1 at end of data, of a ``p=quarantine`` domain
is held in the queue, of a ``p=none`` domain only marked; a policy lookup that times out
answers 451 4.7.1 and is logged; two From fields are refused; an authenticated client is
not checked. The results are in ``Authentication-Results:``, the mail log line and
``mailwright_dmarc_results_total``. A second daemon with DMARC alone (no SPF hook, no
``dkim_verify``) checks SPF and DKIM itself.
"""

from __future__ import annotations

import base64
import email
import email.policy
import gzip
import smtplib
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mailwright.core.headers import HeaderParser
from mailwright.queue.sqlite import SqliteQueueStore
from tests.support.daemon import Mailwright, free_port, running, wait_until
from tests.support.dns import DnsServer, dnsmasq_available
from tests.support.peers import peer
from tests.support.security import secure_config
from tests.support.smtp_sink import SmtpSink, available
from tests.support.web import Web, value

pytestmark = peer("dnsmasq", dnsmasq_available(), "dnsmasq-base is not installed")

CLIENT = "127.0.0.2"
KEY = ed25519.Ed25519PrivateKey.generate()


def message(author: str, subject: str = "dmarc") -> bytes:
    return (
        f"From: {author}\r\nTo: root@mx.test\r\nSubject: {subject}\r\n"
        "Date: Thu, 26 Nov 2026 06:00:00 +0000\r\nMessage-ID: <1@client.test>\r\n\r\nhello\r\n"
    ).encode()


def signed(author: str, domain: str) -> bytes:
    seed = KEY.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw = message(author)
    signature = dkim.sign(
        raw, b"s1", domain.encode(), base64.b64encode(seed), signature_algorithm=b"ed25519-sha256"
    )
    return bytes(signature) + raw


def key_txt() -> str:
    raw = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = DnsServer(tmp_path_factory.mktemp("dns"))
    server.txt("bounce.spf.test", f"v=spf1 ip4:{CLIENT} -all")
    server.txt("_dmarc.spf.test", "v=DMARC1; p=reject; aspf=r")
    server.txt("_dmarc.dkim.test", "v=DMARC1; p=reject; adkim=s")
    server.txt("s1._domainkey.dkim.test", key_txt())
    server.txt("_dmarc.reject.test", "v=DMARC1; p=reject")
    server.txt("_dmarc.quarantine.test", "v=DMARC1; p=quarantine")
    server.txt("_dmarc.none.test", "v=DMARC1; p=none")
    server.txt("other.test", "v=spf1 -all")  # MAIL FROM of the failing mail: not aligned
    server.zone("client.test", "spf.test", "dkim.test", "reject.test", "quarantine.test")
    server.zone("none.test", "nothing.test")
    server.timeout("slow.test")
    # aggregate reports: two destinations in the domain (one with a size limit too small),
    # one outside that agrees (7.1), one that does not
    rua = (
        "mailto:dmarc@rep.test,mailto:agg@thirdparty.test,mailto:agg@unauthorized.test,"
        "mailto:tiny@rep.test!100"
    )
    # on its command line dnsmasq splits TXT text at commas; in a file, quotes keep them
    conf = tmp_path_factory.mktemp("dnsconf") / "dmarc.conf"
    # failure reports (7.3): one destination in the domain, one outside that agrees, one not
    ruf = "mailto:fail@ruf.test,mailto:f@thirdparty.test,mailto:f@unauthorized.test"
    conf.write_text(
        f'txt-record=_dmarc.rep.test,"v=DMARC1; p=quarantine; pct=0; rua={rua}"\n'
        f'txt-record=_dmarc.ruf.test,"v=DMARC1; p=reject; fo=1; ruf={ruf}"\n'
    )
    conf.chmod(0o644)
    conf.parent.chmod(0o755)
    server.option(f"--conf-file={conf}").zone("_dmarc.rep.test", "_dmarc.ruf.test")
    server.txt("rep.test._report._dmarc.thirdparty.test", "v=DMARC1")
    server.txt("ruf.test._report._dmarc.thirdparty.test", "v=DMARC1")
    server.txt("bounce.ruf.test", f"v=spf1 ip4:{CLIENT} -all")
    server.zone("ruf.test")
    server.txt("bounce.rep.test", f"v=spf1 ip4:{CLIENT} -all")
    server.zone("rep.test", "thirdparty.test", "unauthorized.test")
    with server:
        yield server


def config(root: Path, dns: DnsServer, *, spf: bool = True, **dmarc: Any) -> dict[str, Any]:
    settings = secure_config(root)
    settings["auth"]["plaintext_on_loopback"] = True
    settings["dns"] = {**dns.settings(), "timeout": 1, "lifetime": 1}
    if spf:
        settings["spf"] = {"enabled": True, "fail": "mark", "helo": False}
        settings["filters"] = [{"plugin": "dkim_verify"}]
    settings["dmarc"] = {"enabled": True, "timeout": 3, **dmarc}
    return settings


@pytest.fixture(scope="module")
def mw(dns: DnsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwright]:
    root = tmp_path_factory.mktemp("mw")
    settings = config(root, dns)
    settings["http"] = {"port": free_port(), "token": "dmarc-metrics-token"}
    with running(root, settings) as daemon:
        yield daemon


def submit(mw: Mailwright, sender: str, data: bytes) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", mw.port, source_address=(CLIENT, 0)) as s:
        s.ehlo("client.test")
        s.mail(sender)
        assert s.rcpt("root@mx.test")[0] == 250
        code, text = s.data(data)
    return code, text.decode()


def accepted(mw: Mailwright, sender: str, data: bytes) -> str:
    code, text = submit(mw, sender, data)
    assert code == 250, (code, text)
    return text.split()[1]


def hold_reason(mw: Mailwright, qid: str) -> str | None:
    """The hold reason of a message; None also once it left the queue (never held)."""
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        message = store.get_message(qid)
    finally:
        store.close()
    return None if message is None else message.hold_reason


def queued(mw: Mailwright, qid: str) -> tuple[list[str], str | None]:
    """The Authentication-Results values and the hold reason of a queued message."""
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        text = store.read_headers(qid).encode()
        [held] = [m.hold_reason for m in store.list_messages() if m.queue_id == qid]
    finally:
        store.close()
    parser = HeaderParser()
    parser.feed(text + b"\r\n")
    return [h.text for h in parser.headers if h.name == "Authentication-Results"], held


def test_pass_through_aligned_spf(mw: Mailwright) -> None:
    qid = accepted(mw, "b@bounce.spf.test", message("Ann <ann@spf.test>"))
    [results], held = queued(mw, qid)
    assert results == (
        "mx.test;\tspf=pass smtp.mailfrom=b@bounce.spf.test;\tdkim=none;"
        "\tdmarc=pass (p=REJECT dis=NONE) header.from=spf.test"
    )
    assert held is None
    assert mw.wait_log(f"{qid}: from=<b@bounce.spf.test>").endswith("spf=pass, dmarc=pass")


def test_pass_through_aligned_dkim(mw: Mailwright) -> None:
    qid = accepted(mw, "x@other.test", signed("ann@dkim.test", "dkim.test"))
    [results], _ = queued(mw, qid)
    assert "spf=fail smtp.mailfrom=x@other.test" in results
    assert "dkim=pass header.d=dkim.test header.s=s1" in results
    assert results.endswith("dmarc=pass (p=REJECT dis=NONE) header.from=dkim.test")


def test_reject_refused_at_end_of_data(mw: Mailwright) -> None:
    code, text = submit(mw, "x@other.test", message("a@reject.test"))
    assert (code, text) == (
        550,
        "5.7.1 DMARC policy of reject.test refuses this message from reject.test",
    )
    mw.wait_log("dmarc: [127.0.0.2] header.from=reject.test fail: 550 5.7.1")


def test_quarantine_held(mw: Mailwright) -> None:
    qid = accepted(mw, "x@other.test", message("a@quarantine.test"))
    [results], held = queued(mw, qid)
    assert results.endswith("dmarc=fail (p=QUARANTINE dis=QUARANTINE) header.from=quarantine.test")
    assert held == "DMARC fail: quarantine.test asks to quarantine"


def test_none_marked_only(mw: Mailwright) -> None:
    qid = accepted(mw, "x@other.test", message("a@none.test"))
    [results], held = queued(mw, qid)
    assert results.endswith("dmarc=fail (p=NONE dis=NONE) header.from=none.test")
    assert held is None
    # no record at all
    qid = accepted(mw, "x@other.test", message("a@nothing.test"))
    assert queued(mw, qid)[0][0].endswith("dmarc=none header.from=nothing.test")


def test_temperror_answers_451_and_is_logged(mw: Mailwright) -> None:
    code, text = submit(mw, "x@other.test", message("a@slow.test"))
    assert code == 451 and text.startswith("4.7.1 DMARC: temporary DNS error checking slow.test")
    mw.wait_log("dmarc: [127.0.0.2] header.from=slow.test temperror")


def test_two_from_fields_refused(mw: Mailwright) -> None:
    code, text = submit(mw, "x@other.test", b"From: a@spf.test\r\n" + message("b@reject.test"))
    assert code == 550 and text.startswith("5.7.1 DMARC: the author of this message is unclear")


def test_authenticated_client_not_checked(mw: Mailwright) -> None:
    with smtplib.SMTP("127.0.0.1", mw.port, source_address=(CLIENT, 0)) as s:
        s.ehlo("client.test")
        s.login("alice", "correct horse")
        s.mail("x@other.test")
        s.rcpt("root@mx.test")
        code, text = s.data(message("a@reject.test"))
    assert code == 250, text
    assert queued(mw, text.decode().split()[1])[0] == []


def test_the_metric(mw: Mailwright) -> None:
    accepted(mw, "b@bounce.spf.test", message("ann@spf.test"))
    submit(mw, "x@other.test", message("a@reject.test"))
    samples = Web(mw.config["http"]["port"]).scrape("dmarc-metrics-token")
    name = "mailwright_dmarc_results_total"
    assert value(samples, name, result="pass") >= 1
    assert value(samples, name, result="fail") >= 1


def test_dmarc_alone_checks_spf_and_dkim_itself(dns: DnsServer, tmp_path: Path) -> None:
    with running(tmp_path, config(tmp_path, dns, spf=False, reject="mark")) as mw:
        qid = accepted(mw, "b@bounce.spf.test", message("ann@spf.test"))
        assert queued(mw, qid)[0] == [
            "mx.test;\tspf=pass smtp.mailfrom=b@bounce.spf.test;\tdkim=none;"
            "\tdmarc=pass (p=REJECT dis=NONE) header.from=spf.test"
        ]
        qid = accepted(mw, "x@other.test", signed("ann@dkim.test", "dkim.test"))
        [results] = queued(mw, qid)[0]
        assert "dkim=pass header.d=dkim.test" in results and "dmarc=pass" in results
        qid = accepted(mw, "x@other.test", message("a@reject.test"))  # reject = "mark"
        [results], held = queued(mw, qid)
        assert results.endswith("dmarc=fail (p=REJECT dis=NONE) header.from=reject.test")
        assert held is None


# ---- aggregate reports
INTERVAL = 10  # seconds: a report period short enough for a test, long enough for a busy machine


def report_files(sink: SmtpSink) -> dict[str, tuple[str, bytes]]:
    """Per recipient of the sink's report mail: the attachment's file name and its XML."""
    found = {}
    for received in sink.messages():
        mail = email.message_from_bytes(received.content, policy=email.policy.default)
        [part] = [p for p in mail.walk() if p.get_content_type() == "application/gzip"]
        assert mail["Subject"].startswith("Report Domain: rep.test Submitter: mx.test Report-ID: <")
        found[str(mail["To"])] = (str(part.get_filename()), gzip.decompress(part.get_content()))
    return found


@pytest.mark.skipif(not available(), reason="Postfix's smtp-sink is not installed")
def test_a_report_run_mails_a_valid_report(dns: DnsServer, tmp_path: Path) -> None:
    from dmarc.report import DMARCSchema

    with SmtpSink(tmp_path / "sink") as sink:
        settings = config(tmp_path, dns, reports=True, report_interval=f"{INTERVAL}s")
        settings["routing"]["smarthost"] = f"[127.0.0.1]:{sink.port}"
        settings["delivery"] = {"mode": "background"}  # the reports go out
        settings["local_delivery"] = {"mail_spool": str(tmp_path / "mail")}
        with running(tmp_path / "mw", settings) as mw:
            # all three messages and the dry run within one period
            wait_until(lambda: time.time() % INTERVAL < 1, timeout=INTERVAL + 1)
            accepted(mw, "b@bounce.rep.test", message("a@rep.test"))
            accepted(mw, "b@bounce.rep.test", message("a@rep.test"))
            qid = accepted(mw, "x@other.test", message("a@rep.test"))  # fails; pct=0
            # sampled out: quarantine becomes none (not held; a held message would stay
            # queued, an unheld one may already be on its way to the sink)
            assert hold_reason(mw, qid) is None
            dry = mw.cli("dmarc", "report", "--dry-run")
            assert dry.returncode == 0, dry.stderr
            out = dry.stdout.decode()
            assert out.startswith("rep.test: 3 message(s), 2 record(s)"), out
            assert "  to dmarc@rep.test\n  to agg@thirdparty.test\n" in out
            assert "not to agg@unauthorized.test: external destination not authorized" in out
            assert "not to tiny@rep.test: the report (" in out
            wait_until(lambda: len(sink.messages()) == 2, timeout=3 * INTERVAL, what="reports")
            mw.wait_log("dmarc: 2 aggregate report(s) queued")
        files = report_files(sink)
    assert set(files) == {"dmarc@rep.test", "agg@thirdparty.test"}
    name, xml = files["dmarc@rep.test"]
    assert name.startswith("mx.test!rep.test!") and name.endswith(".xml.gz")
    assert files["agg@thirdparty.test"][1] == xml
    DMARCSchema.validate(xml.decode())  # RFC 7489 Appendix C, as the dmarc package ships it
    feedback = ET.fromstring(xml)
    assert feedback.findtext("policy_published/p") == "quarantine"
    assert feedback.findtext("policy_published/pct") == "0"
    rows = {}
    for r in feedback.iterfind("record"):
        evaluated = r.find("row/policy_evaluated")
        assert evaluated is not None
        key = (evaluated.findtext("spf"), evaluated.findtext("disposition"))
        reasons = [e.text for e in evaluated.iterfind("reason/type")]
        rows[key] = (int(r.findtext("row/count") or 0), reasons)
    assert rows == {("pass", "none"): (2, []), ("fail", "none"): (1, ["sampled_out"])}
    [failed] = [
        r for r in feedback.iterfind("record") if r.findtext("row/policy_evaluated/spf") == "fail"
    ]
    assert failed.findtext("identifiers/header_from") == "rep.test"
    assert failed.findtext("identifiers/envelope_from") == "other.test"
    assert failed.findtext("auth_results/spf/result") == "fail"
    assert failed.findtext("row/source_ip") == CLIENT


# ---- failure reports
def feedback_of(received: bytes) -> tuple[EmailMessage, email.message.Message, str]:
    """A failure report's message, its feedback fields and its returned header section."""
    mail = email.message_from_bytes(received, policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    assert mail.get_content_type() == "multipart/report"
    assert mail.get_param("report-type") == "feedback-report"
    _, feedback, returned = mail.iter_parts()
    return mail, feedback.get_payload()[0], returned.get_content()


@pytest.mark.skipif(not available(), reason="Postfix's smtp-sink is not installed")
def test_failure_reports_to_the_ruf_addresses(dns: DnsServer, tmp_path: Path) -> None:
    with SmtpSink(tmp_path / "sink") as sink:
        settings = config(tmp_path, dns, failure_reports=True, failure_report_interval="1h")
        settings["routing"]["smarthost"] = f"[127.0.0.1]:{sink.port}"
        settings["delivery"] = {"mode": "background"}  # the reports go out
        settings["server"]["workers"] = 1  # one process: one report per domain and hour
        with running(tmp_path / "mw", settings) as mw:
            with smtplib.SMTP("127.0.0.1", mw.port, source_address=(CLIENT, 0)) as s:
                s.starttls(context=ssl._create_unverified_context())
                s.ehlo("client.test")
                s.mail("x@other.test", ["REQUIRETLS"])  # RFC 8689: its headers stay private
                assert s.rcpt("root@mx.test")[0] == 250
                assert s.data(message("ceo@ruf.test", "private"))[0] == 550
            mw.wait_log("dmarc: no failure report for ruf.test: the message asked for REQUIRETLS")
            code, text = submit(mw, "x@other.test", message("ceo@ruf.test", "wire transfer"))
            assert (code, text.split()[0]) == (550, "5.7.1")  # p=reject, refused
            mw.wait_log("dmarc: failure report for ruf.test (dmarc) queued", occurrence=2)
            skipped = mw.wait_log("dmarc: failure report for ruf.test not sent to f@unauthorized")
            assert "external destination not authorized" in skipped
            wait_until(lambda: len(sink.messages()) == 2, what="two failure reports")
            # fo=1: SPF passes aligned but DKIM does not: reported too, once the hour is over
            accepted(mw, "b@bounce.ruf.test", message("ceo@ruf.test", "second"))
            mw.wait_log("dmarc: no failure report for ruf.test: one went within 3600s")
            reports = {m.rcpt_args[0].split()[0]: feedback_of(m.content) for m in sink.messages()}
    assert set(reports) == {"<fail@ruf.test>", "<f@thirdparty.test>"}
    mail, fields, returned = reports["<fail@ruf.test>"]
    assert mail["Subject"] == f"DMARC failure report for ruf.test from {CLIENT}"
    assert mail["From"] == "postmaster@mx.test"
    assert fields["Feedback-Type"] == "auth-failure" and fields["Auth-Failure"] == "dmarc"
    assert fields["Source-IP"] == CLIENT and fields["Reported-Domain"] == "ruf.test"
    assert fields["Original-Mail-From"] == "<x@other.test>"
    assert fields["Delivery-Result"] == "reject" and fields["Identity-Alignment"] == "none"
    assert "dmarc=fail" in str(fields["Authentication-Results"])
    assert "Subject: wire transfer" in returned and "hello" not in returned  # headers only
