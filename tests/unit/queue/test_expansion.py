"""Alias expansion in the queue manager: the real store, scheduler, expander and local
agent (mailboxes in a temp dir), with a recording agent standing in for remote SMTP."""

from __future__ import annotations

import asyncio
import email
import email.policy
import mailbox
import sqlite3
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailwright.core.address import Address
from mailwright.core.clock import ManualClock
from mailwright.core.delivery import DeliveryResult, Outcome
from mailwright.core.envelope import Notify, Recipient
from mailwright.core.reply import Reply
from mailwright.core.target import Mailer, Target
from mailwright.delivery.agent import DeliveryRequest
from mailwright.delivery.local import LocalAgent
from mailwright.manager.expansion import Expander
from mailwright.manager.scheduler import DeliveryParts, Scheduler, SchedulerSettings
from mailwright.queue.sqlite import SCHEMA_VERSION, SqliteQueueStore
from mailwright.queue.store import AddRecipients, InsertMessage, RecipientState
from mailwright.queue.writer import QueueWriter
from mailwright.routing.aliases import AliasTable, compile_aliases
from mailwright.routing.nexthop import NextHop, Transport
from mailwright.routing.resolution import AddressResolver
from tests.support.localusers import StaticUsers
from tests.unit.queue.conftest import old_queue

from .conftest import build_message

T0 = 1_700_000_000.0
OK = Reply.of(250, "2.0.0", "ok")


class Remote:
    """Stands in for the SMTP agent: accepts everything and keeps what it was given."""

    name = "esmtp"

    def __init__(self) -> None:
        self.requests: list[DeliveryRequest] = []
        self.raw: list[bytes] = []

    async def deliver(self, request: DeliveryRequest) -> list[DeliveryResult]:
        self.requests.append(request)
        self.raw.append(request.headers.encode() + b"\r\n" + b"".join(request.body()))
        return [DeliveryResult(r.index, Outcome.DELIVERED, OK) for r in request.recipients]

    async def close(self) -> None:
        return None

    def sent(self) -> list[tuple[str, list[str]]]:
        return [(r.sender, [x.address for x in r.recipients]) for r in self.requests]

    def reports(self) -> list[EmailMessage]:
        out = []
        for r, raw in zip(self.requests, self.raw, strict=True):
            if r.sender == "":
                out.append(email.message_from_bytes(raw, policy=email.policy.default))
        return out  # type: ignore[return-value]


def route(address: str) -> NextHop:
    domain = address.rpartition("@")[2]
    return (
        NextHop(Transport.LOCAL) if domain in ("mx.test", "") else NextHop(Transport.SMTP, domain)
    )


class Host:
    def __init__(self, tmp: Path, aliases: str) -> None:
        self.tmp = tmp
        self.users = StaticUsers(tmp, ["alice", "bob", "carol", "root"])
        (tmp / "aliases").write_text(aliases)
        compile_aliases(tmp / "aliases", tmp / "aliases.db")
        self.resolver = AddressResolver(
            hostname="mx.test",
            local_domains=["mx.test"],
            users=self.users,
            aliases=AliasTable(tmp / "aliases.db"),
        )
        self.store = SqliteQueueStore(tmp / "queue.db")
        self.store.open()
        self.writer = QueueWriter(self.store)
        self.writer.start()
        self.clock = ManualClock(T0)
        self.remote = Remote()
        local = LocalAgent(self.users)
        self.scheduler = Scheduler(
            self.store,
            self.writer,
            DeliveryParts(
                route,
                {
                    Transport.SMTP: self.remote,
                    Transport.LOCAL: local,
                    Transport.PIPE: local,
                    Transport.FILE: local,
                },
                SchedulerSettings(reporting_mta="mx.test"),
                Expander(
                    self.resolver,
                    self.store,
                    self.writer,
                    clock=self.clock,
                    reporting_mta="mx.test",
                ),
            ),
            clock=self.clock,
        )

    def send(self, *rcpts: str | Recipient, sender: str = "sender@example.com") -> str:
        local, _, domain = sender.rpartition("@")
        msg = build_message(
            recipients=rcpts, sender=Address(local, domain), received_at=self.clock.now()
        )
        self.writer.execute_sync(InsertMessage(msg))
        return msg.queue_id

    def run(self) -> None:
        asyncio.run(self.scheduler.run_once())

    def mailbox(self, user: str) -> list[mailbox.mboxMessage]:
        path = self.users.users[user].mailbox
        return list(mailbox.mbox(path)) if path.exists() else []

    def close(self) -> None:
        self.writer.stop()
        self.store.close()


@pytest.fixture
def host(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Host]:
    h = Host(tmp_path, getattr(request, "param", ""))
    yield h
    h.close()


def aliases(text: str) -> pytest.MarkDecorator:
    """The alias file of the test's host."""
    return pytest.mark.parametrize("host", [text], indirect=True, ids=["aliases"])


def notify(address: str, *kinds: Notify, orcpt: str | None = None) -> Recipient:
    local, _, domain = address.rpartition("@")
    return Recipient(Address(local, domain), frozenset(kinds), orcpt)


@aliases("staff: alice, bob, ext@remote.test\n")
def test_plain_alias_keeps_the_sender_and_names_the_alias(host: Host) -> None:
    qid = host.send("staff@mx.test")
    host.run()
    assert len(host.mailbox("alice")) == len(host.mailbox("bob")) == 1
    assert host.remote.sent() == [("sender@example.com", ["ext@remote.test"])]
    assert host.remote.requests[0].recipients[0].orcpt == "rfc822;staff@mx.test"
    assert host.store.get_message(qid) is None  # everything done
    assert host.mailbox("alice")[0]["Delivered-To"] == "alice@mx.test"


@aliases("staff: alice, bob\n")
def test_each_destination_once_per_message(host: Host) -> None:
    host.send("staff@mx.test", "alice@mx.test", "Alice@mx.test", "bob@mx.test")
    host.run()
    assert [len(host.mailbox(u)) for u in ("alice", "bob")] == [1, 1]


@aliases("a: b\nb: a\n")
def test_loop_bounces_to_the_sender(host: Host) -> None:
    host.send("a@mx.test")
    host.run()
    (report,) = host.remote.reports()
    assert report["To"] == "sender@example.com"
    status = report.get_payload()[1].get_payload()[1]  # type: ignore[index,union-attr]
    assert status["Status"] == "5.4.6" and status["Action"] == "failed"


def test_unknown_user_at_delivery_bounces(host: Host) -> None:
    host.send("nosuch@mx.test")
    host.run()
    (report,) = host.remote.reports()
    status = report.get_payload()[1].get_payload()[1]  # type: ignore[index,union-attr]
    assert (status["Status"], status["Final-Recipient"]) == ("5.1.1", "rfc822; nosuch@mx.test")


LIST = (
    "list: alice, bob, nosuch, ext@remote.test\nowner-list: carol\nplain: alice, bob\nsingle: bob\n"
)


@aliases(LIST)
def test_list_copy_is_sent_by_the_owner_and_errors_reach_the_owner(host: Host) -> None:
    qid = host.send("list@mx.test")
    host.run()
    assert host.store.get_message(qid) is None
    assert len(host.mailbox("alice")) == len(host.mailbox("bob")) == 1
    assert host.mailbox("alice")[0]["Return-Path"] == "<carol@mx.test>"
    assert host.remote.sent() == [("carol@mx.test", ["ext@remote.test"])]
    (bounce,) = host.mailbox("carol")  # the owner hears about nosuch, not the sender
    assert "nosuch@mx.test" in bounce.as_string() and "5.1.1" in bounce.as_string()
    assert host.remote.reports() == []


@aliases(LIST)
def test_notify_success_on_a_list_gives_expanded(host: Host) -> None:
    host.send(notify("list@mx.test", Notify.SUCCESS, Notify.FAILURE))
    host.run()
    (report,) = host.remote.reports()
    assert report["To"] == "sender@example.com"
    status = report.get_payload()[1].get_payload()[1]  # type: ignore[index,union-attr]
    assert (status["Action"], status["Final-Recipient"]) == ("expanded", "rfc822; list@mx.test")
    # members: the owner's envelope, no NOTIFY, no ORCPT passed on
    (request,) = [r for r in host.remote.requests if r.sender]
    assert request.recipients[0].notify is None and request.recipients[0].orcpt is None


@aliases(LIST)
def test_notify_success_on_a_multi_recipient_alias(host: Host) -> None:
    host.send(notify("plain@mx.test", Notify.SUCCESS, orcpt="rfc822;Plain@MX.test"))
    host.run()
    (report,) = host.remote.reports()  # only "expanded": SUCCESS is not passed on
    status = report.get_payload()[1].get_payload()[1]  # type: ignore[index,union-attr]
    assert status["Action"] == "expanded"
    assert status["Original-Recipient"] == "rfc822;Plain@MX.test"
    assert len(host.mailbox("alice")) == 1


@aliases(LIST)
def test_single_recipient_alias_passes_notify_on(host: Host) -> None:
    host.send(notify("single@mx.test", Notify.SUCCESS))
    host.run()
    (report,) = host.remote.reports()
    status = report.get_payload()[1].get_payload()[1]  # type: ignore[index,union-attr]
    assert (status["Action"], status["Final-Recipient"]) == ("delivered", "rfc822; bob@mx.test")
    assert status["Original-Recipient"] == "rfc822;single@mx.test"


@aliases('prog: "|cat > /dev/null", /dev/null, nosuch\n')
def test_programs_files_and_errors_are_queued_as_targets(host: Host) -> None:
    qid = host.send("prog@mx.test")
    host.run()
    (bounce,) = host.remote.reports()
    assert "nosuch@mx.test" in bounce.as_string()
    assert host.store.get_message(qid) is None


def test_stored_targets_survive_the_store(host: Host) -> None:
    qid = host.send("root@mx.test")
    added = host.writer.execute_sync(
        AddRecipients(
            qid,
            [
                Recipient(
                    Address("list", "mx.test"),
                    None,
                    None,
                    Target(Mailer.PROG, "/bin/x -y", "nobody"),
                ),
                Recipient(Address("list", "mx.test"), None, None, Target(Mailer.FILE, "/var/x")),
            ],
            T0,
        )
    )
    message = host.store.get_message(qid)
    assert message is not None
    targets = [r.target for r in message.recipients]
    assert targets == [
        None,
        Target(Mailer.PROG, "/bin/x -y", "nobody"),
        Target(Mailer.FILE, "/var/x"),
    ]
    assert [message.envelope.recipients[i].target for i in added] == targets[1:]
    assert message.recipients[1].state is RecipientState.QUEUED


def test_version_1_queue_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    old_queue(path, 1)
    store = SqliteQueueStore(path)
    store.open()
    try:
        message = store.get_message("OLDQID")
        assert message is not None and message.recipients[0].target is None
        assert message.recipients[0].address == "b@y.test"
    finally:
        store.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
