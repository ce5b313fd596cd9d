"""t09: the status page's protection, its actions (the same as the CLI's), ``mailwright status``.

A real daemon (queue-only delivery, every destination a closed port) with the
HTTP endpoint on a free loopback port. Requests go over real sockets; the
daemon's own log (at DEBUG) is checked for the token. The authentication results
(issue 16) come from a daemon checking SPF against records a real dnsmasq serves.
"""

from __future__ import annotations

import json
import re
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.queue.sqlite import SqliteQueueStore
from tests.support.daemon import WORKERS, Mailwright, free_port, wait_until
from tests.support.dns import DnsServer, dnsmasq_available
from tests.support.web import Web, value

TOKEN = "s3cret-status-token"
HOSTILE_SUBJECT = '<img src=x onerror=alert(1)> & "quoted" <script>alert(2)</script>'
HOSTILE_SENDER = '"<script>alert(3)</script>"@evil.test'


def start(root: Path, http: dict[str, Any] | None = None, **extra: Any) -> Mailwright:
    root.mkdir(parents=True, exist_ok=True)
    (root / "transport").write_text("* smtp:[127.0.0.1]:1\n")  # a closed port: defer at once
    config: dict[str, Any] = {
        "routing": {"transport_table": str(root / "transport")},
        "queue": {"host_status_timeout": 0},
        "http": {"port": free_port(), "token": TOKEN, **(http or {})},
        **extra,
    }
    return Mailwright(root, config).start()


@pytest.fixture
def mw(tmp_path: Path) -> Iterator[Mailwright]:
    daemon = start(tmp_path / "mw")
    try:
        yield daemon
    finally:
        daemon.stop()


def web_of(mw: Mailwright) -> Web:
    return Web(mw.config["http"]["port"])


def send(
    mw: Mailwright,
    sender: str = "a@x.test",
    rcpts: tuple[str, ...] = ("b@y.test",),
    subject: str = "hello",
) -> str:
    """One message over SMTP; returns its queue id."""
    with smtplib.SMTP("127.0.0.1", mw.port, timeout=20) as client:
        client.ehlo("client.test")
        client.mail(sender)
        for rcpt in rcpts:
            assert client.rcpt(rcpt)[0] == 250
        code, text = client.data(f"Subject: {subject}\r\nFrom: {sender}\r\n\r\nbody\r\n".encode())
    assert code == 250, text
    found = re.search(rb"2\.0\.0 (\w+) Message accepted", text)
    assert found, text
    return found.group(1).decode()


def show(mw: Mailwright, queue_id: str) -> dict[str, Any] | None:
    done = mw.cli("queue", "show", "--json", queue_id)
    if done.returncode != 0:
        return None
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def comparable(data: dict[str, Any] | None) -> Any:
    """What an action may change, without what differs between two messages anyway."""
    if data is None:
        return None
    return {
        "state": data["state"],
        "hold_reason": data["hold_reason"],
        "recipients": [
            {k: r[k] for k in ("state", "attempts", "last_status", "last_reply")}
            for r in data["recipients"]
        ],
    }


# ---- who may look -------------------------------------------------------------------------------
def test_the_status_page_needs_the_token_and_never_logs_it(mw: Mailwright) -> None:
    web = web_of(mw)
    refused = web.get("/status")
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert 'name="token"' in refused.text and "Queue" not in refused.text
    assert web.get("/status", token="wrong-token-123").status == 403
    assert web.get("/status", cookie="v1.1.abc.def").status == 403
    assert web.get(f"/status?token={TOKEN}").status == 401  # never from a URL
    assert web.get(f"/status?access_token={TOKEN}").status == 401
    assert web.get("/message/01JD3K7Q2M4XK9A").status == 401
    assert web.post("/action", {"action": "flush-all"}).status == 401
    assert web.get("/status", token=TOKEN).status == 200

    assert web.post("/login", {"token": "wrong-token-123"}).status == 403
    login = web.post("/login", {"token": TOKEN})
    assert login.status == 303 and login.headers["Location"] == "/status"
    cookie_line = login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie_line and "SameSite=Strict" in cookie_line
    cookie = cookie_line.split(";")[0].split("=", 1)[1]
    assert TOKEN not in cookie
    page = web.get("/status", cookie=cookie)
    assert page.status == 200 and "Content-Security-Policy" in page.headers
    assert "script-src" not in page.headers["Content-Security-Policy"]
    tampered = cookie[:-1] + ("0" if cookie[-1] != "0" else "1")
    assert web.get("/status", cookie=tampered).status == 403

    # a post that changes the queue needs the session's CSRF token
    assert web.post("/action", {"action": "flush-all"}, cookie=cookie).status == 403
    assert (
        web.post("/action", {"action": "flush-all", "csrf": "0" * 40}, cookie=cookie).status == 403
    )
    done = web.post("/action", {"action": "flush-all", "csrf": page.csrf()}, cookie=cookie)
    assert done.status == 303
    assert web.post("/logout", {"csrf": page.csrf()}, cookie=cookie).headers["Location"] == "/login"

    assert web.get("/metrics").status == 200  # loopback: no token needed by default
    assert web.get("/metrics", token="wrong-token-123").status == 403
    log = "\n".join(mw.log)
    assert "http: GET /status 401" in log  # requests are logged ...
    assert TOKEN not in log  # ... but never the token
    assert cookie not in log


def test_metrics_can_require_the_token(tmp_path: Path) -> None:
    mw = start(tmp_path / "mw", {"metrics_require_token": True})
    try:
        web = web_of(mw)
        assert web.get("/metrics").status == 401
        assert web.get("/metrics", token="wrong-token-123").status == 403
        assert web.get("/metrics", token=TOKEN).status == 200
    finally:
        mw.stop()


def test_without_a_token_only_metrics_are_served(tmp_path: Path) -> None:
    mw = start(tmp_path / "mw", {"token": ""})
    try:
        web = web_of(mw)
        assert web.get("/metrics").status == 200
        assert web.get("/status").status == 403
        assert web.post("/login", {"token": ""}).status == 403
        mw.wait_log("the status page is off")
    finally:
        mw.stop()


def test_a_public_address_without_a_token_is_a_configuration_error(tmp_path: Path) -> None:
    mw = Mailwright(tmp_path / "mw", {"http": {"address": "0.0.0.0", "port": free_port()}})
    mw.write_config()
    done = mw.cli("config", "check")
    assert done.returncode == 78
    assert b"http.address" in done.stderr or b"not loopback" in done.stderr


def test_malformed_requests_get_4xx_not_a_crash(mw: Mailwright) -> None:
    web = web_of(mw)
    assert web.request("GET", "/metrics", body=b"", headers={"Content-Length": "x"}).status == 400
    assert web.request("POST", "/login", body=b"x" * 70000).status == 413
    assert web.request("GET", "/status", headers={"Transfer-Encoding": "chunked"}).status == 501
    assert web.request("GET", "/status", headers={"X-Big": "y" * 20000}).status == 431
    assert web.request("DELETE", "/status", headers={}).status == 405
    assert web.get("/nothing-here").status == 404
    assert web.get("/metrics").status == 200  # still serving


# ---- what it shows ------------------------------------------------------------------------------
def test_hostile_mail_is_shown_as_text(mw: Mailwright) -> None:
    queue_id = send(mw, HOSTILE_SENDER, subject=HOSTILE_SUBJECT)
    web = web_of(mw)
    for path in ("/status", f"/message/{queue_id}"):
        page = web.get(path, token=TOKEN)
        assert page.status == 200
        assert "<script" not in page.text and "<img" not in page.text
        assert "&lt;script&gt;alert(3)&lt;/script&gt;" in page.text
    detail = web.get(f"/message/{queue_id}", token=TOKEN).text
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quoted&quot;" in detail
    assert web.get("/message/NOTANID", token=TOKEN).status == 404
    missing = web.get("/message/01JD3K7Q2M4XK9A", token=TOKEN)
    assert missing.status == 404 and "not in the queue" in missing.text
    lookup = web.get(f"/message?id={queue_id.lower()}", token=TOKEN)
    assert lookup.status == 303 and lookup.headers["Location"] == f"/message/{queue_id}"


def test_deferred_mail_is_grouped_by_reason_and_destination(mw: Mailwright) -> None:
    first = send(mw, rcpts=("b@y.test", "c@y.test"))
    second = send(mw, rcpts=("d@z.test",))
    assert mw.cli("queue", "flush").returncode == 0
    web = web_of(mw)
    wait_until(
        lambda: value(web.scrape(), "mailwright_queue_recipients", state="deferred") == 3,
        what="three deferred recipients",
    )
    page = web.get("/status", token=TOKEN).text
    section = page[page.index('id="deferred"') : page.index('id="bounces"')]
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>(\d+)</td>", section)
    assert sorted((domain, int(n)) for domain, _, n in rows) == [("y.test", 2), ("z.test", 1)]
    assert all("4.4.1" in reason for _, reason, _ in rows)
    assert f"/message/{first}" in section and f"/message/{second}" in section


# ---- actions: the same as mailwright queue ... --------------------------------------------------
def act(mw: Mailwright, action: str, *ids: str, **fields: str) -> str:
    web = web_of(mw)
    csrf = web.get("/status", token=TOKEN).csrf()
    form: dict[str, str | list[str]] = {"csrf": csrf, "action": action, "id": list(ids), **fields}
    answer = web.post("/action", form, token=TOKEN)
    assert answer.status == 303, answer.text
    return answer.headers["Location"]


def test_page_actions_change_the_queue_exactly_like_the_cli(mw: Mailwright) -> None:
    by_page, by_cli = send(mw), send(mw)
    assert comparable(show(mw, by_page)) == comparable(show(mw, by_cli))

    assert act(mw, "hold", by_page, reason="spam?") == "/status?done=hold&n=1&missing=0"
    assert mw.cli("queue", "hold", by_cli, "--reason", "spam?").returncode == 0
    held = comparable(show(mw, by_page))
    assert held["state"] == "hold" and held["hold_reason"] == "spam?"
    assert held == comparable(show(mw, by_cli))

    act(mw, "release", by_page)
    assert mw.cli("queue", "release", by_cli).returncode == 0
    released = comparable(show(mw, by_page))
    assert released["state"] == "active" and released == comparable(show(mw, by_cli))

    act(mw, "hold", by_page)  # no reason given: the CLI's default
    assert mw.cli("queue", "hold", by_cli).returncode == 0
    assert comparable(show(mw, by_page)) == comparable(show(mw, by_cli))
    act(mw, "release", by_page)
    mw.cli("queue", "release", by_cli)

    # flush: a queue run now, which defers (the destination is a closed port). The daemon
    # is in queue-only mode: a selective run tries the flushed message only, though the
    # other one is due too.
    def attempts(queue_id: str) -> int:  # polled: read the store here, not through the CLI
        store = SqliteQueueStore(mw.root / "queue" / "queue.db")
        store.open_for_reading()
        try:
            message = store.get_message(queue_id)
        finally:
            store.close()
        return message.recipients[0].attempts if message else -1

    assert act(mw, "flush", by_page) == "/status?done=flush&n=1&missing=0"
    mw.wait_log("queue run (1 message(s)) done: 1 recipient(s) tried")
    assert (attempts(by_page), attempts(by_cli)) == (1, 0)
    assert mw.cli("queue", "flush", by_cli).returncode == 0
    mw.wait_log("queue run (1 message(s)) done: 1 recipient(s) tried", occurrence=2)
    assert (attempts(by_page), attempts(by_cli)) == (1, 1)
    assert act(mw, "flush", by_page) == "/status?done=flush&n=1&missing=0"
    mw.wait_log("queue run (1 message(s)) done: 1 recipient(s) tried", occurrence=3)
    assert (attempts(by_page), attempts(by_cli)) == (2, 1)
    assert mw.cli("queue", "flush", by_cli).returncode == 0
    mw.wait_log("queue run (1 message(s)) done: 1 recipient(s) tried", occurrence=4)
    assert (attempts(by_page), attempts(by_cli)) == (2, 2)
    flushed = comparable(show(mw, by_page))
    assert flushed["recipients"][0]["last_status"] == "4.4.1"
    assert flushed == comparable(show(mw, by_cli))

    location = act(mw, "delete", by_page, confirm="yes", back="message")
    assert location == "/status?done=delete&n=1&missing=0"
    assert mw.cli("queue", "delete", by_cli).returncode == 0
    assert show(mw, by_page) is None and show(mw, by_cli) is None

    # the page says what the CLI says about ids that are not there
    assert act(mw, "release", by_page) == "/status?done=release&n=0&missing=1"
    assert mw.cli("queue", "release", by_cli).returncode != 0


def test_delete_needs_confirmation_and_a_selection(mw: Mailwright) -> None:
    queue_id = send(mw)
    assert act(mw, "delete", queue_id) == "/status?problem=confirm"
    assert show(mw, queue_id) is not None
    assert act(mw, "delete", queue_id, back="message") == f"/message/{queue_id}?problem=confirm"
    assert act(mw, "hold") == "/status?problem=select"
    page = web_of(mw).get("/status?problem=confirm", token=TOKEN).text
    assert "tick &#x27;yes, delete&#x27; to confirm" in page


def test_flush_all_runs_the_whole_queue(mw: Mailwright) -> None:
    ids = [send(mw), send(mw, rcpts=("c@z.test", "d@z.test"))]
    assert act(mw, "flush-all") == "/status?done=flush-all&n=3&missing=0"
    mw.wait_log("status page: flush-all (all): 3 done")
    for queue_id in ids:
        mw.wait_log(f"{queue_id}: to=")  # the queue run tried it


# ---- mailwright status --------------------------------------------------------------------------
def test_status_command_up_and_down(tmp_path: Path) -> None:
    absent = f"inet:{free_port()}@127.0.0.1"
    mw = start(
        tmp_path / "mw",
        filters=[{"milter": absent, "name": "gone", "on_failure": "accept"}],
    )
    try:
        held = send(mw)
        send(mw)
        mw.cli("queue", "hold", held)
        mw.wait_log("milter=gone, stage=connect, failed=")  # one line per failure (issue 12)
        done = mw.cli("status")
        assert done.returncode == 0, done.stderr
        text = done.stdout.decode()
        # with workers (MW_TEST_WORKERS), the supervisor's pid and how many there are; the
        # milter failures and warnings below are every worker's
        workers = f", {WORKERS['workers']} workers" if WORKERS["workers"] > 1 else ""
        pid = mw.proc.pid if mw.proc else 0
        assert text.startswith(f"mailwright: up, pid {pid}{workers}, uptime ")
        assert f"listener: smtp-{mw.port} 127.0.0.1:{mw.port} (smtp), 0 session(s)" in text
        assert "queue: 2 message(s) (1 active, 1 on hold); recipients: 1 due" in text
        assert "since start: 2 received, 0 rejected" in text
        assert "milter: gone: 2 call(s), 2 failure(s); last error at connect" in text
        assert "WARNING milter=gone, stage=connect, failed=cannot connect" in text
        assert f"http: http://127.0.0.1:{mw.config['http']['port']}/" in text

        data = json.loads(mw.cli("status", "--json").stdout)
        assert data["up"] is True and data["queue"]["held_messages"] == 1
        assert data["totals"]["received"] == 2
        assert [m["name"] for m in data["milters"]] == ["gone"]
    finally:
        mw.stop()
    down = mw.cli("status")
    assert down.returncode == 69
    assert down.stdout.decode().splitlines() == [
        f"mailwright: down (no daemon answers on {tmp_path / 'mw' / 'queue' / 'control.sock'})",
        "queue: 2 message(s) (1 active, 1 on hold); recipients: 1 due, 0 deferred,"
        " 0 delivering, 1 held, oldest " + down.stdout.decode().split("oldest ")[1].strip(),
    ]
    data = json.loads(mw.cli("status", "--json").stdout)
    assert data["up"] is False and data["queue"]["active_messages"] == 1


# ---- authentication results (issue 16) ---------------------------------------------------------
@pytest.mark.skipif(not dnsmasq_available(), reason="dnsmasq-base is not installed")
def test_status_shows_the_authentication_results(tmp_path: Path) -> None:
    client = "127.0.0.2"  # loopback but not trusted (relay.networks = []): checked
    dns = DnsServer(tmp_path / "dns")
    dns.txt("pass.test", f"v=spf1 ip4:{client} -all").txt("fail.test", "v=spf1 -all")
    dns.txt("soft.test", "v=spf1 ~all").txt("helo.test", f"v=spf1 ip4:{client} -all")
    dns.txt("_dmarc.pass.test", "v=DMARC1; p=reject")  # SPF aligned: pass
    with dns:
        mw = start(
            tmp_path / "mw",
            relay={"networks": [], "domains": ["y.test"]},
            dns={**dns.settings(), "timeout": 2, "lifetime": 2},
            spf={"enabled": True},
            dmarc={"enabled": True},
            arc={"verify": True},
        )
        try:
            for sender in ("a@pass.test", "b@pass.test", "a@soft.test"):
                with smtplib.SMTP("127.0.0.1", mw.port, source_address=(client, 0)) as s:
                    s.ehlo("helo.test")
                    s.sendmail(
                        sender, ["b@y.test"], b"From: " + sender.encode() + b"\r\n\r\nhi\r\n"
                    )
            with smtplib.SMTP("127.0.0.1", mw.port, source_address=(client, 0)) as s:
                s.ehlo("helo.test")
                assert s.mail("a@fail.test")[0] == 250
                assert s.rcpt("b@y.test")[0] == 550  # 5.7.23
            done = mw.cli("status")
            assert done.returncode == 0, done.stderr
            lines = done.stdout.decode().splitlines()
            auth = [
                line
                for line in lines
                if line.split(":")[0] in ("spf", "dmarc", "arc", "dane", "tlsrpt")
            ]
            assert auth == [
                "spf: 1 fail, 2 pass, 1 softfail",
                "dmarc: 1 none, 2 pass",  # soft.test has no DMARC record
                "arc: 3 none",  # the accepted messages: no chain
                "dane: off",
                "tlsrpt: off",
            ]
            data = json.loads(mw.cli("status", "--json").stdout)
            checks = {a["check"]: a for a in data["auth"]}
            assert checks["spf"] == {
                "check": "spf",
                "enabled": True,
                "results": {"fail": 1, "pass": 2, "softfail": 1},
            }
            assert checks["dmarc"]["results"] == {"none": 1, "pass": 2}
            assert checks["arc"]["results"] == {"none": 3}
            assert checks["dane"] == {"check": "dane", "enabled": False, "results": {}}
            page = web_of(mw).get("/status", token=TOKEN)
            section = page.text.split('<section id="auth">')[1].split("</section>")[0]
            assert (
                "<td>SPF</td><td>on</td><td>fail 1 · pass 2 · softfail 1</td><td>4</td>" in section
            )
            assert "<td>DMARC</td><td>on</td><td>none 1 · pass 2</td><td>3</td>" in section
            assert "<td>ARC</td><td>on</td><td>none 3</td><td>3</td>" in section
            assert (
                "<td>DANE (outbound, per MX host)</td><td>off</td><td>-</td><td>0</td>" in section
            )
        finally:
            mw.stop()
