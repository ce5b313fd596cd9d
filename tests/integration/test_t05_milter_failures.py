"""Broken filters under each failure policy: the documented reply, nothing lost or half-applied.

A scripted filter (tests/support/rawmilter.py) never answers, closes the
connection, sends garbage, or sends a reply not allowed at that stage; a
missing socket stands for a filter that is not running. ``tempfail`` gives
``451 4.7.1``, ``reject`` gives ``550 5.7.1``, ``accept`` goes on without the
filter, and a message is queued whole (without the broken filter's changes) or
not at all.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.policy.milter import codec
from mailwright.policy.milter.codec import AddHeader, Simple
from mailwright.queue.sqlite import SqliteQueueStore
from tests.support.daemon import Mailwright
from tests.support.rawmilter import CLOSE, HANG, RawMilter, packets
from tests.support.smtp import RawClient

MSG = b"From: a@x.test\r\nSubject: hi\r\n\r\nbody\r\n"
GARBAGE = [b"\x00\x00\x00\x02Zz"]
EXPECTED = {
    "tempfail": "451 4.7.1 Service unavailable - try again later",
    "reject": "550 5.7.1 Command rejected",
}


def queued(mw: Mailwright) -> list[bytes]:
    """Headers of every queued message."""
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        return [store.read_headers(m.queue_id).encode() for m in store.list_messages()]
    finally:
        store.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Any]:
    started: list[Mailwright] = []
    raws: list[RawMilter] = []

    def start(policy: str, script: dict[bytes, Any] | None, **timeouts: float) -> Mailwright:
        spec = f"unix:{tmp_path / 'absent.sock'}"
        if script is not None:
            raw = RawMilter(tmp_path / "raw.sock", script)
            raws.append(raw)
            spec = raw.spec
        filters = [{"milter": spec, "name": "broken", "on_failure": policy,
                    "timeouts": {"read": 0.5, "eom": 0.5, **timeouts}}]  # fmt: skip
        mw = Mailwright(tmp_path / "mw", {"filters": filters}).start()
        started.append(mw)
        return mw

    start.raws = raws  # type: ignore[attr-defined]
    yield start
    for mw in started:
        mw.stop()
    for raw in raws:
        raw.close()


def mw_raw(daemon: Any) -> RawMilter:
    raw: RawMilter = daemon.raws[-1]
    return raw


def transaction(mw: Mailwright) -> list[str]:
    """MAIL, RCPT, DATA, end of data: the reply to each step that was reached."""
    c = RawClient(mw.port)
    assert c.greeting.startswith("220")
    out = [c.cmd("EHLO client.test")]
    for line in ("MAIL FROM:<a@x.test>", "RCPT TO:<b@y.test>", "DATA"):
        out.append(c.cmd(line))
        if not out[-1].startswith(("250", "354")):
            c.cmd("QUIT")
            return out[1:]
    out.append(c.cmd(MSG + b"."))
    c.cmd("QUIT")
    return out[1:]


BROKEN = {
    "not running": None,
    "never answers at connect": {b"C": HANG},
    "closes at RCPT": {b"R": CLOSE},
    "garbage at MAIL": {b"M": GARBAGE},
    "never answers at end of data": {b"E": HANG},
    "closes at end of data": {b"E": CLOSE},
    "modification at MAIL": {b"M": packets(AddHeader(b"X-Early", b"no"))},
    "half-sent modifications then garbage": {
        b"E": packets(AddHeader(b"X-Half", b"applied?")) + GARBAGE
    },
    "invalid reply text": {b"E": packets(codec.ReplyCode(b"250 all fine"))},
    "bad recipient added": {
        b"E": packets(codec.AddRecipient(b"<no good>"), Simple(codec.CONTINUE))
    },
}


@pytest.mark.parametrize("behaviour", list(BROKEN))
@pytest.mark.parametrize("policy", ["tempfail", "reject", "accept"])
def test_broken_filter(daemon: Any, policy: str, behaviour: str) -> None:
    mw = daemon(policy, BROKEN[behaviour])
    replies = transaction(mw)
    if policy == "accept":
        assert [r[:3] for r in replies] == ["250", "250", "354", "250"], replies
        (headers,) = queued(mw)
        assert b"X-Half" not in headers and b"X-Early" not in headers  # nothing half-applied
    else:
        assert replies[-1] == EXPECTED[policy], replies
        assert all(r[:3] in ("250", "354") for r in replies[:-1]), replies
        assert queued(mw) == []
    assert mw.wait_log("milter=broken, stage=")
    assert mw.wait_log("failed=")


def test_slow_filter_within_its_timeout_is_fine(daemon: Any, tmp_path: Path) -> None:
    raw_reply = packets(AddHeader(b"X-Slow", b"yes"), Simple(codec.CONTINUE))
    mw = daemon("tempfail", {b"E": raw_reply}, eom=5)
    assert transaction(mw)[-1].startswith("250 2.0.0")
    (headers,) = queued(mw)
    assert headers.endswith(b"X-Slow: yes\r\n")


def test_failed_filter_is_retried_with_the_next_session(daemon: Any) -> None:
    state = {"first": True}

    def connect(packet: codec.Packet) -> Any:
        if state["first"]:
            state["first"] = False
            return CLOSE
        return packets(Simple(codec.CONTINUE))

    mw = daemon("tempfail", {b"C": connect})
    assert transaction(mw)[0] == EXPECTED["tempfail"]
    assert transaction(mw)[-1].startswith("250 2.0.0")


def test_smtplib_sees_a_tempfail_as_a_temporary_error(daemon: Any) -> None:
    mw = daemon("tempfail", None)
    with smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.ehlo("client.test")
        with pytest.raises(smtplib.SMTPSenderRefused) as err:
            s.sendmail("a@x.test", ["b@y.test"], MSG)
    assert err.value.smtp_code == 451


@pytest.mark.parametrize(
    "answer", [packets(codec.ReplyCode(b"421 4.7.0 filter says bye")), packets(Simple(b"4"))]
)
def test_421_from_the_filter_closes_the_session(daemon: Any, answer: list[bytes]) -> None:
    mw = daemon("tempfail", {b"M": answer})
    c = RawClient(mw.port)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@x.test>").startswith("421 4.7.0")
    assert c.closed()


def test_unknown_commands_are_passed_on(daemon: Any) -> None:
    mw = daemon("tempfail", {})
    c = RawClient(mw.port)
    c.cmd("EHLO client.test")
    assert c.cmd("FROBNICATE now").startswith("500")
    assert c.cmd("MAIL FROM:<a@x.test>").startswith("250")
    c.cmd("QUIT")
    raw = mw_raw(daemon)
    assert b"U" in raw.commands()
    unknown = next(p for p in raw.received if p.cmd == b"U")
    assert unknown.data == b"FROBNICATE now\0"
