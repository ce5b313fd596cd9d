"""Outbound address rewriting end to end: daemon A (host.lan, ``[rewrite]`` with
masquerading and a generic table) relays through daemon B (the smarthost, queue mode);
what B queued shows the envelope sender and the sender header fields as they left A:
table entries and masquerading applied, display names and comments kept, the exposed
user and the null sender kept, recipients and recipient headers unchanged. SIGHUP
rereads the table; its bad lines are logged and reported by ``config check``."""

from __future__ import annotations

import os
import signal
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.core.headers import HeaderList
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import StoredMessage
from tests.support.daemon import Mailwright, running, wait_until

TABLE = "# outside names\nalice  alice.smith@example.com\n"


@pytest.fixture
def smarthost(tmp_path: Path) -> Iterator[Mailwright]:
    with running(tmp_path / "b", {"hostname": "b.test"}) as b:
        yield b


@pytest.fixture
def host(tmp_path: Path, smarthost: Mailwright) -> Iterator[Mailwright]:
    table = tmp_path / "generic"
    table.write_text(TABLE)
    config = {
        "hostname": "host.lan",
        "routing": {"smarthost": f"[127.0.0.1]:{smarthost.port}"},
        "delivery": {"mode": "background", "tls_default": "none"},
        "queue": {"host_status_timeout": 0},
        "rewrite": {"masquerade_as": "example.com", "generic_table": str(table)},
    }
    with running(tmp_path / "a", config) as a:
        yield a


def send(mw: Mailwright, sender: str, recipients: list[str], headers: str) -> None:
    message = headers.replace("\n", "\r\n") + "\r\nbody\r\n"
    with smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.sendmail(sender, recipients, message.encode())


def queued(mw: Mailwright, count: int) -> dict[str, tuple[StoredMessage, HeaderList]]:
    """Subject -> (message, headers) of what ``mw`` queued, once it holds ``count``."""
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        wait_until(lambda: store.count_messages() >= count, what=f"{count} queued messages")
        found = {}
        for message in store.list_messages():
            headers = store.read_headers(message.queue_id)
            subject = headers.get("Subject")
            assert subject is not None
            found[subject.text] = (message, headers)
        return found
    finally:
        store.close()


def text(headers: HeaderList, name: str) -> str:
    field = headers.get(name)
    assert field is not None, name
    return field.text


def test_envelope_and_sender_headers_leave_rewritten(
    host: Mailwright, smarthost: Mailwright
) -> None:
    send(
        host,
        "alice@host.lan",
        ["bob@far.test", "carol@far.test"],
        'From: "Alice Smith, Ops" <alice@host.lan>\n'
        + "Sender: root@host.lan\n"
        + "Reply-To: Dave (the admin) <dave@host.lan>, =?utf-8?q?Ev=C3=A9?= <eve@HOST.LAN>\n"
        + "To: bob@far.test, dave@host.lan\n"
        + "Cc: carol@far.test\n"
        + "Subject: one\n",
    )
    send(host, "", ["bob@far.test"], "From: MAILER-DAEMON@host.lan\nSubject: two\n")
    send(host, "root@host.lan", ["bob@far.test"], "From: root@host.lan (Cron)\nSubject: three\n")
    mail = queued(smarthost, 3)

    message, headers = mail["one"]
    assert str(message.envelope.sender) == "alice.smith@example.com"  # the table
    assert [str(r.address) for r in message.envelope.recipients] == [
        "bob@far.test",
        "carol@far.test",
    ]
    assert text(headers, "From") == '"Alice Smith, Ops" <alice.smith@example.com>'
    assert text(headers, "Sender") == "root@host.lan"  # the exposed user
    assert text(headers, "Reply-To") == (
        "Dave (the admin) <dave@example.com>, =?utf-8?q?Ev=C3=A9?= <eve@example.com>"
    )
    assert text(headers, "To") == "bob@far.test, dave@host.lan"  # recipient headers: off
    assert text(headers, "Cc") == "carol@far.test"

    message, headers = mail["two"]
    assert message.envelope.sender is None  # the null sender, never rewritten
    assert text(headers, "From") == "MAILER-DAEMON@example.com"

    message, headers = mail["three"]
    assert str(message.envelope.sender) == "root@host.lan"
    assert text(headers, "From") == "root@host.lan (Cron)"

    # A's own queue record keeps the original sender (only the copy that left changed)
    assert "from=<alice@host.lan>" in host.wait_log("from=<alice@host.lan>")


def test_sighup_rereads_the_table_and_bad_lines_are_reported(
    tmp_path: Path, host: Mailwright, smarthost: Mailwright
) -> None:
    (tmp_path / "generic").write_text("alice  a.s@example.org\nbroken\n")
    assert host.proc is not None
    host.proc.send_signal(signal.SIGHUP)
    host.wait_log("SIGHUP: configuration reloaded")
    assert "generic:2: 'broken' has no value" in host.wait_log("generic table:")
    send(host, "alice@host.lan", ["bob@far.test"], "From: alice@host.lan\nSubject: after\n")
    message, headers = queued(smarthost, 1)["after"]
    assert str(message.envelope.sender) == "a.s@example.org"
    assert text(headers, "From") == "a.s@example.org"
    checked = host.cli("config", "check")
    assert checked.returncode == 78
    assert b"generic:2: 'broken' has no value" in checked.stderr


def test_a_table_edit_takes_effect_without_sighup(
    tmp_path: Path, host: Mailwright, smarthost: Mailwright
) -> None:
    """Issue 13: the table follows its file. Saved as an editor does (a new file renamed
    over the old one); the daemon looks at it at most once a second, so the first
    messages may still leave with the old entry."""
    new = tmp_path / "generic.new"
    new.write_text("alice  a.s@example.org\n")
    os.replace(new, tmp_path / "generic")
    for sent in range(1, 200):
        send(host, "alice@host.lan", ["bob@far.test"], f"From: alice@host.lan\nSubject: m{sent}\n")
        sender = str(queued(smarthost, sent)[f"m{sent}"][0].envelope.sender)
        if sender == "a.s@example.org":
            break
        assert sender == "alice.smith@example.com"
    else:
        raise AssertionError("the table edit was not noticed")
    assert not any("SIGHUP" in line for line in host.log)
