"""What the daemon adds to local submissions, and only to them."""

from __future__ import annotations

import asyncio

from mailwright.core.address import Address
from mailwright.core.envelope import MailParams
from mailwright.core.headers import Header, HeaderList
from mailwright.policy.hooks import SessionInfo, Transaction
from mailwright.policy.local_submission import LOCAL_KIND, LocalSubmissionPolicy

POLICY = LocalSubmissionPolicy("mx.test", "example.org", ["mx.test"], {"root", "mailwright"})


def session(kind: str = LOCAL_KIND, user: str = "alice") -> SessionInfo:
    return SessionInfo("1", "local", kind, "", 0, "", 0, local_user=user)


def run(info: SessionInfo, sender: Address | None, headers: list[Header]) -> HeaderList:
    txn = Transaction("Q1", sender, MailParams(), headers=HeaderList(headers))
    assert asyncio.run(POLICY.message(info, txn)) is None
    assert txn.headers is not None
    return txn.headers


RECEIVED = Header.make("Received", "from alice@localhost by mx.test")
COMPLETE = [
    RECEIVED,
    Header.make("From", "a@b"),
    Header.make("Date", "x"),
    Header.make("Message-ID", "<m@x>"),
]


def test_own_address_no_warning() -> None:
    for domain in ("example.org", "mx.test"):
        headers = run(session(), Address("alice", domain), list(COMPLETE))
        assert headers.get("X-Authentication-Warning") is None and len(headers) == 4


def test_other_sender_gets_a_warning_after_received() -> None:
    headers = run(session(), Address("root", "example.org"), list(COMPLETE))
    assert headers[1].name == "X-Authentication-Warning"
    assert headers[1].text == "mx.test: alice set sender to root@example.org using -f"
    headers = run(session(), None, list(COMPLETE))
    assert headers[1].text == "mx.test: alice set sender to <> using -f"


def test_trusted_users_and_network_sessions_are_left_alone() -> None:
    assert run(session(user="root"), Address("x", "y.test"), list(COMPLETE)) == COMPLETE
    assert run(session(kind="smtp"), Address("x", "y.test"), [RECEIVED]) == [RECEIVED]


def test_missing_fields_are_added() -> None:
    headers = run(session(user="nosuchuser"), Address("other", "x.test"), [RECEIVED])
    assert [h.name for h in headers] == [
        "Received",
        "X-Authentication-Warning",
        "From",
        "Date",
        "Message-ID",
    ]
    assert headers.get("From").text == "other@x.test"  # no passwd name on another address
    assert headers.get("Message-ID").text.endswith("@mx.test>")
