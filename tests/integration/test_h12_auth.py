"""Issue 12 item 7: AUTH failures lock out the address that failed, never the user.

A real daemon, a submission listener, STARTTLS then AUTH PLAIN from two loopback source
addresses: a guesser at 127.0.0.2 exhausts every limit for alice, yet alice logs in from
127.0.0.1 with her password at once, while the guesser's address is refused even the
right password.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.daemon import Mailwright
from tests.support.security import Client, plain, secure_config, trusting

PASSWORD = "correct horse"
REFUSED = "454 4.7.0 Too many failed authentication attempts, try again later"


def tls_client(mw: Mailwright, source: str) -> Client:
    c = Client(mw.port, source)
    c.ehlo()
    assert c.starttls(trusting(Path(mw.config["tls"]["certificate"]))).startswith("220")
    c.ehlo()
    return c


def guess(mw: Mailwright, source: str, user: str, times: int) -> list[str]:
    """``times`` wrong passwords for ``user``, reconnecting when the session is closed."""
    replies: list[str] = []
    c = tls_client(mw, source)
    for _ in range(times):
        reply = c.cmd(f"AUTH PLAIN {plain(user, 'wrong guess')}")
        replies.append(reply)
        if reply.startswith("421"):
            c.close()
            c = tls_client(mw, source)
    c.close()
    return replies


def test_failures_from_one_address_do_not_lock_the_user_out_elsewhere(tmp_path: Path) -> None:
    config = secure_config(tmp_path)  # default limits: 10 per address, 5 per user there
    mw = Mailwright(tmp_path / "mw", config)
    mw.config["listeners"] = [{"address": "127.0.0.1", "port": mw.port, "kind": "submission"}]
    mw.start()
    try:
        replies = guess(mw, "127.0.0.2", "alice", 12)
        assert replies[0].startswith("535 5.7.8")
        assert replies[-1] == REFUSED  # the guessing address is stopped ...
        attacker = tls_client(mw, "127.0.0.2")
        assert attacker.cmd(f"AUTH PLAIN {plain('alice', PASSWORD)}") == REFUSED
        attacker.close()
        # ... but alice, from an address that did not fail, logs in with her password
        c = tls_client(mw, "127.0.0.1")
        assert c.cmd(f"AUTH PLAIN {plain('alice', PASSWORD)}") == (
            "235 2.7.0 Authentication successful"
        )
        assert c.cmd("MAIL FROM:<alice@mx.test>").startswith("250")
        c.close()
        assert mw.wait_log("reason=too many failures")
    finally:
        mw.stop()


def test_guessing_one_user_leaves_other_users_from_the_same_address(tmp_path: Path) -> None:
    config = secure_config(tmp_path)
    config["auth"].update({"max_failures_per_ip": 10, "max_failures_per_user": 3})
    mw = Mailwright(tmp_path / "mw", config)
    mw.config["listeners"] = [{"address": "127.0.0.1", "port": mw.port, "kind": "submission"}]
    mw.start()
    try:
        replies = guess(mw, "127.0.0.2", "alice", 4)
        assert [r[:3] for r in replies] == ["535", "535", "421", "454"]
        c = tls_client(mw, "127.0.0.2")
        assert c.cmd(f"AUTH PLAIN {plain('alice', PASSWORD)}") == REFUSED
        assert c.cmd(f"AUTH PLAIN {plain('bob', 'battery staple')}").startswith("235")
        c.close()
        c = tls_client(mw, "127.0.0.1")
        assert c.cmd(f"AUTH PLAIN {plain('alice', PASSWORD)}").startswith("235")
        c.close()
    finally:
        mw.stop()
