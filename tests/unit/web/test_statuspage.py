"""The status page's HTML: everything from mail is escaped; the sections are there."""

from __future__ import annotations

import html.parser

from mailwright.core.address import Address
from mailwright.core.envelope import Envelope, MailParams, Recipient
from mailwright.core.headers import Header, HeaderList
from mailwright.observability.metrics import Totals
from mailwright.observability.recent import Bounce, LogEntry
from mailwright.queue.store import (
    DeferredGroup,
    MessageState,
    Origin,
    QueueCounts,
    RecipientState,
    StoredMessage,
    StoredRecipient,
)
from mailwright.web import statuspage
from mailwright.web.history import History
from mailwright.web.status import AuthStatus, ListenerStatus, MilterStatus, Status

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def tags(page: str) -> set[str]:
    parser = Tags()
    parser.feed(page)
    return set(parser.tags)


def evil_message() -> StoredMessage:
    envelope = Envelope(
        Address(f'"{EVIL}"', "evil.test"), MailParams(), [Recipient(Address("a", "b.test"))]
    )
    rcpt = StoredRecipient(
        "01JD3K7Q2M4XK9A",
        0,
        f'"{EVIL}"@b.test',
        None,
        None,
        RecipientState.QUEUED,
        1,
        0.0,
        None,
        "4.0.0",
        EVIL,
        EVIL,
        None,
        None,
    )
    return StoredMessage(
        "01JD3K7Q2M4XK9A",
        envelope,
        1000.0,
        10,
        MessageState.HOLD,
        EVIL,
        Origin(helo=EVIL, client_name=EVIL),
        EVIL,
        EVIL,
        False,
        [rcpt],
    )


def evil_status() -> Status:
    return Status(
        hostname="mx.test",
        version="0",
        pid=1,
        started_at=0.0,
        now=100.0,
        delivery_mode="queue",
        queue_directory="/q",
        listeners=[ListenerStatus("smtp-25", "smtp", "127.0.0.1:25", 1)],
        queue=QueueCounts(1, 1, 1, 1, 0, 1, 50.0),
        totals=Totals(1, 2, 3, 4, 5),
        milters=[MilterStatus("f", 3, 1, EVIL, "eom", 90.0)],
        errors=[LogEntry(99.0, "WARNING", EVIL)],
        bounces=[Bounce(98.0, "01JD3K7Q2M4XK9A", EVIL, EVIL, "5.0.0", EVIL, EVIL)],
        deferred=[DeferredGroup(EVIL, "4.4.1", EVIL, 2, 97.0, ["01JD3K7Q2M4XK9A"])],
        auth=[AuthStatus("spf", True, {"pass": 2, EVIL: 1}), AuthStatus("dane", False)],
    )


def test_the_overview_escapes_everything_from_mail() -> None:
    history = History(Totals()).window(100.0)
    page = statuspage.status_page(evil_status(), history, [evil_message()], "c" * 40, EVIL)
    assert {"script", "img"}.isdisjoint(tags(page))
    assert page.count("&lt;script&gt;") >= 6
    for section in (
        "plots",
        "summary",
        "messages",
        "deferred",
        "bounces",
        "milters",
        "auth",
        "errors",
    ):
        assert f'id="{section}"' in page
    assert page.count('name="csrf" value="' + "c" * 40 + '"') == 2  # actions and logout


def test_the_message_page_escapes_headers_and_envelope() -> None:
    headers = HeaderList([Header.make("Subject", EVIL), Header.make("From", EVIL)])
    page = statuspage.message_page(evil_message(), headers, "c" * 40, EVIL)
    assert {"script", "img"}.isdisjoint(tags(page))
    assert "Subject: &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert f"hold ({statuspage.esc(EVIL)})" in page


def test_login_and_simple_pages_escape_their_text() -> None:
    assert "script" not in tags(statuspage.login_page(EVIL))
    assert "script" not in tags(statuspage.simple_page(EVIL, EVIL, EVIL))


def test_the_nodes_table_shows_only_for_a_shared_queue_and_escapes() -> None:
    from dataclasses import replace

    from mailwright.queue.nodes import NodeInfo

    history = History(Totals()).window(100.0)
    alone = statuspage.status_page(evil_status(), history, [], "c" * 40)
    assert 'id="nodes"' not in alone  # SQLite: no cluster, no table
    node = NodeInfo(EVIL, "h1", 7, "1.0", 0.0, 90.0, 1.0, 2, EVIL, None, 3, now=100.0)
    status = replace(evil_status(), nodes=[node, replace(node, node="mx-2", stopped_at=95.0)])
    page = statuspage.status_page(status, history, [], "c" * 40)
    assert 'id="nodes"' in page and {"script", "img"}.isdisjoint(tags(page))
    assert "<td>stale</td>" in page and "<td>stopped</td>" in page and "<td>mx-2</td>" in page
    assert Status.from_json(status.as_json()).nodes == status.nodes  # over the control socket


def test_the_authentication_section_shows_each_check_and_escapes() -> None:
    page = statuspage.status_page(evil_status(), History(Totals()).window(100.0), [], "c" * 40)
    section = page.split('<section id="auth">')[1].split("</section>")[0]
    assert "<h2>Authentication since start</h2>" in section
    assert "<td>SPF</td><td>on</td><td>pass 2 · &lt;script&gt;" in section
    assert "<td>DANE (outbound, per MX host)</td><td>off</td><td>-</td><td>0</td>" in section
    assert "<script>" not in section


def test_the_authentication_results_survive_json() -> None:
    status = evil_status()
    again = Status.from_json(status.as_json())
    assert again.auth == status.auth
    assert [a.summary() for a in again.auth] == [f"2 pass, 1 {EVIL}", "off"]


def test_the_header_says_how_many_workers_listen_when_not_all_do() -> None:
    status = evil_status()
    assert "workers" not in statuspage.meta_line(status)  # one process
    status.workers, status.listening = 4, 4
    assert "4 workers · " in statuspage.meta_line(status)
    assert "listening" not in statuspage.meta_line(status)
    status.listening = 1  # worker 0 serves alone (edge.standby)
    assert "4 workers, 1 listening · " in statuspage.meta_line(status)
    again = Status.from_json(status.as_json())
    assert (again.workers, again.listening) == (4, 1)
    older = status.as_json()
    del older["listening"]  # a daemon from before it was said: nothing is claimed
    assert "listening" not in statuspage.meta_line(Status.from_json(older))
