"""SMTP AUTH end to end: the submission listener (TLS, then AUTH, before MAIL), PLAIN and
LOGIN, cancel, bad data, brute-force limits, MAIL AUTH=, the users file and its commands,
milters seeing the authenticated name, and no password in any log line."""

from __future__ import annotations

import base64
import smtplib
import time
from pathlib import Path
from typing import Any

from mailwright.queue.sqlite import SqliteQueueStore
from tests.support import milters
from tests.support.daemon import Mailwright, wait_until
from tests.support.security import Client, b64, plain, secure_config, trusting

PASSWORD = "correct horse"
NO_HEADERS = b"From: alice@mx.test\r\nTo: friend@elsewhere.test\r\nSubject: s\r\n\r\nhi\r\n"


def daemon(root: Path, kind: str = "submission", **extra: Any) -> Mailwright:
    config = secure_config(root, **extra)
    mw = Mailwright(root / "mw", config)
    mw.config["listeners"] = [{"address": "127.0.0.1", "port": mw.port, "kind": kind}]
    return mw.start()


def tls_client(mw: Mailwright, source: str = "127.0.0.1") -> Client:
    c = Client(mw.port, source)
    c.ehlo()
    cert = Path(mw.config["tls"]["certificate"])
    assert c.starttls(trusting(cert)).startswith("220")
    return c


def stored(mw: Mailwright, qid: str) -> tuple[Any, str]:
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        return store.get_message(qid), store.read_headers(qid).encode().decode()
    finally:
        store.close()


def send_data(c: Client, body: bytes) -> str:
    assert c.cmd("DATA").startswith("354")
    c.send(body + b".\r\n")
    reply = c.reply()
    assert reply.startswith("250 2.0.0"), reply
    return reply.split()[2]


def test_submission_wants_tls_then_auth_and_adds_only_date_and_message_id(
    tmp_path: Path,
) -> None:
    mw = daemon(tmp_path)
    try:
        c = Client(mw.port)
        keywords = c.ehlo()
        assert "STARTTLS" in keywords and not any(k.startswith("AUTH") for k in keywords)
        assert c.cmd(f"AUTH PLAIN {plain('alice', PASSWORD)}") == (
            "538 5.7.11 Encryption required for requested authentication mechanism"
        )
        assert c.cmd("MAIL FROM:<alice@mx.test>") == (
            "530 5.7.0 Must issue a STARTTLS command first"
        )
        c.close()
        c = tls_client(mw)
        assert "AUTH PLAIN LOGIN" in c.ehlo()
        assert c.cmd("MAIL FROM:<alice@mx.test>") == "530 5.7.0 Authentication required"
        assert c.cmd(f"AUTH PLAIN {plain('alice', PASSWORD)}") == (
            "235 2.7.0 Authentication successful"
        )
        assert c.cmd(f"AUTH PLAIN {plain('alice', PASSWORD)}") == (
            "503 5.5.1 Already authenticated"
        )
        assert c.cmd("MAIL FROM:<alice@mx.test>").startswith("250")
        assert c.cmd("RCPT TO:<friend@elsewhere.test>").startswith("250")  # may relay
        qid = send_data(c, NO_HEADERS)
        message, headers = stored(mw, qid)
        assert message.origin.auth_user == "alice" and message.origin.protocol == "ESMTPSA"
        assert f"with ESMTPSA id {qid}" in headers
        assert headers.count("\r\nDate: ") == 1 and headers.count("\r\nMessage-ID: <") == 1
        assert "\r\nFrom: alice@mx.test\r\n" in headers  # nothing rewritten
        assert c.cmd("MAIL FROM:<alice@mx.test>").startswith("250")
        assert c.cmd("RCPT TO:<friend@elsewhere.test>").startswith("250")
        own = b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <mine@x.test>\r\n"
        _, headers = stored(mw, send_data(c, own + NO_HEADERS))
        assert headers.count("Date: ") == 1 and "Date: Mon, 1 Jan 2024" in headers
        assert headers.count("Message-ID: ") == 1 and "<mine@x.test>" in headers
        line = mw.wait_log("event=AUTH=server")
        assert "authid=alice" in line and "mech=PLAIN" in line
        accepted = mw.wait_log(f"{qid}: from=<alice@mx.test>")  # grep QUEUE-ID: who sent it
        assert accepted.endswith(", authid=alice"), accepted
    finally:
        mw.stop()


def test_login_cancel_and_malformed_responses(tmp_path: Path) -> None:
    mw = daemon(tmp_path)
    try:
        c = tls_client(mw)
        c.ehlo()
        assert c.cmd("AUTH LOGIN") == "334 " + b64("Username:")
        assert c.cmd(b64("alice")) == "334 " + b64("Password:")
        assert c.cmd("*") == "501 5.7.0 Authentication cancelled"
        assert c.cmd("AUTH PLAIN") == "334 "  # an empty challenge
        assert c.cmd("*") == "501 5.7.0 Authentication cancelled"
        assert c.cmd("AUTH PLAIN =") == "501 5.5.2 Malformed authentication data"
        assert c.cmd("AUTH PLAIN not!base64") == "501 5.5.2 Invalid base64 data"
        assert c.cmd("AUTH LOGIN") == "334 " + b64("Username:")
        assert c.cmd("%%%") == "501 5.5.2 Invalid base64 data"
        assert c.cmd("AUTH CRAM-MD5").startswith("504 5.5.4")
        assert c.cmd(f"AUTH LOGIN {b64('alice')}") == "334 " + b64("Password:")
        assert c.cmd(b64(PASSWORD)) == "235 2.7.0 Authentication successful"
        assert "AUTH" not in " ".join(c.ehlo())  # not offered after success
        line = mw.wait_log("event=AUTH=server,")
        assert "mech=LOGIN" in line and "authid=alice" in line and "bits=" in line
    finally:
        mw.stop()


def test_auth_refused_inside_a_transaction_and_plaintext_on_loopback(tmp_path: Path) -> None:
    config = secure_config(tmp_path)
    config["auth"]["plaintext_on_loopback"] = True
    mw = Mailwright(tmp_path / "mw", config)
    mw.config["listeners"] = [{"address": "127.0.0.1", "port": mw.port, "kind": "submission"}]
    mw.start()
    try:
        c = Client(mw.port)
        assert "AUTH PLAIN LOGIN" in c.ehlo()  # offered without TLS: loopback is allowed
        assert c.cmd("MAIL FROM:<alice@mx.test>") == "530 5.7.0 Authentication required"
        assert c.cmd(f"AUTH PLAIN {plain('bob', 'battery staple')}").startswith("235")
        assert c.cmd("MAIL FROM:<bob@mx.test>").startswith("250")
        assert c.cmd(f"AUTH PLAIN {plain('bob', 'battery staple')}").startswith("503")
        assert c.cmd("RSET").startswith("250")
        c.close()
        c = Client(mw.port)
        c.ehlo()
        c.cmd(f"AUTH PLAIN {plain('bob', 'battery staple')}")
        c.cmd("MAIL FROM:<bob@mx.test>")
        assert c.cmd("AUTH LOGIN") == "503 5.5.1 Already authenticated"
        c.close()
    finally:
        mw.stop()


def test_brute_force_is_slowed_then_refused_per_session_address_and_user(
    tmp_path: Path,
) -> None:
    auth = {
        "max_failures_per_session": 3,
        "max_failures_per_ip": 5,
        "max_failures_per_user": 4,
        "failure_delay": 0.2,
        "max_failure_delay": 0.4,
    }
    config = secure_config(tmp_path)
    config["auth"].update(auth)
    mw = Mailwright(tmp_path / "mw", config)
    mw.config["listeners"] = [{"address": "127.0.0.1", "port": mw.port, "kind": "submission"}]
    mw.start()
    try:
        c = tls_client(mw, "127.0.0.11")
        c.ehlo()
        started = time.monotonic()
        assert c.cmd(f"AUTH PLAIN {plain('user1', 'guess')}") == (
            "535 5.7.8 Authentication credentials invalid"
        )
        first = time.monotonic() - started
        assert c.cmd(f"AUTH PLAIN {plain('user2', 'guess')}").startswith("535 5.7.8")
        assert first >= 0.2 and time.monotonic() - started >= 0.2 + 0.4  # doubling delay
        assert c.cmd(f"AUTH PLAIN {plain('user3', 'guess')}").startswith("421 4.7.0")
        assert c.closed()
        c = tls_client(mw, "127.0.0.11")
        c.ehlo()
        assert c.cmd(f"AUTH PLAIN {plain('user4', 'guess')}").startswith("535")
        assert c.cmd(f"AUTH PLAIN {plain('user5', 'guess')}").startswith("535")
        # five failures from this address: even the right password is not checked now
        assert c.cmd(f"AUTH PLAIN {plain('alice', PASSWORD)}") == (
            "454 4.7.0 Too many failed authentication attempts, try again later"
        )
        c.close()
        c = tls_client(mw, "127.0.0.12")  # another address is not affected
        c.ehlo()
        assert c.cmd(f"AUTH PLAIN {plain('alice', PASSWORD)}").startswith("235")
        # one guess for alice from each of four addresses: nobody is locked out (issue 12
        # item 7); four guesses for alice from one address lock alice there only
        for n in range(13, 17):
            g = tls_client(mw, f"127.0.0.{n}")
            g.ehlo()
            assert g.cmd(f"AUTH LOGIN {b64('alice')}").startswith("334")
            assert g.cmd(b64("wrong")).startswith("535")
            g.close()
        c = tls_client(mw, "127.0.0.17")
        c.ehlo()
        assert c.cmd(f"AUTH PLAIN {plain('alice', PASSWORD)}").startswith("235")
        c.close()
        for _ in range(2):
            g = tls_client(mw, "127.0.0.18")
            g.ehlo()
            assert g.cmd(f"AUTH PLAIN {plain('alice', 'wrong')}").startswith("535")
            assert g.cmd(f"AUTH PLAIN {plain('alice', 'wrong')}").startswith("535")
            g.close()
        c = tls_client(mw, "127.0.0.18")
        c.ehlo()
        assert c.cmd(f"AUTH PLAIN {plain('alice', PASSWORD)}").startswith("454 4.7.0")
        assert c.cmd(f"AUTH PLAIN {plain('bob', 'battery staple')}").startswith("235")
        assert mw.wait_log("reason=too many failures")
    finally:
        mw.stop()


def test_mail_auth_parameter_trusted_only_when_authenticated(tmp_path: Path) -> None:
    mw = daemon(tmp_path, "smtp")
    try:
        c = tls_client(mw)
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@x.test> AUTH=<forged@x.test>").startswith("250")
        assert c.cmd("RCPT TO:<postmaster@mx.test>").startswith("250")
        message, _ = stored(mw, send_data(c, NO_HEADERS))
        assert message.envelope.params.auth == "<>"
        assert c.cmd(f"AUTH PLAIN {plain('alice', PASSWORD)}").startswith("235")
        assert c.cmd("MAIL FROM:<a@x.test> AUTH=alice+40x.test").startswith("250")
        assert c.cmd("RCPT TO:<postmaster@mx.test>").startswith("250")
        message, _ = stored(mw, send_data(c, NO_HEADERS))
        assert message.envelope.params.auth == "alice@x.test"
    finally:
        mw.stop()


def test_password_never_appears_in_the_log(tmp_path: Path) -> None:
    secret = "Sup3r-Secret!"
    config = secure_config(tmp_path)
    mw = Mailwright(tmp_path / "mw", config)
    mw.config["listeners"] = [{"address": "127.0.0.1", "port": mw.port, "kind": "submission"}]
    mw.write_config()
    mw.cli("auth", "passwd", "alice", "--password-stdin", "--rounds", "4",
           input=f"{secret}\n".encode())  # fmt: skip
    assert secret not in Path(config["auth"]["users_file"]).read_text()
    mw.start()  # at DEBUG level, the most talkative
    try:
        c = Client(mw.port)
        c.ehlo()
        c.cmd(f"AUTH PLAIN {plain('alice', secret)}")  # 538: no TLS yet
        c.cmd(b64(secret))  # a confused client: now an unknown command
        c.cmd(plain("alice", secret))
        c.close()
        c = tls_client(mw)
        c.ehlo()
        c.cmd(f"AUTH PLAIN {plain('alice', secret + 'x')}")
        c.cmd("AUTH LOGIN")
        c.cmd(b64("alice"))
        c.cmd(b64(secret + "y"))
        assert c.cmd(f"AUTH PLAIN {plain('alice', secret)}").startswith("235")
        with smtplib.SMTP("127.0.0.1", mw.port) as s:
            s.starttls(context=trusting(Path(config["tls"]["certificate"])))
            s.login("alice", secret)
        mw.wait_log("authid=alice", occurrence=2)
    finally:
        mw.stop()
    log = "\n".join(mw.log)
    forms = [secret, b64(secret), plain("alice", secret), b64(secret + "x"), b64(secret + "y")]
    forms += [base64.b64encode(f"\0alice\0{secret}x".encode()).decode()]
    for form in forms:
        assert form not in log, form
    assert "AUTH=server failure" in log and "authid=alice" in log


def test_users_file_commands_errors_and_live_changes(tmp_path: Path) -> None:
    config = secure_config(tmp_path)
    users = Path(config["auth"]["users_file"])
    mw = Mailwright(tmp_path / "mw", config)
    mw.write_config()
    out = mw.cli("auth", "adduser", "carol", "--password-stdin", "--rounds", "4",
                 input=b"first pass\n")  # fmt: skip
    assert out.returncode == 0, out.stderr
    again = mw.cli("auth", "adduser", "carol", "--password-stdin", input=b"x\n")
    assert again.returncode == 65 and b"exists" in again.stderr
    assert mw.cli("auth", "check").stdout.decode().endswith("3 user(s), OK\n")
    good = users.read_text()
    users.write_text(good + "broken line\nbob:$2b$04$short\n")
    check = mw.cli("auth", "check")
    assert check.returncode == 78
    assert check.stderr.decode().splitlines() == [
        f"{users}:4: expected user:hash",
        f"{users}:5: the hash is not bcrypt ($2b$...): make it with 'mailwright auth adduser'",
    ]
    mw.start()
    try:
        mw.wait_log(f"{users}:4: expected user:hash")
        c = tls_client(mw)
        c.ehlo()
        assert c.cmd(f"AUTH PLAIN {plain('carol', 'first pass')}").startswith("235")
        users.write_text(good)
        out = mw.cli("auth", "passwd", "carol", "--password-stdin", "--rounds", "4",
                     input=b"second pass\n")  # fmt: skip
        assert out.returncode == 0, out.stderr

        def new_password_works() -> bool:
            c = tls_client(mw)
            c.ehlo()
            return c.cmd(f"AUTH PLAIN {plain('carol', 'second pass')}").startswith("235")

        wait_until(new_password_works, what="the daemon to reread the users file")
        assert mw.cli("auth", "deluser", "carol").returncode == 0
        assert mw.cli("auth", "passwd", "nobody", "--password-stdin", input=b"x\n").returncode == 67
    finally:
        mw.stop()


def test_milter_sees_the_authenticated_name(tmp_path: Path) -> None:
    with milters.py_filter(tmp_path) as f:
        config = secure_config(tmp_path)
        config["filters"] = [{"milter": f.spec, "name": "t"}]
        mw = Mailwright(tmp_path / "mw", config)
        mw.config["listeners"] = [{"address": "127.0.0.1", "port": mw.port, "kind": "submission"}]
        mw.start()
        try:
            c = tls_client(mw)
            c.ehlo()
            assert c.cmd(f"AUTH PLAIN {plain('alice', PASSWORD)}").startswith("235")
            assert c.cmd("MAIL FROM:<alice@mx.test>").startswith("250")
            events = f.wait_for("mail")
            c.close()
        finally:
            mw.stop()
    envfrom = next(e for e in events if e["cb"] == "mail")
    assert envfrom["macros"]["{auth_authen}"] == "alice"
    assert envfrom["macros"]["{auth_type}"] == "PLAIN"
