"""Issue 12, items 9, 21 and 23 (milter): what Sendmail and Postfix 3.7 do, through a real daemon.

* A modification whose action was not negotiated is a protocol error: the filter
  has failed, its failure policy answers, nothing it sent is applied, and the
  failure is logged once.
* A filter's reply to an unknown SMTP command (UNKNOWN) is the client's reply.
* A recipient the MTA refused is shown to a filter that asked for
  ``SMFIP_RCPT_REJ``, with ``{rcpt_mailer}`` ``error``; the refusal stands.
* DISCARD at CONNECT/HELO and SKIP outside the body are logged and ignored.
* ``{mail_mailer}``/``{mail_host}``/``{rcpt_mailer}``/``{rcpt_host}`` follow the route.
* A refusal at CONNECT or HELO: the greeting stays 220 (a 421 replaces it and
  closes), every HELO/EHLO (and unknown command) gets the refusal, so no mail
  can be sent (MAIL: 503); RSET, NOOP and QUIT work.

Filters: the raw scripted milter (tests/support/rawmilter.py) and the pymilter
(libmilter) test filter (tests/support/testmilter.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.policy.milter import codec
from mailwright.policy.milter.codec import Action, Proto, Simple
from mailwright.queue.sqlite import SqliteQueueStore
from tests.support.daemon import Mailwright
from tests.support.milters import py_filter
from tests.support.rawmilter import CLOSE, RawMilter, packets
from tests.support.smtp import RawClient

pytestmark = pytest.mark.timeout(120)

MSG = b"From: a@x.test\r\nSubject: hi\r\n\r\nbody\r\n"


def queued(mw: Mailwright) -> list[tuple[str, list[str], bytes]]:
    """(sender, recipients, headers and hold reason) of every queued message."""
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        out = []
        for m in store.list_messages():
            envelope = m.envelope
            rcpts = [str(r.address) for r in envelope.recipients]
            sender = str(envelope.sender) if envelope.sender else ""
            held = f"held: {m.hold_reason}\r\n".encode() if m.hold_reason else b""
            body = b"".join(store.read_body(m.queue_id))
            out.append((sender, rcpts, store.read_headers(m.queue_id).encode() + held + body))
        return out
    finally:
        store.close()


def transaction(mw: Mailwright, rcpts: tuple[str, ...] = ("b@y.test",)) -> list[str]:
    """EHLO, MAIL, RCPT..., DATA, end of data: the reply to each step reached."""
    c = RawClient(mw.port)
    assert c.greeting.startswith("220")
    out = [c.cmd("EHLO client.test"), c.cmd("MAIL FROM:<a@x.test>")]
    out += [c.cmd(f"RCPT TO:<{r}>") for r in rcpts]
    if any(r.startswith("250") for r in out[2:]):
        out.append(c.cmd("DATA"))
        if out[-1].startswith("354"):
            out.append(c.cmd(MSG + b"."))
    c.cmd("QUIT")
    return out


@pytest.fixture
def raw_daemon(tmp_path: Path) -> Iterator[Callable[..., tuple[Mailwright, RawMilter]]]:
    started: list[Mailwright] = []
    raws: list[RawMilter] = []

    def start(
        script: dict[bytes, Any] | None = None, policy: str = "tempfail", **raw_options: int
    ) -> tuple[Mailwright, RawMilter]:
        raw = RawMilter(tmp_path / f"raw{len(raws)}.sock", script, **raw_options)
        raws.append(raw)
        filters = [{"milter": raw.spec, "name": "raw", "on_failure": policy,
                    "timeouts": {"read": 5, "eom": 5}}]  # fmt: skip
        mw = Mailwright(tmp_path / f"mw{len(started)}", {"filters": filters}).start()
        started.append(mw)
        return mw, raw

    yield start
    for mw in started:
        mw.stop()
    for raw in raws:
        raw.close()


# ---- item 9: modifications that were not negotiated -----------------------------------------
UNGRANTED: dict[str, tuple[codec.Modification, Action]] = {
    "ADDHEADER": (codec.AddHeader(b"X-Ungranted", b"yes"), Action.ADDHDRS),
    "INSHEADER": (codec.InsertHeader(0, b"X-Ungranted", b"yes"), Action.ADDHDRS),
    "CHGHEADER": (codec.ChangeHeader(1, b"Subject", b"X-Ungranted"), Action.CHGHDRS),
    "ADDRCPT": (codec.AddRecipient(b"<ungranted@y.test>"), Action.ADDRCPT),
    "ADDRCPT_PAR": (codec.AddRecipient(b"<ungranted@y.test>", b"NOTIFY=NEVER", True),
                    Action.ADDRCPT_PAR),
    "DELRCPT": (codec.DeleteRecipient(b"<b@y.test>"), Action.DELRCPT),
    "CHGFROM": (codec.ChangeFrom(b"<ungranted@x.test>"), Action.CHGFROM),
    "REPLBODY": (codec.ReplaceBody(b"X-Ungranted body\r\n"), Action.CHGBODY),
    "QUARANTINE": (codec.Quarantine(b"X-Ungranted"), Action.QUARANTINE),
}  # fmt: skip


def untouched(entry: tuple[str, list[str], bytes]) -> bool:
    sender, rcpts, headers = entry
    return sender == "a@x.test" and rcpts == ["b@y.test"] and b"X-Ungranted" not in headers


@pytest.mark.parametrize("policy", ["tempfail", "accept"])
def test_a_modification_not_negotiated_is_a_filter_failure(raw_daemon: Any, policy: str) -> None:
    state: dict[str, Any] = {}
    mw, raw = raw_daemon({b"E": lambda p: state["answer"]}, policy)
    for failures, (name, (mod, needed)) in enumerate(UNGRANTED.items(), start=1):
        raw.actions = 0x1FF & ~needed  # everything else granted
        state["answer"] = packets(mod, Simple(codec.CONTINUE))
        replies = transaction(mw)
        mw.wait_log(f"milter=raw, stage=eom, failed=sent {type(mod).__name__} without", 20)
        # the session's own line comes after the filter's: then every line of it is in
        later = "ruleset=check_eom" if policy == "tempfail" else "from=<a@x.test>"
        mw.wait_log(later, occurrence=failures)
        if policy == "tempfail":
            assert replies[-1] == "451 4.7.1 Service unavailable - try again later", name
            assert queued(mw) == [], name
        else:
            assert replies[-1].startswith("250 2.0.0"), (name, replies)
            assert all(untouched(entry) for entry in queued(mw)), name
        # logged once: one line per failure, none from the milter logger besides it
        assert sum(is_failure_line(line) for line in mw.log) == failures, mw.log[-10:]
        assert not [
            line for line in mw.log if "without negotiating" in line and "failed=" not in line
        ]


def is_failure_line(line: str) -> bool:
    return "milter" in line and "raw" in line and "failed" in line


def test_a_failure_is_logged_once(raw_daemon: Any) -> None:
    """Issue 12 item 23: one line per failure (it was a warning plus a mail-log line)."""
    mw, _ = raw_daemon({b"M": CLOSE})
    assert transaction(mw)[1] == "451 4.7.1 Service unavailable - try again later"
    line = mw.wait_log("failed=")
    assert "milter=raw, stage=mail, failed=filter closed the connection" in line
    assert "action=tempfail" in line
    mw.wait_log("ruleset=check_mail")  # the session's refusal, logged after the failure
    assert [x for x in mw.log if is_failure_line(x)] == [line]


def test_the_same_modification_is_applied_when_negotiated(raw_daemon: Any) -> None:
    mw, _ = raw_daemon({b"E": packets(*(m for m, _ in UNGRANTED.values() if not isinstance(
        m, codec.ReplaceBody | codec.Quarantine)), Simple(codec.CONTINUE))})  # fmt: skip
    assert transaction(mw)[-1].startswith("250 2.0.0")
    ((sender, rcpts, headers),) = queued(mw)
    assert sender == "ungranted@x.test" and rcpts == ["ungranted@y.test"]
    assert headers.count(b"X-Ungranted") == 3


# ---- item 21: the filter's reply to an unknown command --------------------------------------
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (packets(codec.ReplyCode(b"550 5.7.1 No %% such thing here")),
         "550 5.7.1 No % such thing here"),
        (packets(Simple(codec.REJECT)), "550 5.7.1 Command rejected"),
        (packets(Simple(codec.TEMPFAIL)), "451 4.3.2 Please try again later"),
        (packets(Simple(codec.CONTINUE)), "500 5.5.1 Command unrecognized"),
        (packets(Simple(codec.ACCEPT)), "500 5.5.1 Command unrecognized"),
    ],
)  # fmt: skip
def test_the_filters_reply_to_an_unknown_command(
    raw_daemon: Any, answer: list[bytes], expected: str
) -> None:
    mw, raw = raw_daemon({b"U": answer})
    c = RawClient(mw.port)
    c.cmd("EHLO client.test")
    assert c.cmd("FROBNICATE now") == expected
    assert c.cmd("MAIL FROM:<a@x.test>").startswith("250")  # the session goes on
    c.cmd("QUIT")
    assert [p.data for p in raw.received if p.cmd == b"U"] == [b"FROBNICATE now\0"]


def test_a_421_to_an_unknown_command_closes_the_session(raw_daemon: Any) -> None:
    mw, _ = raw_daemon({b"U": packets(codec.ReplyCode(b"421 4.7.0 go away"))})
    c = RawClient(mw.port)
    c.cmd("EHLO client.test")
    assert c.cmd("FROBNICATE now") == "421 4.7.0 go away"
    assert c.closed()


def test_a_libmilter_filter_answers_unknown_commands(tmp_path: Path) -> None:
    with py_filter(tmp_path, "t") as f:
        filters = [{"milter": f.spec, "name": "t", "timeouts": {"read": 10}}]
        mw = Mailwright(tmp_path / "mw", {"filters": filters}).start()
        try:
            c = RawClient(mw.port)
            c.cmd("EHLO client.test")
            assert c.cmd("XREJECT this") == "550 5.7.1 refused by t"
            assert c.cmd("XTEMPFAIL that").startswith("451 ")
            assert c.cmd("XOTHER") == "500 5.5.1 Command unrecognized"
            c.cmd("QUIT")
        finally:
            mw.stop()
        unknown = [e["args"][0] for e in f.wait_for("unknown", 3) if e["cb"] == "unknown"]
        assert unknown == ["XREJECT this", "XTEMPFAIL that", "XOTHER"]


# ---- item 21: SMFIP_RCPT_REJ ------------------------------------------------------------------
def test_rcpt_rej_shows_refused_recipients_and_the_refusal_stands(raw_daemon: Any) -> None:
    def rcpt(packet: codec.Packet) -> list[bytes]:  # its own refusal must not stick either
        refused = packet.data.startswith(b"<nosuchuser@")
        return packets(codec.ReplyCode(b"550 5.7.1 me neither") if refused else Simple(b"c"))

    mw, raw = raw_daemon({b"R": rcpt}, protocol=Proto.RCPT_REJ)
    replies = transaction(mw, ("nosuchuser@mx.test", "b@y.test"))
    assert replies[2].startswith("550 5.1.1"), replies
    assert replies[3].startswith("250") and replies[-1].startswith("250 2.0.0"), replies
    rcpts = [p.data.split(b"\0")[0] for p in raw.received if p.cmd == b"R"]
    assert rcpts == [b"<nosuchuser@mx.test>", b"<b@y.test>"]
    refused, good = raw.macros(b"R")
    assert refused["{rcpt_mailer}"] == "error" and refused["{rcpt_host}"] == "5.1.1"
    assert refused["{rcpt_addr}"] == replies[2].split(" ", 2)[2]  # the refusal's text
    assert good["{rcpt_mailer}"] == "smtp" and good["{rcpt_addr}"] == "b@y.test"
    ((_, queued_rcpts, _),) = queued(mw)
    assert queued_rcpts == ["b@y.test"]


def test_accept_of_a_refused_recipient_ends_the_message_for_the_filter(raw_daemon: Any) -> None:
    """As with libmilter (its state goes back to HELO): nothing more for this message."""
    mw, raw = raw_daemon({b"R": packets(Simple(codec.ACCEPT))}, protocol=Proto.RCPT_REJ)
    replies = transaction(mw, ("nosuchuser@mx.test", "b@y.test"))
    assert replies[2].startswith("550 5.1.1") and replies[-1].startswith("250 2.0.0"), replies
    assert raw.commands().count(b"R") == 1 and b"E" not in raw.commands()
    ((_, queued_rcpts, _),) = queued(mw)
    assert queued_rcpts == ["b@y.test"]


def test_without_rcpt_rej_refused_recipients_are_not_shown(raw_daemon: Any) -> None:
    mw, raw = raw_daemon()
    transaction(mw, ("nosuchuser@mx.test", "b@y.test"))
    rcpts = [p.data.split(b"\0")[0] for p in raw.received if p.cmd == b"R"]
    assert rcpts == [b"<b@y.test>"]


def test_a_libmilter_filter_asking_for_rcpt_rej_sees_the_refused_recipient(
    tmp_path: Path,
) -> None:
    with py_filter(tmp_path, "t", "--rcpt-rej") as f:
        filters = [{"milter": f.spec, "name": "t", "timeouts": {"read": 10}}]
        mw = Mailwright(tmp_path / "mw", {"filters": filters}).start()
        try:
            replies = transaction(mw, ("nosuchuser@mx.test", "b@y.test"))
        finally:
            mw.stop()
        assert replies[2].startswith("550 5.1.1") and replies[-1].startswith("250 2.0.0")
        rcpts = [e for e in f.wait_for("rcpt", 2) if e["cb"] == "rcpt"]
        assert [e["args"][0] for e in rcpts] == ["<nosuchuser@mx.test>", "<b@y.test>"]
        assert rcpts[0]["macros"]["{rcpt_mailer}"] == "error"
        assert rcpts[0]["macros"]["{rcpt_host}"] == "5.1.1"


# ---- item 21: DISCARD at CONNECT/HELO, SKIP outside the body ----------------------------------
@pytest.mark.parametrize(
    ("stage", "verdict"),
    [(b"C", codec.DISCARD), (b"H", codec.DISCARD), (b"R", codec.SKIP), (b"M", codec.SKIP)],
)
def test_out_of_place_discard_and_skip_are_ignored(
    raw_daemon: Any, stage: bytes, verdict: bytes
) -> None:
    mw, raw = raw_daemon({stage: packets(Simple(verdict))}, "tempfail")
    replies = transaction(mw)
    assert [r[:3] for r in replies] == ["250", "250", "250", "354", "250"], replies
    (entry,) = queued(mw)
    assert entry[1] == ["b@y.test"]  # delivered, not discarded
    name = "DISCARD" if verdict == codec.DISCARD else "SKIP"
    assert "milter=raw" in mw.wait_log(f"ignored={name} not allowed at")
    assert not [line for line in mw.log if "failed=" in line]
    assert raw.commands().count(b"E") == 1  # the filter took part to the end


# ---- item 21: route macros --------------------------------------------------------------------
def test_route_macros_follow_the_transport_table(tmp_path: Path) -> None:
    table = tmp_path / "transport"
    table.write_text(
        "route.test smtp:[127.0.0.1]:2525\n"
        f"lmtp.test lmtp:unix:{tmp_path}/lmtp.sock\n"
        "refused.test error:5.7.1 no mail for you\n"
        "x.test smtp:relay.example:587\n"
    )
    with py_filter(tmp_path, "t") as f:
        filters = [{"milter": f.spec, "name": "t", "timeouts": {"read": 10}}]
        config = {"filters": filters, "routing": {"transport_table": str(table)}}
        mw = Mailwright(tmp_path / "mw", config).start()
        try:
            rcpts = ("b@route.test", "c@lmtp.test", "root@mx.test", "d@y.test")
            replies = transaction(mw, rcpts)
        finally:
            mw.stop()
        assert replies[-1].startswith("250 2.0.0"), replies
        events = f.wait_for("rcpt", 4)
        mail = next(e for e in events if e["cb"] == "mail")
        assert (mail["macros"]["{mail_mailer}"], mail["macros"]["{mail_host}"]) == (
            "smtp", "relay.example:587")  # fmt: skip
        routes = {e["args"][0]: (e["macros"]["{rcpt_mailer}"], e["macros"]["{rcpt_host}"])
                  for e in events if e["cb"] == "rcpt"}  # fmt: skip
        assert routes == {
            "<b@route.test>": ("smtp", "[127.0.0.1]:2525"),
            "<c@lmtp.test>": ("lmtp", f"unix:{tmp_path}/lmtp.sock"),
            "<root@mx.test>": ("local", "mx.test"),
            "<d@y.test>": ("smtp", "y.test"),
        }


# ---- item 21: a refusal at CONNECT or HELO, as docs/milter.md describes it --------------------
@pytest.mark.parametrize("stage", [b"C", b"H"])
def test_a_refusal_at_connect_or_helo(raw_daemon: Any, stage: bytes) -> None:
    mw, raw = raw_daemon({stage: packets(codec.ReplyCode(b"550 5.7.1 Not you"))})
    c = RawClient(mw.port)
    assert c.greeting.startswith("220 ")
    assert c.cmd("EHLO client.test") == "550 5.7.1 Not you"
    assert c.cmd("HELO client.test") == "550 5.7.1 Not you"
    assert c.cmd("FROBNICATE") == "550 5.7.1 Not you"  # unknown commands too
    # no HELO succeeded, so the core refuses the transaction itself
    assert c.cmd("MAIL FROM:<a@x.test>") == "503 5.5.1 Send EHLO or HELO first"
    assert c.cmd("RSET").startswith("250")
    assert c.cmd("NOOP").startswith("250")
    assert c.cmd("QUIT").startswith("221")
    assert queued(mw) == []
    hello = [p for p in raw.received if p.cmd == b"H"]
    assert len(hello) == (0 if stage == b"C" else 1)  # not asked again after refusing


def test_a_421_at_connect_is_the_greeting(raw_daemon: Any) -> None:
    mw, _ = raw_daemon({b"C": packets(codec.ReplyCode(b"421 4.7.0 Not now"))})
    c = RawClient(mw.port)
    assert c.greeting == "421 Not now"  # a greeting carries no enhanced status code
    assert c.closed()
