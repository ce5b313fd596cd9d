"""The local agent: mailboxes (mbox, Maildir), programs, files, trace headers, loops,
and running as the recipient when root."""

from __future__ import annotations

import asyncio
import mailbox
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.core.delivery import DeliveryRecipient, DeliveryResult, Outcome
from mailwright.core.target import Mailer, Target
from mailwright.delivery import maildir
from mailwright.delivery.deposit import DepositOptions
from mailwright.delivery.local import LocalAgent
from mailwright.delivery.mbox import MboxOptions
from mailwright.routing.nexthop import NextHop, Transport
from tests.support.delivery_request import request
from tests.support.localusers import StaticUsers
from tests.support.opentmp import open_tmp
from tests.support.peers import is_root, peer

root_only = peer("root", is_root(), "delivers as other users")


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Reachable by nobody, who runs programs and file deliveries when we are root."""
    with open_tmp() as path:
        yield path


LOCAL = NextHop(Transport.LOCAL)
MESSAGE = (
    b"From: a@x.test\r\nTo: alice@mx.test\r\nSubject: hello\r\n\r\nFirst line.\r\nFrom here on.\r\n"
)


def agent(tmp: Path, **options: object) -> tuple[LocalAgent, StaticUsers]:
    users = StaticUsers(tmp, ["alice", "bob"])
    users.add("carol", maildir=True)
    return LocalAgent(users, DepositOptions(**options)), users  # type: ignore[arg-type]


def to(
    address: str, mailer: Mailer = Mailer.LOCAL, value: str = "", user: str = ""
) -> DeliveryRecipient:
    value = value or address.partition("@")[0]
    return DeliveryRecipient(0, address, None, None, Target(mailer, value, user))


def deliver(
    a: LocalAgent, *rcpts: DeliveryRecipient, message: bytes = MESSAGE, sender: str = "a@x.test"
) -> list[DeliveryResult]:
    return asyncio.run(a.deliver(request(LOCAL, *rcpts, message=message, sender=sender)))


def test_mbox_delivery_with_trace_headers(tmp_path: Path) -> None:
    a, users = agent(tmp_path)
    (result,) = deliver(a, to("alice@mx.test"))
    assert result.outcome is Outcome.DELIVERED, result.reply
    (msg,) = mailbox.mbox(users.users["alice"].mailbox)
    assert msg["Return-Path"] == "<a@x.test>" and msg["Delivered-To"] == "alice@mx.test"
    assert msg.get_from().startswith("a@x.test ")
    assert msg.get_payload() == "First line.\n>From here on.\n"


def test_maildir_delivery(tmp_path: Path) -> None:
    a, users = agent(tmp_path)
    (result,) = deliver(a, to("carol@mx.test"))
    assert result.outcome is Outcome.DELIVERED, result.reply
    box = users.users["carol"].mailbox
    (name,) = os.listdir(box / "new")
    data = (box / "new" / name).read_bytes()
    assert name.endswith(f",S={len(data)}") and os.listdir(box / "tmp") == []
    assert data.startswith(
        b"Return-Path: <a@x.test>\nDelivered-To: carol@mx.test\nFrom: a@x.test\n"
    )
    assert data.endswith(b"\n\nFirst line.\nFrom here on.\n")  # no quoting in a Maildir
    count = subprocess.run(["messages", "-q", str(box)], capture_output=True, text=True)
    assert count.stdout.strip() == "1"


def test_maildir_names_are_unique() -> None:
    assert len({maildir.unique_name() for _ in range(1000)}) == 1000


def test_several_recipients_each_get_a_copy(tmp_path: Path) -> None:
    a, users = agent(tmp_path)
    results = deliver(a, to("alice@mx.test"), to("bob@mx.test"), to("carol@mx.test"))
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 3
    assert [r.index for r in results] == [0, 1, 2]
    assert len(mailbox.mbox(users.users["bob"].mailbox)) == 1


def test_delivered_to_loop_is_refused(tmp_path: Path) -> None:
    a, users = agent(tmp_path)
    looped = b"Delivered-To: Alice@MX.test\r\n" + MESSAGE
    alice, bob = deliver(a, to("alice@mx.test"), to("bob@mx.test"), message=looped)
    assert alice.outcome is Outcome.FAILED
    assert (alice.reply.code, alice.reply.status) == (554, "5.4.6")
    assert "mail forwarding loop" in alice.reply.text
    assert bob.outcome is Outcome.DELIVERED
    assert not users.users["alice"].mailbox.exists()


def test_unknown_user_and_error_targets(tmp_path: Path) -> None:
    a, _ = agent(tmp_path)
    error = DeliveryRecipient(
        0, "x@mx.test", None, None, Target(Mailer.ERROR, "550 5.1.1 <x@mx.test>... User unknown")
    )
    nosuch, refused = deliver(a, to("nosuch@mx.test"), error)
    assert (nosuch.outcome, nosuch.reply.status) == (Outcome.FAILED, "5.1.1")
    assert (refused.outcome, refused.reply.text) == (Outcome.FAILED, "<x@mx.test>... User unknown")


def test_mailbox_full_defers(tmp_path: Path) -> None:
    a, users = agent(tmp_path, mbox=MboxOptions(size_limit=300))
    big = MESSAGE + b"x" * 400 + b"\r\n"
    (result,) = deliver(a, to("alice@mx.test"), message=big)
    assert (result.outcome, result.reply.code, result.reply.status) == (
        Outcome.DEFERRED,
        452,
        "4.2.2",
    )
    assert users.users["alice"].mailbox.read_bytes() == b""


def test_recipient_without_target_is_a_local_user(tmp_path: Path) -> None:
    a, users = agent(tmp_path)
    (result,) = deliver(a, DeliveryRecipient(0, "Alice@mx.test"))
    assert result.outcome is Outcome.DELIVERED
    assert len(mailbox.mbox(users.users["alice"].mailbox)) == 1


# ---- programs ------------------------------------------------------------------------------------


def prog(command: str, tmp: Path, **options: object) -> DeliveryResult:
    a, _ = agent(tmp, **options)
    (result,) = deliver(a, to("list@mx.test", Mailer.PROG, command, "nobody"))
    return result


def test_program_gets_the_message_and_sendmail_environment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.touch()
    out.chmod(0o666)
    tmp_path.chmod(0o755)
    command = f"{{ env | sort; echo ---; cat; }} > {out}"
    result = prog(command, tmp_path)
    assert result.outcome is Outcome.DELIVERED, result.reply
    env, _, stdin = out.read_text().partition("---\n")
    assert "AGENT=sendmail\n" in env and "SENDER=a@x.test\n" in env
    assert "RECIPIENT=list@mx.test\n" in env
    assert stdin.startswith("Return-Path: <a@x.test>\nDelivered-To: list@mx.test\nFrom: a@x.test\n")
    assert stdin.endswith("\n\nFirst line.\nFrom here on.\n")
    assert result.diagnostic_type == "x-unix"


@pytest.mark.parametrize(
    ("code", "outcome", "status"),
    [
        (75, Outcome.DEFERRED, "4.3.0"),
        (67, Outcome.FAILED, "5.1.1"),
        (1, Outcome.FAILED, "5.3.0"),
        (77, Outcome.FAILED, "5.7.1"),
    ],
)
def test_program_exit_status(tmp_path: Path, code: int, outcome: Outcome, status: str) -> None:
    result = prog(f"cat >/dev/null; echo 'it went wrong' >&2; exit {code}", tmp_path)
    assert (result.outcome, result.reply.status) == (outcome, status)
    assert "it went wrong" in result.reply.text


def test_program_that_does_not_read_its_input(tmp_path: Path) -> None:
    a, _ = agent(tmp_path)
    big = MESSAGE + b"y" * 2_000_000 + b"\r\n"
    (result,) = deliver(a, to("list@mx.test", Mailer.PROG, "exit 0", "nobody"), message=big)
    assert result.outcome is Outcome.DELIVERED


def test_program_killed_by_signal_fails(tmp_path: Path) -> None:
    result = prog("kill -9 $$", tmp_path)
    assert result.outcome is Outcome.FAILED and "signal SIGKILL" in result.reply.text


def test_program_timeout_kills_and_defers(tmp_path: Path) -> None:
    marker = tmp_path / "child"
    tmp_path.chmod(0o777)
    result = prog(f"(sleep 60; touch {marker}) & sleep 60", tmp_path, pipe_timeout=0.5)
    assert (result.outcome, result.reply.status) == (Outcome.DEFERRED, "4.3.0")
    assert "killed after 0.5 seconds" in result.reply.text
    gone = subprocess.run(["pgrep", "-f", f"touch {marker}"], capture_output=True)
    assert gone.returncode == 1  # the whole process group went


@root_only
def test_program_runs_as_the_controlling_user(tmp_path: Path) -> None:
    out = tmp_path / "id"
    tmp_path.chmod(0o777)
    result = prog(f"id -u > {out}; pwd >> {out}", tmp_path)
    assert result.outcome is Outcome.DELIVERED, result.reply
    uid, cwd = out.read_text().split()
    assert uid == "65534" and cwd == "/"  # nobody's home does not exist: /


# ---- files ------------------------------------------------------------------------------


def test_file_delivery_appends_mbox(tmp_path: Path) -> None:
    a, _ = agent(tmp_path)
    target = tmp_path / "archive" / "list.mbox"
    target.parent.mkdir()
    target.parent.chmod(0o777)
    for _ in range(2):
        (result,) = deliver(a, to("list@mx.test", Mailer.FILE, str(target), "nobody"))
        assert result.outcome is Outcome.DELIVERED, result.reply
    box = mailbox.mbox(target)
    assert [m["Delivered-To"] for m in box] == ["list@mx.test"] * 2
    if os.geteuid() == 0:
        assert target.stat().st_uid == 65534  # written by the controlling user


def test_file_delivery_to_dev_null_and_to_programs(tmp_path: Path) -> None:
    a, _ = agent(tmp_path)
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o777)
    null, program = deliver(
        a,
        to("list@mx.test", Mailer.FILE, "/dev/null", "nobody"),
        to("list@mx.test", Mailer.FILE, str(script), "nobody"),
    )
    assert null.outcome is Outcome.DELIVERED
    assert (program.outcome, program.reply.status) == (Outcome.FAILED, "5.7.1")
    assert script.read_text() == "#!/bin/sh\n"


@root_only
def test_file_the_controlling_user_may_not_write_is_not_written(tmp_path: Path) -> None:
    a, _ = agent(tmp_path)
    target = tmp_path / "root-only"
    target.write_text("")
    target.chmod(0o600)
    (result,) = deliver(a, to("list@mx.test", Mailer.FILE, str(target), "nobody"))
    # fails at once, as a program that cannot write does (issue 12 item 20)
    outcome = (result.outcome, result.reply.code, result.reply.status)
    assert outcome == (Outcome.FAILED, 550, "5.2.0"), result.reply
    assert target.read_text() == ""


@root_only
def test_mailbox_as_root_belongs_to_the_user(tmp_path: Path) -> None:
    users = StaticUsers(tmp_path, [])
    users.add("nob", uid=65534, gid=65534)
    users.add("mdir", uid=65534, gid=65534, maildir=True)
    (tmp_path / "mail").chmod(0o755)
    a = LocalAgent(users)
    box, mdir = deliver(a, to("nob@mx.test"), to("mdir@mx.test"))
    assert box.outcome is Outcome.DELIVERED and mdir.outcome is Outcome.DELIVERED, (
        box.reply,
        mdir.reply,
    )
    assert users.users["nob"].mailbox.stat().st_uid == 65534
    (name,) = os.listdir(users.users["mdir"].mailbox / "new")
    assert (users.users["mdir"].mailbox / "new" / name).stat().st_uid == 65534
