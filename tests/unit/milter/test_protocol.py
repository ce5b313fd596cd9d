"""Negotiation, endpoints, reply texts and macro values of the milter MTA side."""

from __future__ import annotations

import pytest

from mailwright.config.endpoint import Endpoint, parse_endpoint
from mailwright.config.schema import FailurePolicy, Settings
from mailwright.core.address import Address
from mailwright.core.domains import DomainSet
from mailwright.core.envelope import MailParams, Recipient
from mailwright.core.reply import Reply
from mailwright.policy.hooks import SessionInfo, Transaction
from mailwright.policy.milter import macros, verdict
from mailwright.policy.milter.codec import Action, OptNegReply, Proto, Stage
from mailwright.policy.milter.negotiation import NegotiationError, Offer, Step, negotiate
from mailwright.routing.router import Router
from mailwright.routing.transport import parse_transport_table


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("unix:/run/x.sock", Endpoint("unix", path="/run/x.sock")),
        ("local:/run/x.sock", Endpoint("unix", path="/run/x.sock")),
        ("/run/x.sock", Endpoint("unix", path="/run/x.sock")),
        ("inet:8891@127.0.0.1", Endpoint("inet", host="127.0.0.1", port=8891)),
        ("inet:8891", Endpoint("inet", host="127.0.0.1", port=8891)),
        ("inet6:8891@::1", Endpoint("inet6", host="::1", port=8891)),
        ("inet:127.0.0.1:8891", Endpoint("inet", host="127.0.0.1", port=8891)),  # Postfix
        ("inet:[::1]:8891", Endpoint("inet6", host="::1", port=8891)),
    ],
)
def test_socket_specs(spec: str, expected: Endpoint) -> None:
    assert parse_endpoint(spec) == expected


@pytest.mark.parametrize("spec", ["tcp:1@x", "inet:99999@x", "unix:rel", "inet:x@h", "nothing"])
def test_bad_socket_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(spec)


def test_offers_per_version() -> None:
    assert Offer.for_version(6) == Offer(6, 0x1FF, 0x1FFFFF)  # RCPT_REJ offered (Postfix)
    assert Offer.for_version(2) == Offer(2, 0x3F, 0x7F)
    assert Offer.for_version(4).protocol & Proto.NODATA


def test_negotiated_steps() -> None:
    reply = OptNegReply(6, 0x1FF, Proto.NOHELO | Proto.NR_HDR | Proto.HDR_LEADSPC | Proto.SKIP)
    options = negotiate(Offer.for_version(6), reply, {Stage.CONNECT: ("j",)})
    assert not options.sends(Step.HELO) and options.sends(Step.MAIL)
    assert not options.waits(Step.HEADER) and options.waits(Step.BODY)
    assert options.leading_space and options.skip
    assert options.macro_names(Stage.CONNECT) == ("j",)
    v2 = negotiate(Offer.for_version(6), OptNegReply(2, 0x3F, 0), {})
    assert not v2.sends(Step.DATA) and not v2.sends(Step.UNKNOWN)
    assert not v2.sends_macros(Stage.DATA) and not v2.sends_macros(Stage.EOH)
    v3 = negotiate(Offer.for_version(6), OptNegReply(3, 0x3F, 0), {})
    assert v3.sends(Step.UNKNOWN) and not v3.sends(Step.DATA)


def test_filter_macro_lists_replace_configured_ones_with_setsymlist() -> None:
    reply = OptNegReply(6, 0x1FF, 0, {3: b"{rcpt_addr} i", 0: b"j,{client_addr}"})
    options = negotiate(Offer.for_version(6), reply, {Stage.ENVRCPT: ("x",), Stage.EOM: ("y",)})
    assert options.macro_names(Stage.ENVRCPT) == ("{rcpt_addr}", "i")
    assert options.macro_names(Stage.CONNECT) == ("j", "{client_addr}")
    assert options.macro_names(Stage.EOM) == ("y",)
    without = negotiate(Offer.for_version(6), OptNegReply(6, 0xFF, 0, {3: b"z"}), {})
    assert without.macro_names(Stage.ENVRCPT) == ()


@pytest.mark.parametrize(
    "reply",
    [
        OptNegReply(1, 0, 0),
        OptNegReply(7, 0, 0),
        OptNegReply(6, 0x200, 0),
        OptNegReply(4, 0, Proto.RCPT_REJ),  # not offered below version 6
        OptNegReply(6, Action.SETSYMLIST, 0, {9: b"j"}),
    ],
)
def test_unacceptable_answers(reply: OptNegReply) -> None:
    offer = Offer.for_version(4 if reply.version == 4 else 6)
    with pytest.raises(NegotiationError):
        negotiate(offer, reply, {})


def test_rcpt_rej_is_granted_when_asked_for() -> None:
    options = negotiate(Offer.for_version(6), OptNegReply(6, 0, Proto.RCPT_REJ), {})
    assert options.rcpt_rejected
    assert not negotiate(Offer.for_version(6), OptNegReply(6, 0, 0), {}).rcpt_rejected


def test_v2_offer_refuses_v6_answer() -> None:
    with pytest.raises(NegotiationError):
        negotiate(Offer.for_version(2), OptNegReply(6, 0x3F, 0), {})


@pytest.mark.parametrize(
    ("text", "code", "status", "lines"),
    [
        (b"550 5.7.1 Go away", 550, "5.7.1", ("Go away",)),
        (b"451 try later", 451, None, ("try later",)),
        (b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 last", 550, "5.7.1",
         ("first", "second", "last")),
        (b"550 5.7.1 100%% sure", 550, "5.7.1", ("100% sure",)),
        (b"421 4.7.0 bye", 421, "4.7.0", ("bye",)),
        (b"554", 554, None, ("",)),
    ],
)  # fmt: skip
def test_valid_reply_texts(text: bytes, code: int, status: str | None, lines: tuple[str]) -> None:
    reply = verdict.parse_reply_text(text)
    assert reply is not None and (reply.code, reply.status, reply.lines) == (code, status, lines)


@pytest.mark.parametrize(
    "text",
    [b"250 ok", b"550-first", b"550 a\r\n550 b", b"550-a\r\n451 b", b"hello", b"55 x", b"5501 x"],
)
def test_invalid_reply_texts(text: bytes) -> None:
    assert verdict.parse_reply_text(text) is None


def test_failure_replies() -> None:
    assert str(verdict.failure_reply(FailurePolicy.TEMPFAIL)).startswith("451 4.7.1")
    assert str(verdict.failure_reply(FailurePolicy.REJECT)).startswith("550 5.7.1")
    assert verdict.failure_reply(FailurePolicy.ACCEPT) is None


def test_macro_values_per_scope() -> None:
    source = macros.MacroSource("mx.test", DomainSet(["mx.test"]))
    session = SessionInfo("1", "MTA", "smtp", "127.0.0.1", 25, "192.0.2.9", 4567)
    txn = Transaction("QID1", Address("a", "x.test"), MailParams(auth="someone@x.test"))
    names = ["j", "{client_addr}", "client_name", "_", "i", "{mail_addr}", "{rcpt_addr}"]
    names += ["{rcpt_mailer}", "{rcpt_host}", "{auth_author}", "{unknown_macro}", "{auth_type}"]
    connect = dict(macros.values(names, source, macros.MacroScope(session)))
    assert connect == {
        b"j": b"mx.test",
        b"{client_addr}": b"192.0.2.9",
        b"client_name": b"[192.0.2.9]",
        b"_": b"[192.0.2.9]",
    }
    rcpt = Recipient(Address("u", "mx.test"))
    full = dict(macros.values(names, source, macros.MacroScope(session, txn, rcpt)))
    assert full[b"i"] == b"QID1" and full[b"{mail_addr}"] == b"a@x.test"
    assert full[b"{rcpt_mailer}"] == b"local" and full[b"{rcpt_addr}"] == b"u@mx.test"
    assert full[b"{auth_author}"] == b"someone@x.test"
    null = Transaction("QID2", None, MailParams())
    assert dict(macros.values(["{mail_addr}"], source, macros.MacroScope(session, null))) == {
        b"{mail_addr}": b""
    }


def test_config_accepts_sendmail_timeouts_and_macro_strings() -> None:
    settings = Settings.model_validate(
        {
            "filters": [
                {
                    "milter": "inet:127.0.0.1:8891",
                    "timeouts": "C:30s;S:10s;R:1m;E:5m",
                    "macros": {"connect": "j, {client_addr}"},
                }
            ]
        }
    )
    (entry,) = settings.filters
    assert entry.milter == "inet:8891@127.0.0.1"  # type: ignore[union-attr]
    assert entry.timeouts.read == 60 and entry.timeouts.connect == 30  # type: ignore[union-attr]
    assert entry.macros.connect == ["j", "{client_addr}"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "entry",
    [
        {"milter": "tcp:x"},
        {"milter": "inet:1@h", "protocol": 5},
        {"milter": "inet:1@h", "timeouts": "X:5m"},
    ],
)
def test_bad_filter_config(entry: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Settings.model_validate({"filters": [entry]})


def test_route_macros_come_from_the_router() -> None:
    """Issue 12 item 21: Postfix's transport names and next hops."""
    table, errors = parse_transport_table(
        b"relay.test smtp:[192.0.2.1]:2525\nl.test lmtp:unix:/run/l.sock\nno.test error:5.7.1 no\n"
    )
    assert not errors
    router = Router(["mx.test"], table=table)
    source = macros.MacroSource("mx.test", DomainSet(["mx.test"]), router.route)
    session = SessionInfo("1", "MTA", "smtp", "127.0.0.1", 25, "192.0.2.9", 4567)
    txn = Transaction("QID1", Address("a", "relay.test"), MailParams())
    names = ["{mail_mailer}", "{mail_host}", "{rcpt_mailer}", "{rcpt_host}", "{rcpt_addr}"]

    def route(address: Address, refusal: Reply | None = None) -> dict[bytes, bytes]:
        scope = macros.MacroScope(session, txn, Recipient(address), refusal)
        return dict(macros.values(names, source, scope))

    assert route(Address("u", "mx.test"))[b"{mail_mailer}"] == b"smtp"
    assert route(Address("u", "mx.test"))[b"{mail_host}"] == b"[192.0.2.1]:2525"
    expected = {
        Address("u", "mx.test"): (b"local", b"mx.test"),
        Address("u", "l.test"): (b"lmtp", b"unix:/run/l.sock"),
        Address("u", "no.test"): (b"error", b"5.7.1"),
        Address("u", "Far.Test"): (b"smtp", b"far.test"),
    }
    for address, (mailer, host) in expected.items():
        got = route(address)
        assert (got[b"{rcpt_mailer}"], got[b"{rcpt_host}"]) == (mailer, host), address
    refused = route(Address("u", "far.test"), Reply.of(550, "5.1.1", "User unknown"))
    assert refused[b"{rcpt_mailer}"] == b"error" and refused[b"{rcpt_host}"] == b"5.1.1"
    assert refused[b"{rcpt_addr}"] == b"User unknown"
