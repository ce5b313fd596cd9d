"""The DKIM signature of mailed TLS reports (RFC 8460 5.3) and their ``TLS-Required: No``
(RFC 8689): the mail ``report_message`` makes, verified by dkimpy; which key the daemon
signs with (``tls_reporting.dkim_*``, else a ``dkim`` filter covering the sender's domain);
the settings' checks; and the SMTP agent's reading of the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mailwright.config.schema import Settings
from mailwright.core.dkim import SigningKey
from mailwright.daemon.tlsreports import REPORT_HEADERS, Identity, _signer, report_signer
from mailwright.delivery.agent import DeliveryRequest
from mailwright.delivery.smtp import tls_not_required
from mailwright.routing.tlsrpt import ReportedPolicy, Result, TlsRecorder, utc_day
from mailwright.routing.tlsrpt_report import build_report, compressed, report_message
from tests.support.arc import Dns, pem_file, rsa_key
from tests.support.delivery_request import request as delivery_request
from tests.support.delivery_request import smtp_hop
from tests.support.peers import require_module

NOON = 1772366400.0  # 2026-03-01T12:00:00Z


def pem(tmp_path: Path, key: SigningKey, name: str = "key.pem") -> str:
    return pem_file(tmp_path / name, key)


def raw_report(signer: Any = None) -> bytes:
    recorder = TlsRecorder(clock=lambda: NOON)
    recorder.record(ReportedPolicy.none("b.test"), Result.SUCCESS)
    counts = recorder.take()
    report = build_report(
        "b.test", utc_day(NOON), counts, organization="o", contact="c", submitter="mx.a.test"
    )
    message = report_message(
        queue_id="QID1",
        sender="noreply-tlsrpt@mx.a.test",
        recipient="tls@b.test",
        submitter="mx.a.test",
        domain="b.test",
        report=report,
        data=compressed(report),
        now=NOON,
        signer=signer,
    )
    return message.headers.encode() + b"\r\n" + b"".join(message.body.chunks())


def test_a_signed_report_verifies_and_a_changed_one_does_not() -> None:
    dkim = require_module("dkim", "pip install '.[dev]' (dkimpy)")
    key, dns = rsa_key(), Dns()
    dns.add("tlsrpt", "a.test", key)
    raw = raw_report(_signer("a.test", "tlsrpt", key))
    assert raw.startswith(b"DKIM-Signature:")
    signature = raw.split(b"\r\n\r\n")[0].split(b"\r\nFrom:")[0]
    assert b"d=a.test" in signature and b"s=tlsrpt" in signature
    assert b"l=" not in signature.replace(b"\r\n\t", b"")  # RFC 8460 5.3: no body length
    for name in (b"TLS-Report-Domain", b"TLS-Report-Submitter", b"TLS-Required"):
        assert name in signature
    assert b"\r\nTLS-Required: No\r\n" in raw
    assert dkim.verify(raw, dnsfunc=dns.dnsfunc)
    assert not dkim.verify(raw.replace(b"TLS-Report-Domain: b.test", b"TLS-Report-Domain: x.test"),
                           dnsfunc=dns.dnsfunc)  # fmt: skip
    assert not dkim.verify(raw.replace(b"aggregate TLS report", b"aggregate TLS rep0rt"),
                           dnsfunc=dns.dnsfunc)  # fmt: skip


def test_without_a_signer_the_report_is_unsigned() -> None:
    raw = raw_report()
    assert b"DKIM-Signature" not in raw and b"\r\nTLS-Required: No\r\n" in raw


def settings(**values: Any) -> Settings:
    return Settings.model_validate({"hostname": "mx.a.test", **values})


def test_the_signer_of_the_tls_reporting_settings(tmp_path: Path) -> None:
    path = pem(tmp_path, rsa_key())
    signer = report_signer(
        settings(tls_reporting={"dkim_key_file": path, "dkim_selector": "r1"}), "mx.a.test"
    )
    assert signer is not None and (signer.domain, signer.selector) == ("mx.a.test", "r1")
    assert signer.headers == REPORT_HEADERS
    named = settings(
        tls_reporting={"dkim_key_file": path, "dkim_selector": "r1", "dkim_domain": "A.Test."}
    )
    signer = report_signer(named, "mx.a.test")
    assert signer is not None and signer.domain == "a.test"


def test_the_signer_of_a_dkim_filter_that_covers_the_sender(tmp_path: Path) -> None:
    other = {"domain": "other.test", "selector": "o", "key_file": pem(tmp_path, rsa_key(), "o")}
    ours = {"domain": "a.test", "selector": "s1", "key_file": pem(tmp_path, rsa_key(), "s")}
    filters = [
        {"milter": "inet:127.0.0.1:9999", "name": "a milter"},
        {"plugin": "dkim", "options": other},
        {"plugin": "dkim", "name": "ours", "options": ours},
    ]
    found = settings(filters=filters)
    identity = Identity.from_settings(found)
    assert identity.sender == "noreply-tlsrpt@mx.a.test"
    assert identity.signer is not None
    assert (identity.signer.domain, identity.signer.selector) == ("a.test", "s1")
    assert report_signer(found, "elsewhere.test") is None
    assert Identity.from_settings(settings()).signer is None
    explicit = {"dkim_key_file": ours["key_file"], "dkim_selector": "r9"}
    both = report_signer(settings(filters=filters, tls_reporting=explicit), "mx.a.test")
    assert both is not None and both.selector == "r9"  # the explicit key comes first


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"dkim_key_file": "KEY"}, "dkim_key_file needs a dkim_selector"),
        ({"dkim_selector": "s1"}, "need a dkim_key_file"),
        (
            {"dkim_key_file": "/nonexistent/k.pem", "dkim_selector": "s1"},
            "cannot read DKIM key /nonexistent/k.pem",
        ),
        ({"dkim_key_file": "KEY", "dkim_selector": "no such"}, "is not a DKIM selector"),
        ({"dkim_key_file": "KEY", "dkim_selector": "s", "dkim_domain": "a b"}, "not a domain"),
    ],
)
def test_bad_dkim_settings(tmp_path: Path, section: dict[str, str], problem: str) -> None:
    path = pem(tmp_path, rsa_key())
    section = {k: path if v == "KEY" else v for k, v in section.items()}
    with pytest.raises(ValidationError, match=problem):
        settings(tls_reporting=section)


def test_a_small_rsa_key_is_refused(tmp_path: Path) -> None:
    path = pem(tmp_path, rsa_key(1024))
    with pytest.raises(ValidationError, match="RSA 1024 bits; at least 2048 needed"):
        settings(tls_reporting={"dkim_key_file": path, "dkim_selector": "s1"})


def request(*fields: tuple[str, str]) -> DeliveryRequest:
    head = b"".join(f"{name}: {value}\r\n".encode() for name, value in fields)
    return delivery_request(smtp_hop("b.test"), "u@b.test", message=head + b"\r\nbody\r\n")


@pytest.mark.parametrize(
    ("fields", "relaxed"),
    [
        ([("TLS-Required", "No")], True),
        ([("tls-required", " nO ")], True),
        ([], False),
        ([("TLS-Required", "Yes")], False),
        ([("TLS-Required", "No, please")], False),
        ([("TLS-Required", "No"), ("TLS-Required", "No")], False),  # RFC 8689: one field
        ([("X-TLS-Required", "No")], False),
    ],
)
def test_the_tls_required_field(fields: list[tuple[str, str]], relaxed: bool) -> None:
    assert tls_not_required(request(*fields)) is relaxed


def test_a_key_gone_since_the_settings_loaded_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = pem(tmp_path, rsa_key())
    loaded = settings(tls_reporting={"dkim_key_file": path, "dkim_selector": "r1"})
    options = {"domain": "a.test", "selector": "s1", "key_file": pem(tmp_path, rsa_key(), "f")}
    filtered = settings(filters=[{"plugin": "dkim", "options": options}])
    Path(path).unlink()
    Path(options["key_file"]).unlink()
    with caplog.at_level("ERROR", logger="mailwright.tlsrpt"):
        assert report_signer(loaded, "mx.a.test") is None
        assert report_signer(filtered, "mx.a.test") is None
    assert f"cannot sign them: cannot read DKIM key {path}" in caplog.text
    assert f"cannot read DKIM key {options['key_file']}: No such file" in caplog.text
    assert "errors.pydantic.dev" not in caplog.text


def test_unsigned_reports_are_a_warning_of_config_check(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mailwright.cli.main import cli
    from mailwright.daemon.tlsreports import unsigned_warning

    path = tmp_path / "mailwright.toml"
    base = 'hostname = "mx.a.test"\n[queue]\ndirectory = "q"\n'
    path.write_text(base + "[tls_reporting]\nenabled = true\n")
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"])
    assert result.exit_code == 0, result.stderr  # a warning: the reports still go
    assert "warning: tls_reporting: mailed reports will not be DKIM-signed" in result.stderr
    assert "a dkim filter whose domains cover mx.a.test" in result.stderr
    key = pem(tmp_path, rsa_key())
    signed = f'enabled = true\ndkim_key_file = "{key}"\ndkim_selector = "r1"\n'
    path.write_text(base + "[tls_reporting]\n" + signed)
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"])
    assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr
    assert unsigned_warning(settings()) is None  # reporting off: nothing to sign
