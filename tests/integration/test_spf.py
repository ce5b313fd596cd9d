"""SPF (policy.spf) through the real daemon and real clients, records served by dnsmasq.

One daemon refuses ``fail`` (550 5.7.23 at RCPT, with the ``exp=`` explanation)
and answers temperror (a name server that never answers) with 451 4.7.24, marks
``softfail``; its accepted mail carries ``Received-SPF:`` for MAIL FROM and HELO
and one ``Authentication-Results:`` with ``spf=`` merged with the ``dkim_verify``
filter's ``dkim=`` (a forged field with our authserv-id removed); the mail log
line shows ``spf=``; a HELO name whose record fails refuses too; an authenticated
client is not checked. A second daemon with ``fail = "mark"`` accepts a failing
sender and marks it, and counts results in ``mailwright_spf_results_total``.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.core.headers import HeaderParser
from tests.support.daemon import Mailwright, free_port, running
from tests.support.dns import DnsServer, dnsmasq_available
from tests.support.peers import peer
from tests.support.security import secure_config
from tests.support.web import Web, value

pytestmark = peer("dnsmasq", dnsmasq_available(), "dnsmasq-base is not installed")

CLIENT = "127.0.0.2"
MESSAGE = b"From: a@pass.test\r\nTo: root@mx.test\r\nSubject: spf\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = DnsServer(tmp_path_factory.mktemp("dns"))
    server.txt("pass.test", f"v=spf1 ip4:{CLIENT} -all")
    server.txt("fail.test", "v=spf1 ip4:192.0.2.1 -all exp=why.fail.test")
    server.txt("why.fail.test", "%{i} may not send mail for %{d}")
    server.txt("soft.test", "v=spf1 ~all")
    server.txt("client.test", "v=spf1 a:client.test -all").host("client.test", CLIENT)
    server.txt("badhelo.test", "v=spf1 -all")
    server.timeout("slow.test")
    with server:
        yield server


def config(root: Path, dns: DnsServer, **spf: Any) -> dict[str, Any]:
    settings = secure_config(root)
    settings["auth"]["plaintext_on_loopback"] = True
    settings["dns"] = {**dns.settings(), "timeout": 1, "lifetime": 1}
    settings["spf"] = {"enabled": True, "timeout": 3, **spf}
    settings["filters"] = [{"plugin": "dkim_verify"}]
    return settings


@pytest.fixture(scope="module")
def mw(dns: DnsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwright]:
    root = tmp_path_factory.mktemp("mw")
    with running(root, config(root, dns)) as daemon:
        yield daemon


def client(mw: Mailwright, helo: str = "client.test") -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", mw.port, source_address=(CLIENT, 0))
    s.ehlo(helo)
    return s


def send(mw: Mailwright, sender: str, data: bytes = MESSAGE) -> str:
    with client(mw) as s:
        s.mail(sender)
        assert s.rcpt("root@mx.test")[0] == 250
        code, text = s.data(data)
    assert code == 250, (code, text)
    return text.decode().split()[1]


def queued_headers(mw: Mailwright, qid: str) -> list[tuple[str, str]]:
    from mailwright.queue.sqlite import SqliteQueueStore

    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        text = store.read_headers(qid).encode()
    finally:
        store.close()
    parser = HeaderParser()
    parser.feed(text + b"\r\n")
    return [(h.name, h.text) for h in parser.headers]


def named(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for n, value in headers if n == name]


def test_pass_is_marked_and_merged_with_dkim(mw: Mailwright) -> None:
    forged = b"Authentication-Results: mx.test; spf=pass smtp.mailfrom=bank.test\r\n"
    qid = send(mw, "a@pass.test", forged + MESSAGE)
    headers = queued_headers(mw, qid)
    assert named(headers, "Received-SPF") == [
        "pass (mx.test: domain of a@pass.test designates 127.0.0.2 as permitted sender) "
        'client-ip=127.0.0.2; envelope-from="a@pass.test"; helo=client.test; receiver=mx.test; '
        'identity=mailfrom; mechanism="ip4:127.0.0.2"',
        "pass (mx.test: domain of postmaster@client.test designates 127.0.0.2 as permitted "
        'sender) client-ip=127.0.0.2; envelope-from=""; helo=client.test; receiver=mx.test; '
        'identity=helo; mechanism="a:client.test"',
    ]
    assert named(headers, "Authentication-Results") == [
        "mx.test;\tspf=pass smtp.mailfrom=a@pass.test;\tspf=pass smtp.helo=client.test;\tdkim=none"
    ]
    line = mw.wait_log(f"{qid}: from=<a@pass.test>")
    assert line.endswith(", spf=pass"), line


def test_fail_refused_at_rcpt_with_the_explanation(mw: Mailwright) -> None:
    with client(mw) as s:
        assert s.mail("a@fail.test")[0] == 250
        code, text = s.rcpt("root@mx.test")
    assert (code, text.decode()) == (
        550,
        "5.7.23 SPF fail: a@fail.test: 127.0.0.2 may not send mail for fail.test",
    )
    mw.wait_log("spf: [127.0.0.2] mailfrom=a@fail.test fail")


def test_temperror_answers_451_and_is_logged(mw: Mailwright) -> None:
    with client(mw) as s:
        assert s.mail("a@slow.test")[0] == 250
        code, text = s.rcpt("root@mx.test")
    assert code == 451 and text.decode().startswith("4.7.24 SPF: temporary DNS error"), text
    mw.wait_log("spf: [127.0.0.2] mailfrom=a@slow.test temperror")


def test_softfail_marked_only(mw: Mailwright) -> None:
    headers = queued_headers(mw, send(mw, "a@soft.test"))
    [received, _helo] = named(headers, "Received-SPF")
    assert received.startswith("softfail (mx.test: domain of transitioning a@soft.test ")
    assert "spf=softfail smtp.mailfrom=a@soft.test" in named(headers, "Authentication-Results")[0]


def test_helo_fail_refuses(mw: Mailwright) -> None:
    with client(mw, helo="badhelo.test") as s:
        assert s.mail("a@pass.test")[0] == 250
        code, text = s.rcpt("root@mx.test")
    assert code == 550 and text.decode().startswith("5.7.23 SPF fail: HELO badhelo.test"), text


def test_authenticated_client_is_not_checked(mw: Mailwright) -> None:
    with client(mw) as s:
        s.login("alice", "correct horse")
        s.mail("a@fail.test")
        assert s.rcpt("root@mx.test")[0] == 250
        code, text = s.data(MESSAGE)
    assert code == 250, text
    headers = queued_headers(mw, text.decode().split()[1])
    assert named(headers, "Received-SPF") == []


def test_mark_only_and_the_metric(dns: DnsServer, tmp_path: Path) -> None:
    settings = config(tmp_path, dns, fail="mark", helo=False)
    settings["http"] = {"port": free_port(), "token": "spf-metrics-token"}
    with running(tmp_path, settings) as mw:
        headers = queued_headers(mw, send(mw, "a@fail.test"))
        send(mw, "b@fail.test")
        send(mw, "a@pass.test")
        samples = Web(settings["http"]["port"]).scrape("spf-metrics-token")
    name = "mailwright_spf_results_total"
    assert value(samples, name, result="fail") == 2 and value(samples, name, result="pass") == 1
    [received] = named(headers, "Received-SPF")
    assert received.startswith("fail (mx.test: domain of a@fail.test does not designate ")
    assert "mechanism=-all" in received and 'envelope-from="a@fail.test"' in received
    assert named(headers, "Authentication-Results") == [
        "mx.test;\tspf=fail smtp.mailfrom=a@fail.test;\tdkim=none"
    ]
