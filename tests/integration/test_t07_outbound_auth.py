"""SMTP AUTH as a client (RFC 4954) against Mailwright's own submission listener as the
smarthost: daemon A relays through B (``routing.smarthost`` and ``delivery.auth_table``).
The right password delivers (B records ESMTPSA and the user); a wrong one defers with
B's 535 in the status and never a password in a log line; without TLS the credentials go
only to a loopback peer unless the exemption is off (then 4.7.0, nothing sent); pooled
sessions are reused only with the same credentials; a peer without AUTH gets the mail."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.core.delivery import DeliveryResult
from mailwright.delivery.session import TlsPolicy
from mailwright.delivery.smtp import SmtpAgent
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.routing.nexthop import NextHop
from mailwright.smtp.client import Credentials
from tests.support.daemon import Mailwright, running
from tests.support.delivery_request import request, smtp_hop
from tests.support.security import secure_config, users_file
from tests.support.smtp_peer import SmtpPeer

PASSWORD = "correct horse"  # alice's password on B (tests.support.security)
WRONG = "wrong-Pa55word"
MSG = b"From: a@a.test\r\nTo: user@far.test\r\nSubject: via the smarthost\r\n\r\nbody\r\n"


@pytest.fixture
def smarthost(tmp_path: Path) -> Iterator[Mailwright]:
    """B: a submission listener that wants STARTTLS, then AUTH; queues what it accepts."""
    mw = Mailwright(tmp_path / "b", secure_config(tmp_path / "b"))
    mw.config["listeners"] = [{"address": "127.0.0.1", "port": mw.port, "kind": "submission"}]
    mw.start()
    try:
        yield mw
    finally:
        mw.stop()


@pytest.fixture
def plaintext_smarthost(tmp_path: Path) -> Iterator[Mailwright]:
    """B without TLS: AUTH offered in plaintext to loopback clients."""
    users = users_file(tmp_path / "users", {"alice": PASSWORD, "bob": "battery staple"})
    config = {
        "auth": {"users_file": str(users), "plaintext_on_loopback": True, "failure_delay": 0.05},
        "relay": {"networks": []},
        "listeners": [],
    }
    mw = Mailwright(tmp_path / "b", config)
    mw.config["listeners"] = [{"address": "127.0.0.1", "port": mw.port, "kind": "submission"}]
    mw.start()
    try:
        yield mw
    finally:
        mw.stop()


def relay_config(root: Path, smarthost: Mailwright, login: str, **delivery: Any) -> dict:  # type: ignore[type-arg]
    table = root / "relay-passwords"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(f"# smarthost login\n[127.0.0.1]:{smarthost.port}  {login}\n")
    table.chmod(0o600)
    return {
        "hostname": "a.test",
        "routing": {"smarthost": f"[127.0.0.1]:{smarthost.port}"},
        "delivery": {"mode": "background", "auth_table": str(table), **delivery},
        "queue": {"host_status_timeout": 0},
    }


def submit(mw: Mailwright) -> str:
    import smtplib

    with smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.ehlo("client.test")
        s.mail("a@a.test")
        s.rcpt("user@far.test")
        code, text = s.data(MSG)
    assert code == 250
    return text.decode().split()[1]


def queued_copy(mw: Mailwright) -> tuple[Any, str]:
    line = mw.wait_log("from=<a@a.test>")
    match = re.search(r"(\w+): from=<a@a.test>", line)
    assert match, line
    qid = match.group(1)
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        return store.get_message(qid), store.read_headers(qid).encode().decode()
    finally:
        store.close()


def waiting(mw: Mailwright) -> dict[str, list[str]]:
    """Queue id -> the recipients still queued (read straight from the queue database)."""
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        return {
            m.queue_id: [r.address for r in m.recipients if r.state.value == "queued"]
            for m in store.list_messages()
        }
    finally:
        store.close()


def test_right_password_relays_through_the_smarthost(tmp_path: Path, smarthost: Mailwright) -> None:
    with running(tmp_path / "a", relay_config(tmp_path / "a", smarthost, "alice:" + PASSWORD)) as a:
        qid = submit(a)
        line = a.wait_log(f"{qid}: to=<user@far.test>")
        assert "stat=Sent" in line, line
        assert not any(PASSWORD in x for x in a.log)
        assert not any("auth table" in x for x in a.log)  # a clean, private file: no warning
    message, headers = queued_copy(smarthost)
    assert message.origin.auth_user == "alice" and message.origin.protocol == "ESMTPSA"
    assert "with ESMTPSA id" in headers
    assert "authid=alice" in smarthost.wait_log("event=AUTH=server")


def test_wrong_password_defers_and_keeps_the_mail(tmp_path: Path, smarthost: Mailwright) -> None:
    config = relay_config(tmp_path / "a", smarthost, "alice:" + WRONG)
    with running(tmp_path / "a", config) as a:
        qid = submit(a)
        line = a.wait_log(f"{qid}: to=<user@far.test>")
        assert "stat=Deferred" in line and "dsn=4.7.0" in line, line
        assert "535 5.7.8" in line and "alice" in line, line
        assert waiting(a)[qid] == ["user@far.test"]
        assert not any(WRONG in x for x in a.log)
    assert "AUTH=server failure" in smarthost.wait_log("AUTH=server failure")
    assert not any("from=<a@a.test>" in x for x in smarthost.log)


def test_bad_table_lines_and_a_readable_file_are_logged(
    tmp_path: Path, smarthost: Mailwright
) -> None:
    config = relay_config(tmp_path / "a", smarthost, "alice:" + PASSWORD)
    table = Path(config["delivery"]["auth_table"])
    table.write_text(table.read_text() + "[broken  bob:" + WRONG + "\nlonely:" + WRONG + "\n")
    table.chmod(0o644)
    with running(tmp_path / "a", config) as a:
        assert f"{table}:3: key '[broken'" in a.wait_log(f"{table}:3:")
        assert f"{table}:4: one word only" in a.wait_log(f"{table}:4:")
        assert "readable by group or others" in a.wait_log("readable by group")
        qid = submit(a)  # the good line still works
        assert "stat=Sent" in a.wait_log(f"{qid}: to=<user@far.test>")
        assert not any(WRONG in x or PASSWORD in x for x in a.log)
        checked = a.cli("config", "check")  # the same problems, before a restart
        err = checked.stderr.decode()
        assert checked.returncode == 78 and f"{table}:3: key '[broken'" in err
        assert "readable by group or others" in err and WRONG not in err


def deliver_all(agent: SmtpAgent, hop: NextHop, count: int = 1) -> list[DeliveryResult]:
    async def main() -> list[DeliveryResult]:
        try:
            results = []
            for _ in range(count):
                results += await agent.deliver(request(hop, "user@far.test", sender="a@a.test"))
            return results
        finally:
            await agent.close()

    return asyncio.run(main())


def test_no_tls_means_no_credentials_unless_the_peer_is_loopback(
    plaintext_smarthost: Mailwright,
) -> None:
    b = plaintext_smarthost
    hop = smtp_hop("127.0.0.1", b.port)
    login = Credentials("alice", PASSWORD)
    strict = SmtpAgent(
        "a.test",
        None,
        tls=TlsPolicy(starttls=False),
        credentials=lambda h: login,
        plaintext_auth_loopback=False,
    )
    [refused] = deliver_all(strict, hop)
    assert refused.outcome.value == "deferred" and refused.reply.status == "4.7.0"
    assert "refusing to send credentials without TLS" in refused.reply.text
    assert not any("AUTH=server" in x for x in b.log)  # nothing was tried
    loopback = SmtpAgent("a.test", None, credentials=lambda h: login)
    [sent] = deliver_all(loopback, hop)
    assert sent.outcome.value == "delivered", sent.reply
    assert sent.details["auth"] == "PLAIN" and sent.details["auth_user"] == "alice"
    message, headers = queued_copy(b)
    assert message.origin.auth_user == "alice" and "with ESMTPA id" in headers


def test_pooled_sessions_are_kept_per_credentials(plaintext_smarthost: Mailwright) -> None:
    b = plaintext_smarthost
    logins = [Credentials("alice", PASSWORD), Credentials("bob", "battery staple")]
    current = {"login": logins[0]}
    agent = SmtpAgent("a.test", None, credentials=lambda h: current["login"], idle_timeout=30)
    hop = smtp_hop("127.0.0.1", b.port)

    async def main() -> list[DeliveryResult]:
        try:
            results = []
            for login in (logins[0], logins[0], logins[1], logins[1]):
                current["login"] = login
                results += await agent.deliver(request(hop, "user@far.test", sender="a@a.test"))
            return results
        finally:
            await agent.close()

    results = asyncio.run(main())
    assert [r.outcome.value for r in results] == ["delivered"] * 4
    # each delivery went over a session logged in as its own user: alice's idle session
    # was taken for bob's first message, then closed rather than used
    assert [r.details["auth_user"] for r in results] == ["alice", "alice", "bob", "bob"]
    assert agent.pool.reused == 3
    b.wait_log("authid=bob")
    logins_seen = [x for x in b.log if "event=AUTH=server," in x]
    assert len(logins_seen) == 2, logins_seen


def test_a_peer_without_auth_gets_the_mail_without_a_login() -> None:
    async def main() -> list[DeliveryResult]:
        async with SmtpPeer() as peer:
            agent = SmtpAgent("a.test", None, credentials=lambda h: Credentials("u", "p"))
            try:
                results = await agent.deliver(request(smtp_hop("127.0.0.1", peer.port)))
            finally:
                await agent.close()
            assert b"AUTH" not in bytes(peer.connections[0].raw)
            return results

    [result] = asyncio.run(main())
    assert result.outcome.value == "delivered" and "auth" not in result.details


def test_sighup_rereads_the_table(tmp_path: Path, smarthost: Mailwright) -> None:
    config = relay_config(tmp_path / "a", smarthost, "alice:" + WRONG)
    table = Path(config["delivery"]["auth_table"])
    with running(tmp_path / "a", config) as a:
        first = submit(a)
        assert "stat=Deferred" in a.wait_log(f"{first}: to=<user@far.test>")
        table.write_text(f"[127.0.0.1]:{smarthost.port}  alice:{PASSWORD}\n")
        assert a.proc is not None
        a.proc.send_signal(signal.SIGHUP)
        a.wait_log("SIGHUP: configuration reloaded")
        second = submit(a)
        assert "stat=Sent" in a.wait_log(f"{second}: to=<user@far.test>")
        assert not any(WRONG in x or PASSWORD in x for x in a.log)
