"""Server TLS end to end: STARTTLS with Python's ssl, swaks and openssl s_client, implicit TLS
(RFC 8314), the plaintext-injection case, TLS 1.2 minimum, reload on SIGHUP, and no TLS at
all without a certificate."""

from __future__ import annotations

import asyncio
import shutil
import signal
import smtplib
import ssl
import subprocess
from pathlib import Path

import pytest

from mailwright.config.schema import Listener, Settings, TlsSection
from mailwright.core.reply import Reply
from mailwright.edge.context import EdgeContext
from mailwright.edge.security import EdgeSecurity
from mailwright.edge.session import Session
from mailwright.edge.stream import SessionStream
from mailwright.edge.tls import ServerTls
from mailwright.policy.hooks import Pipeline, SessionInfo
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import NewMessage
from tests.support.daemon import Mailwright, free_port, running
from tests.support.peers import have_programs, require_peer
from tests.support.security import (
    Client,
    LineProcess,
    certificate,
    plain,
    secure_config,
    trusting,
)

MSG = b"From: a@x.test\r\nTo: postmaster@mx.test\r\nSubject: tls\r\n\r\nbody\r\n"


def stored(mw: Mailwright, qid: str) -> str:
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        return store.read_headers(qid).encode().decode()
    finally:
        store.close()


def test_starttls_with_python_ssl_then_received_says_esmtps(tmp_path: Path) -> None:
    config = secure_config(tmp_path)
    cert = Path(config["tls"]["certificate"])
    with running(tmp_path / "mw", config) as mw, smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls") and not s.has_extn("auth")  # no AUTH before TLS
        code, _ = s.starttls(context=trusting(cert))
        assert code == 220
        s.ehlo("client.test")
        assert not s.has_extn("starttls")  # not advertised again
        assert s.has_extn("auth") and s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
        s.mail("a@x.test")
        s.rcpt("postmaster@mx.test")
        code, text = s.data(MSG)
        assert code == 250
        qid = text.decode().split()[1]
        line = mw.wait_log("event=STARTTLS=server")
        assert "version=TLSv1.3" in line and "cipher=TLS_" in line
        assert "proto=ESMTPS," in mw.wait_log(f"{qid}: from=<a@x.test>")
        received = stored(mw, qid).split("\r\n")[:3]
        assert received[0].startswith("Received: from client.test (localhost [127.0.0.1])")
        assert received[1].startswith("\t(using TLSv1.3 with cipher TLS_")
        assert received[2].startswith(f"\tby mx.test (Mailwright) with ESMTPS id {qid}")


def test_commands_pipelined_with_starttls_are_not_executed_after_the_handshake(
    tmp_path: Path,
) -> None:
    config = secure_config(tmp_path)
    context = trusting(Path(config["tls"]["certificate"]))
    with running(tmp_path / "mw", config) as mw:
        c = Client(mw.port)
        c.ehlo()
        c.send(
            b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n"
            b"RCPT TO:<postmaster@mx.test>\r\nRSET\r\n"
        )
        assert c.reply() == "220 2.0.0 Ready to start TLS"
        assert c.buf == b""  # the server answered nothing else in plaintext
        c.sock = context.wrap_socket(c.sock, server_hostname="mx.test")
        c.ehlo()
        assert c.cmd("RCPT TO:<postmaster@mx.test>").startswith("503 5.5.1")  # no MAIL survived
        assert c.cmd("DATA").startswith("503")
        assert c.cmd("MAIL FROM:<real@x.test>").startswith("250")
        assert c.cmd("QUIT").startswith("221")
    assert not any("injected@evil.test" in line for line in mw.log)


def test_swaks_starttls_and_openssl_s_client(tmp_path: Path) -> None:
    require_peer("swaks and openssl", have_programs("swaks", "openssl"), "packages swaks, openssl")
    config = secure_config(tmp_path)
    cert = config["tls"]["certificate"]
    with running(tmp_path / "mw", config) as mw:
        out = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{mw.port}", "--from", "a@x.test",
             "--to", "postmaster@mx.test", "--tls", "--tls-verify", "--tls-ca-path", cert,
             "--tls-sni", "mx.test", "-a", "LOGIN", "-au", "alice", "-ap", "correct horse",
             "--timeout", "10"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert "<~  235 2.7.0 Authentication successful" in out.stdout
        assert "<~  250 2.0.0" in out.stdout
        client = LineProcess(
            ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{mw.port}",
             "-name", "client.test", "-CAfile", cert, "-verify_return_error",
             "-verify_hostname", "mx.test", "-quiet", "-crlf"]
        )  # fmt: skip
        client.write("EHLO client.test")
        ehlo = client.read_until(lambda line: line.startswith("250 "))
        assert not any("STARTTLS" in line for line in ehlo)  # not offered again
        assert "250-AUTH PLAIN LOGIN" in ehlo and ehlo[-1] == "250 REQUIRETLS"  # RFC 8689
        client.write(f"AUTH PLAIN {plain('alice', 'correct horse')}")
        assert client.read_until(bool) == ["235 2.7.0 Authentication successful"]
        client.write("MAIL FROM:<a@x.test>")
        assert client.read_until(bool) == ["250 2.1.0 Sender <a@x.test> OK"]
        client.write("QUIT")
        assert client.read_until(bool)[0].startswith("221")
        rc, stderr = client.close()
        assert rc == 0, stderr
        assert mw.wait_log("event=AUTH=server").count("authid=alice") == 1


def test_implicit_tls_listener(tmp_path: Path) -> None:
    config = secure_config(tmp_path)
    cert = config["tls"]["certificate"]
    port = free_port()
    config["listeners"] = [
        {"address": "127.0.0.1", "port": port, "kind": "submission", "tls": "implicit"}
    ]
    mw = Mailwright(tmp_path / "mw", config)
    mw.port = port
    mw.start()
    try:
        c = Client(port, tls=trusting(Path(cert)))
        assert c.greeting.startswith("220 mx.test") and c.tls_version in ("TLSv1.2", "TLSv1.3")
        keywords = c.ehlo()
        assert "STARTTLS" not in keywords and "AUTH PLAIN LOGIN" in keywords
        assert c.cmd("STARTTLS").startswith("503")
        c.close()
        # the cross-checks with other clients, after the assertions that need no peer
        require_peer("openssl", have_programs("openssl"), "package openssl")
        plain_client = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-crlf"],
            input="QUIT\n", capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert "220 mx.test" in plain_client.stdout
        require_peer("swaks", have_programs("swaks"), "package swaks")
        out = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{port}", "-tlsc", "--from", "a@x.test",
             "--to", "b@elsewhere.test", "-a", "PLAIN", "-au", "bob",
             "-ap", "battery staple", "--timeout", "10"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert "proto=ESMTPSA" in mw.wait_log("proto=ESMTPSA")
    finally:
        mw.stop()


def test_tls_12_is_the_minimum_and_13_can_be(tmp_path: Path) -> None:
    config = secure_config(tmp_path)
    cert = Path(config["tls"]["certificate"])
    old = trusting(cert)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with running(tmp_path / "a", config) as mw:
        c = Client(mw.port)
        c.ehlo()
        assert c.starttls(old).startswith("220")
        assert c.tls_version == "TLSv1.2"
        assert "AUTH PLAIN LOGIN" in c.ehlo()
    config["tls"]["min_version"] = "TLSv1.3"
    with running(tmp_path / "b", config) as mw:
        c = Client(mw.port)
        c.ehlo()
        with pytest.raises(ssl.SSLError):
            c.starttls(old)
        mw.wait_log("event=STARTTLS=server, relay=localhost [127.0.0.1], error=")


def test_no_certificate_no_starttls_and_no_auth(tmp_path: Path) -> None:
    with running(tmp_path) as mw:
        c = Client(mw.port)
        keywords = c.ehlo()
        assert "STARTTLS" not in keywords and not any(k.startswith("AUTH") for k in keywords)
        assert c.cmd("STARTTLS") == "502 5.5.1 TLS not available"
        assert c.cmd("AUTH PLAIN AGEAYg==") == "502 5.5.1 AUTH not available"


def test_sighup_reloads_the_certificate_and_keeps_the_old_one_if_broken(
    tmp_path: Path,
) -> None:
    config = secure_config(tmp_path)
    cert, key = Path(config["tls"]["certificate"]), Path(config["tls"]["key"])
    with running(tmp_path / "mw", config) as mw:

        def served_names() -> str:
            c = Client(mw.port)
            c.ehlo()
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            c.starttls(context)
            der = c.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
            c.close()
            return ssl.DER_cert_to_PEM_cert(der)

        before = served_names()
        new_cert, new_key = certificate(tmp_path / "new", "renewed.test")
        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        assert mw.proc is not None
        mw.proc.send_signal(signal.SIGHUP)
        mw.wait_log("TLS certificate reloaded")
        after = served_names()
        assert after != before and after == new_cert.read_text()
        key.write_text("not a key\n")
        mw.proc.send_signal(signal.SIGHUP)
        mw.wait_log("TLS reload failed, keeping the previous certificate")
        assert served_names() == after


def test_tls_selfsigned_and_check_commands(tmp_path: Path) -> None:
    mw = Mailwright(tmp_path, {"tls": {"certificate": "cert.pem", "key": "key.pem"}})
    mw.write_config()
    out = mw.cli("tls", "selfsigned", "--name", "mail.example.test")
    assert out.returncode == 0, out.stderr
    assert b"mail.example.test, mx.test, localhost, 127.0.0.1, ::1" in out.stdout
    assert oct((tmp_path / "key.pem").stat().st_mode & 0o777) == "0o600"
    text = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "cert.pem"), "-noout", "-ext",
         "subjectAltName"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "DNS:mail.example.test" in text and "IP Address:127.0.0.1" in text
    again = mw.cli("tls", "selfsigned")
    assert again.returncode == 73 and b"exists (use --force" in again.stderr
    assert mw.cli("tls", "selfsigned", "--force").returncode == 0
    assert mw.cli("tls", "check").returncode == 0
    (tmp_path / "key.pem").write_text("garbage\n")
    bad = mw.cli("tls", "check")
    assert bad.returncode == 78 and b"cannot load certificate and key" in bad.stderr
    serve = subprocess.run(
        mw.command("serve"), env=mw.env(), capture_output=True, timeout=60
    )  # the daemon refuses to start with it
    assert serve.returncode == 78 and b"cert.pem" in serve.stderr


def test_454_when_tls_cannot_start(tmp_path: Path) -> None:
    """In-process: the certificate is gone between EHLO and STARTTLS."""
    cert, key = certificate(tmp_path)
    settings = Settings(
        hostname="mx.test",
        tls=TlsSection(certificate=cert, key=key),
        queue={"directory": tmp_path / "q"},  # type: ignore[arg-type]
    )
    security = EdgeSecurity(settings, tls=ServerTls(settings.tls))

    async def enqueue(message: NewMessage) -> None:
        raise AssertionError("nothing is sent")

    ctx = EdgeContext(settings, Pipeline(), enqueue, tmp_path, security=security)

    async def handle(reader: SessionStream, writer: SessionStream) -> None:
        info = SessionInfo("1", "smtp-25", "smtp", "127.0.0.1", 25, "127.0.0.1", 1)
        session = Session(reader, writer, ctx, Listener(), info)
        assert session.conn.tls_available
        assert security.tls is not None
        security.tls.context = None
        await session.run()

    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SessionStream(loop, handle), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        replies = [await reader.readline()]
        writer.write(b"EHLO c.test\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        writer.write(b"STARTTLS\r\n")
        replies.append(await reader.readline())
        writer.write(b"NOOP\r\n")
        replies.append(await reader.readline())
        writer.close()
        server.close()
        return replies

    async def bounded() -> list[bytes]:
        async with asyncio.timeout(20):
            return await main()

    replies = asyncio.run(bounded())
    assert (
        replies[1] == Reply.of(454, "4.7.0", "TLS not available due to temporary reason").encode()
    )
    assert replies[2].startswith(b"250")  # the session goes on in plaintext
