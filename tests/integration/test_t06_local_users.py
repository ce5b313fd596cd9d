"""Who submitted: the kernel says (SO_PEERCRED, the maildrop file's owner), not the client.

Runs the real ``sendmail`` as root and as other users (``setpriv``); needs root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.queue import maildrop
from tests.support.daemon import Mailwright
from tests.support.peers import is_root, peer
from tests.support.sendmail import Tools, envelope_of, short_tmp, smtp_over_pipe

pytestmark = peer("root", is_root(), "runs commands as other users")

WARNING = "X-Authentication-Warning"


@pytest.fixture(scope="module")
def tools() -> Iterator[Tools]:
    with short_tmp() as root:
        mw = Mailwright(
            root,
            {
                "hostname": "mx.test",
                "local": {"trusted_users": ["daemon"], "pickup_interval": 3600},
            },
        )
        mw.start()
        try:
            yield Tools(mw, root / "bin")
        finally:
            mw.stop()


def test_socket_submission_names_the_calling_user(tools: Tools) -> None:
    _, stored, msg, _ = tools.submit("user", input=b"hi\n", user="nobody")
    assert envelope_of(stored) == ("nobody@mx.test", ["user@mx.test"])
    assert msg["Received"].startswith("(from nobody@localhost)")
    assert stored.origin.local_user == "nobody"
    assert msg[WARNING] is None  # its own address: nothing to warn about
    assert msg["From"].endswith("<nobody@mx.test>") or msg["From"] == "nobody@mx.test"


def test_two_users_one_after_the_other(tools: Tools) -> None:
    _, as_root, _, _ = tools.submit("u", input=b"x\n")
    _, as_nobody, _, _ = tools.submit("u", input=b"x\n", user="nobody")
    assert (as_root.origin.local_user, as_nobody.origin.local_user) == ("root", "nobody")


def test_an_untrusted_user_setting_the_sender_gets_a_warning_header(tools: Tools) -> None:
    _, stored, msg, raw = tools.submit("-f", "root@mx.test", "user", input=b"x\n", user="nobody")
    assert stored.envelope.sender_text == "root@mx.test"
    assert msg[WARNING] == "mx.test: nobody set sender to root@mx.test using -f"
    # right after our Received header, as Sendmail places it
    lines = raw.split(b"\r\n")
    assert lines[3].startswith(b"X-Authentication-Warning:")
    _, _, msg, _ = tools.submit("-f", "<>", "user", input=b"x\n", user="nobody")
    assert msg[WARNING] == "mx.test: nobody set sender to <> using -f"


@pytest.mark.parametrize("user", ["root", "daemon"])  # root always; daemon by configuration
def test_trusted_users_may_set_the_sender(tools: Tools, user: str) -> None:
    _, stored, msg, _ = tools.submit("-f", "someone@x.test", "u", input=b"x\n", user=user)
    assert stored.envelope.sender_text == "someone@x.test"
    assert stored.origin.local_user == user
    assert msg[WARNING] is None


def test_a_client_cannot_claim_another_user_over_the_socket(tools: Tools) -> None:
    # a raw SMTP client as nobody, saying it is root in every way it can
    script = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "f=s.makefile('rb')\n"
        "def r():\n"
        "    while True:\n"
        "        l=f.readline()\n"
        "        if l[3:4]!=b'-': return l\n"
        "r()\n"
        "for c in [b'EHLO root', b'MAIL FROM:<root@mx.test>', b'RCPT TO:<u@mx.test>', b'DATA']:\n"
        "    s.sendall(c+b'\\r\\n'); r()\n"
        "s.sendall(b'Received: from root@localhost\\r\\nFrom: root@mx.test\\r\\n'\n"
        "          b'\\r\\nx\\r\\n.\\r\\n')\n"
        "print(r().decode().split()[2])\n"
    )
    before = tools.queue_ids()
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            sys.executable,
            "-c",
            script,
            str(tools.queue_dir / "submit.sock"),
        ],
        capture_output=True,
        check=True,
        env=tools.env(),
    )
    qid = proc.stdout.decode().strip()
    assert tools.queue_ids() - before == {qid}
    stored, msg, _ = tools.read(qid)
    assert stored.origin.local_user == "nobody"
    assert msg.get_all("Received")[0].startswith("(from nobody@localhost)")
    assert msg[WARNING] == "mx.test: nobody set sender to root@mx.test using -f"


def test_bs_through_the_daemon_as_another_user(tools: Tools) -> None:
    client, proc = smtp_over_pipe(tools, user="nobody")
    client.ehlo("c")
    client.mail("nobody@mx.test")
    client.rcpt("u@mx.test")
    code, text = client.data(b"Subject: bs\r\n\r\nx\r\n")
    client.quit()
    assert code == 250 and proc.wait(10) == 0
    stored, msg, _ = tools.read(text.decode().split()[1])
    assert stored.origin.local_user == "nobody"
    assert msg["Received"].startswith("(from nobody@localhost)")
    assert msg[WARNING] is None


def test_users_cannot_list_or_read_the_maildrop_or_the_queue(tools: Tools) -> None:
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "ls",
            str(tools.maildrop),
        ],
        capture_output=True,
    )
    assert proc.returncode != 0 and b"Permission denied" in proc.stderr
    proc = tools.run(program="mailq", user="nobody")
    assert proc.returncode == 77 and b"permission denied" in proc.stderr


def test_maildrop_files_belong_to_their_writer_whatever_they_say(tools: Tools) -> None:
    tools.mw.stop()
    try:
        proc = tools.run("-f", "root@mx.test", "u", input=b"Subject: md\n\nx\n", user="nobody")
        assert proc.returncode == 0, proc.stderr
        (path,) = maildrop.pending(str(tools.maildrop))
        assert os.stat(path).st_uid == 65534
        # a forged "uid" inside the file changes nothing
        data = Path(path).read_bytes().replace(b'"uid":65534', b'"uid":0')
        assert b'"uid":0' in data
        with open(path, "wb") as f:  # truncates in place: the owner stays nobody
            f.write(data)
    finally:
        tools.mw.start()
    line = tools.mw.wait_log(f"maildrop {os.path.basename(path)}: queued as ")
    assert "(uid 65534," in line
    qid = line.split("queued as ")[1].split()[0]
    stored, msg, _ = tools.read(qid)
    assert stored.origin.local_user == "nobody"
    assert msg["Received"].startswith("(from nobody@localhost)")
    assert msg[WARNING] == "mx.test: nobody set sender to root@mx.test using -f"
