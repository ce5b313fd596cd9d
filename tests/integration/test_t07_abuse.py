"""Abuse limits over real sockets: connection rate per address, a slowloris client dropped at
the command deadline while others are served, the greet pause, and the per-session limits
(recipients, bad commands, NOOP/RSET floods)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from tests.support.daemon import running, wait_until
from tests.support.security import Client

UNTRUSTED = {"relay": {"networks": []}, "routing": {"local_domains": ["mx.test"]}}


def test_connection_rate_per_address(tmp_path: Path) -> None:
    config = {**UNTRUSTED, "server": {"max_connection_rate_per_ip": 3}}
    with running(tmp_path, config) as mw:
        clients = [Client(mw.port, "127.0.0.5") for _ in range(3)]
        assert all(c.greeting.startswith("220") for c in clients)
        fourth = Client(mw.port, "127.0.0.5")
        assert fourth.greeting == "421 mx.test Too many connections per minute from your address"
        assert fourth.closed()
        assert Client(mw.port, "127.0.0.6").greeting.startswith("220")  # others are not hit
        mw.wait_log("event=connection rate limit exceeded, relay=[127.0.0.5]")
        for c in clients:
            c.close()


def test_total_connection_limit_refuses_then_admits_again(tmp_path: Path) -> None:
    config = {**UNTRUSTED, "server": {"max_connections": 3}}
    with running(tmp_path, config) as mw:
        clients = [Client(mw.port, f"127.0.0.{i}") for i in (11, 12, 13)]  # 3 addresses
        assert all(c.greeting.startswith("220") for c in clients)
        fourth = Client(mw.port, "127.0.0.14")
        assert fourth.greeting == "421 4.7.0 mx.test Too many connections, try again later"
        assert fourth.closed()
        clients.pop().cmd("QUIT")  # one leaves: room for one more

        def admitted() -> bool:
            c = Client(mw.port, "127.0.0.14")
            if c.greeting.startswith("220"):
                clients.append(c)
                return True
            c.close()
            return False

        wait_until(admitted, what="a free connection slot")
        for c in clients:
            c.close()


def test_slowloris_dropped_at_the_command_deadline_others_served(tmp_path: Path) -> None:
    config = {**UNTRUSTED, "server": {"timeouts": {"command": 1.5}}}
    with running(tmp_path, config) as mw:
        slow = socket.create_connection(("127.0.0.1", mw.port), timeout=10)
        assert slow.recv(1024).startswith(b"220")
        started = time.monotonic()
        outcome: list[bytes] = []

        def trickle() -> None:
            # one byte every 0.2 s: each read is quick, the line never ends
            try:
                for byte in b"EHLO " + b"x" * 100:
                    slow.sendall(bytes([byte]))
                    slow.settimeout(0.2)
                    try:
                        data = slow.recv(1024)
                    except TimeoutError:
                        continue
                    outcome.append(data)
                    return
            except OSError as exc:
                outcome.append(repr(exc).encode())

        thread = threading.Thread(target=trickle)
        thread.start()
        c = Client(mw.port)  # a legitimate session meanwhile
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@x.test>").startswith("250")
        assert c.cmd("RCPT TO:<postmaster@mx.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send(b"Subject: hi\r\n\r\nserved\r\n.\r\n")
        assert c.reply().startswith("250 2.0.0")
        served = time.monotonic() - started
        thread.join(10)
        dropped = time.monotonic() - started
        assert outcome and outcome[0].startswith(b"421 4.4.2"), outcome
        assert served < 1.5 and 1.4 <= dropped < 4, (served, dropped)
        slow.close()
        assert "reason=timeout" in mw.wait_log("reason=timeout")


def test_greet_pause_refuses_early_talkers(tmp_path: Path) -> None:
    config = {**UNTRUSTED, "server": {"greet_pause": 1}}
    config["relay"] = {"networks": ["127.0.0.7/32"]}
    with running(tmp_path, config) as mw:
        talker = socket.create_connection(("127.0.0.1", mw.port), timeout=10)
        talker.sendall(b"EHLO spammer.test\r\nMAIL FROM:<s@spam.test>\r\n")
        data = b""
        while b"\r\n" not in data:
            data += talker.recv(1024)
        assert data.startswith(b"554 5.5.0 mx.test protocol violation: talking before")
        assert talker.recv(1024) == b""  # closed
        mw.wait_log("event=pre-greeting traffic, relay=localhost [127.0.0.1]")
        started = time.monotonic()
        polite = Client(mw.port, "127.0.0.3")
        assert polite.greeting.startswith("220") and time.monotonic() - started >= 1
        started = time.monotonic()
        trusted = Client(mw.port, "127.0.0.7")  # relay.networks are not made to wait
        assert trusted.greeting.startswith("220") and time.monotonic() - started < 1
        assert polite.ehlo() and trusted.ehlo()


def test_session_limits(tmp_path: Path) -> None:
    config = {
        **UNTRUSTED,
        "server": {"max_recipients": 3, "max_bad_commands": 3, "max_junk_commands": 5},
    }
    with running(tmp_path, config) as mw:
        c = Client(mw.port)
        c.ehlo()
        c.cmd("MAIL FROM:<a@x.test>")
        replies = [c.cmd("RCPT TO:<postmaster@mx.test>") for _ in range(4)]
        assert [r[:3] for r in replies] == ["250", "250", "250", "452"]
        assert replies[3] == "452 4.5.3 Too many recipients"
        c = Client(mw.port)
        assert [c.cmd("BOGUS")[:3] for _ in range(2)] == ["500", "500"]
        assert c.cmd("BOGUS").startswith("500")
        assert c.reply().startswith("421 4.7.0")
        assert c.closed()
        c = Client(mw.port)
        assert [c.cmd("NOOP")[:3] for _ in range(5)] == ["250"] * 5
        assert c.cmd("RSET").startswith("421 4.7.0")
        assert c.closed()
