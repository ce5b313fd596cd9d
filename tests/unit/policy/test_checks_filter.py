"""The ``checks`` filter on a Transaction: options, each action, header edits, body lines."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from mailwright.config.schema import Settings
from mailwright.core.envelope import MailParams
from mailwright.core.headers import Header, HeaderList
from mailwright.core.reply import Reply
from mailwright.policy.filters import registry
from mailwright.policy.filters.checks import ChecksFilter
from mailwright.policy.hooks import SessionInfo, Transaction
from mailwright.queue.spool import Spool

SESSION = SessionInfo("s1", "smtp", "smtp", "127.0.0.1", 25, "127.0.0.1", 40000)


def make(
    tmp_path: Path, header: str | None = None, body: str | None = None, **extra: object
) -> ChecksFilter:
    options: dict[str, object] = dict(extra)
    if header is not None:
        (tmp_path / "hc").write_text(header)
        options["header_checks"] = str(tmp_path / "hc")
    if body is not None:
        (tmp_path / "bc").write_text(body)
        options["body_checks"] = str(tmp_path / "bc")
    settings = Settings.model_validate(
        {"hostname": "mx.test", "queue": {"directory": str(tmp_path / "q")}}
    )
    return ChecksFilter("checks", registry.validate_options("checks", options), settings)


def txn(body: bytes = b"hello\r\n", *fields: tuple[str, str]) -> Transaction:
    t = Transaction("Q1", None, MailParams())
    t.headers = HeaderList(
        [Header.make(n, v) for n, v in fields or (("From", "a@x.test"), ("Subject", "hi there"))]
    )
    t.body = Spool.from_bytes(body)
    return t


def run(f: ChecksFilter, t: Transaction) -> Reply | None:
    return asyncio.run(f.message(SESSION, t))


def test_options_name_the_bad_line(tmp_path: Path) -> None:
    (tmp_path / "hc").write_text("# rules\n/ok/ WARN\n/bad(/ REJECT\n")
    with pytest.raises(ValueError, match=f"options.header_checks: {tmp_path}/hc:3: bad regex"):
        registry.validate_options("checks", {"header_checks": str(tmp_path / "hc")})
    (tmp_path / "bc").write_text("/x/ IGNORE\n")
    with pytest.raises(ValueError, match=f"options.body_checks: {tmp_path}/bc:1: IGNORE works"):
        registry.validate_options("checks", {"body_checks": str(tmp_path / "bc")})
    with pytest.raises(ValueError, match="give header_checks, body_checks or both"):
        registry.validate_options("checks", {})
    assert next(iter(registry.BUILTINS)) == "checks"


def test_reject_and_defer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = make(tmp_path, "/^Subject: .*there/ REJECT Go away\n/^From:/ DEFER\n")
    caplog.set_level(logging.INFO, "mailwright.mail")
    # headers are inspected in order: the From: rule would decide first
    assert run(f, txn(b"x\r\n", ("Subject", "hi there"))) == Reply.of(550, "5.7.1", "Go away")
    assert "Q1: header_checks=REJECT Subject: hi there; Go away, rule=" in caplog.text
    t = txn(b"x\r\n", ("From", "a@x.test"))
    assert run(f, t) == Reply.of(451, "4.7.1", "Message content deferred, try again later")


def test_reject_text_with_its_own_status(tmp_path: Path) -> None:
    f = make(tmp_path, "/^Subject: a/ REJECT 5.7.0 Policy says no\n/^Subject: b/ DEFER 4.2.0\n")
    assert run(f, txn(b"x\r\n", ("Subject", "a"))) == Reply.of(550, "5.7.0", "Policy says no")
    deferred = Reply.of(451, "4.2.0", "Message content deferred, try again later")
    assert run(f, txn(b"x\r\n", ("Subject", "b"))) == deferred


def test_discard_hold_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mailwright.mail")
    f = make(
        tmp_path, "/^Subject: drop/ DISCARD\n/^Subject: hold/ HOLD quarantined\n/^From:/ WARN\n"
    )
    t = txn(b"x\r\n", ("Subject", "drop me"))
    assert run(f, t) is None and t.discard
    t = txn(b"x\r\n", ("Subject", "hold me"), ("From", "a@x.test"))
    assert run(f, t) is None and t.hold_reason == "quarantined" and not t.discard
    assert "header_checks=WARN From: a@x.test" in caplog.text
    assert "header_checks=HOLD Subject: hold me; quarantined" in caplog.text


def test_header_edits(tmp_path: Path) -> None:
    rules = (
        "/^X-Secret:/ IGNORE\n/^X-Old:/ REPLACE X-New: fresh\n"
        "/^Subject:/ PREPEND X-Seen: yes\n/^X-Keep:/ OK\n/^X-/ IGNORE\n"
    )
    f = make(tmp_path, rules)
    t = txn(
        b"x\r\n",
        ("X-Secret", "1"),
        ("X-Old", "o"),
        ("Subject", "s"),
        ("X-Keep", "k"),
        ("X-Gone", "g"),
    )
    assert run(f, t) is None
    assert t.headers is not None
    assert t.headers.encode() == b"X-New: fresh\r\nX-Seen: yes\r\nSubject: s\r\nX-Keep: k\r\n"


def test_body_reject_deep_and_size_limit(tmp_path: Path) -> None:
    body = b"".join(b"line %d\r\n" % i for i in range(20000)) + b"the magic word\r\n"
    rules = "/^the magic/ REJECT body says no\n"
    assert run(make(tmp_path, body=rules, body_size_limit=10**6), txn(body)) == Reply.of(
        550, "5.7.1", "body says no"
    )
    assert run(make(tmp_path, body=rules), txn(body)) is None  # past the 50 KiB default


def test_body_discard_stops_and_header_reject_skips_body(tmp_path: Path) -> None:
    f = make(tmp_path, "/^Subject: stop/ REJECT\n", "/first/ DISCARD\n/second/ REJECT\n")
    t = txn(b"first\r\nsecond\r\n")
    assert run(f, t) is None and t.discard
    t = txn(b"first\r\n", ("Subject", "stop"))
    assert run(f, t) == Reply.of(550, "5.7.1", "Message content rejected") and not t.discard


def test_rules_are_reread_when_the_filter_is_built(tmp_path: Path) -> None:
    f = make(tmp_path, "/^Subject:/ REJECT old\n")
    (tmp_path / "hc").write_text("/^Subject:/ REJECT new\n")
    assert run(f, txn()) == Reply.of(550, "5.7.1", "old")
    g = ChecksFilter("checks", f.options, f.settings)  # what a SIGHUP reload does
    assert run(g, txn()) == Reply.of(550, "5.7.1", "new")
