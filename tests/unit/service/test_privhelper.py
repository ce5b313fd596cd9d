"""The privileged helper's protocol, its checks and its deliveries, both ends in one event
loop over a real socket pair (the fork and the privilege drop are the integration test's)."""

from __future__ import annotations

import asyncio
import mailbox
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mailwright.config.schema import Settings
from mailwright.core.delivery import Outcome
from mailwright.delivery.deposit import Parcel
from mailwright.privhelper import protocol
from mailwright.privhelper.client import HelperClient, HelperDeposit, HelperMaildrop
from mailwright.privhelper.protocol import Channel, ProtocolError
from mailwright.privhelper.server import HelperServer
from mailwright.queue import maildrop
from mailwright.routing.localusers import LocalUser
from tests.support.opentmp import open_tmp

MESSAGE = b"From: a@x.test\r\nSubject: hi\r\n\r\nFrom the start.\r\nBody.\r\n"
QID = "01JD3K7Q2M4XK9A"


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Reachable by nobody (programs run as the default user when we are root)."""
    with open_tmp("mw-helper-") as path:
        yield path


def settings_for(tmp: Path) -> Settings:
    (tmp / "mail").mkdir(exist_ok=True)
    (tmp / "mailboxes").write_text("alice alice\ncarol carol/\n")
    return Settings.model_validate(
        {
            "queue": {"directory": str(tmp / "queue")},
            "local_delivery": {
                "mail_spool": str(tmp / "mail"),
                "virtual_mailbox_table": str(tmp / "mailboxes"),
            },
        }
    )


@asynccontextmanager
async def helper(tmp: Path) -> AsyncIterator[tuple[HelperClient, HelperServer]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = HelperServer(Channel(theirs), settings_for(tmp), None, (os.getuid(), os.getgid()))
    serving = asyncio.create_task(server.serve())
    client = HelperClient(ours, pid=-1)
    client.start()
    try:
        yield client, server
    finally:
        client._broken = True
        ours.close()
        await asyncio.wait_for(serving, 10)


def parcel(message: bytes = MESSAGE) -> Parcel:
    return Parcel(QID, "a@x.test", "alice@mx.test", None, lambda: iter([message]))


def user(tmp: Path, name: str = "alice", maildir: bool = False) -> LocalUser:
    return LocalUser(name, os.getuid(), os.getgid(), "", "", tmp / "mail" / name, maildir, True)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---- deliveries -------------------------------------------------------------------------------


def test_mailbox_and_maildir_delivery_through_the_helper(tmp_path: Path) -> None:
    async def go() -> tuple[object, object]:
        async with helper(tmp_path) as (client, _):
            deposit = HelperDeposit(client, pipe_timeout=10, lock_timeout=10)
            first = await deposit.mailbox(parcel(), user(tmp_path))
            second = await deposit.mailbox(parcel(), user(tmp_path, "carol", maildir=True))
            return first, second

    assert run(go()) == (None, None)
    box = list(mailbox.mbox(tmp_path / "mail" / "alice"))
    assert len(box) == 1
    assert box[0]["Delivered-To"] == "alice@mx.test"
    assert box[0].get_payload() == ">From the start.\nBody.\n"  # mbox quoting by the helper
    (only,) = list(mailbox.Maildir(tmp_path / "mail" / "carol", create=False))
    assert only.get_payload() == "From the start.\nBody.\n"


def test_an_unknown_user_is_refused_by_the_helper_itself(tmp_path: Path) -> None:
    async def go() -> object:
        async with helper(tmp_path) as (client, _):
            return await HelperDeposit(client, 10, 10).mailbox(parcel(), user(tmp_path, "mallory"))

    reply = run(go())
    assert reply is not None and reply.code == 550 and reply.status == "5.1.1"
    assert not (tmp_path / "mail" / "mallory").exists()


def test_program_and_file_run_as_the_default_user(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)

    async def go() -> tuple[Any, Any]:
        async with helper(tmp_path) as (client, _):
            deposit = HelperDeposit(client, 10, 10)
            program = await deposit.program(parcel(), f"cat > {out}/prog; id -u >> {out}/prog", "")
            filed = await deposit.file(parcel(), str(out / "file.mbox"), "")
            return program, filed

    program, filed = run(go())
    assert program.outcome is Outcome.DELIVERED
    assert filed is None
    text = (out / "prog").read_text()
    assert "Delivered-To: alice@mx.test" in text
    expected_uid = 65534 if os.geteuid() == 0 else os.geteuid()  # nobody when root
    assert text.rstrip().endswith(str(expected_uid))
    assert len(list(mailbox.mbox(out / "file.mbox"))) == 1


@pytest.mark.parametrize(
    ("op", "fields", "code", "why"),
    [
        ("file", {"user": "", "path": "relative/file"}, 550, "not an absolute, normal path"),
        ("file", {"user": "", "path": "/tmp/../etc/passwd"}, 550, "not an absolute, normal path"),
        ("program", {"user": "no-such-user-x", "command": "true"}, 550, "is not an account"),
        ("program", {"user": "daemon", "command": "true"}, 550, "has no login shell"),
        ("program", {"user": "", "command": "a\nb"}, 451, "control characters"),
        ("mailbox", {"user": "alice", "queue_id": "../../x"}, 451, "is not a queue id"),
    ],
)
def test_requests_the_helper_refuses(
    tmp_path: Path, op: str, fields: dict[str, Any], code: int, why: str
) -> None:
    async def go() -> Any:
        async with helper(tmp_path) as (client, _):
            base = {"queue_id": QID, "sender": "a@x.test", "recipient": "r@x.test", "orcpt": None}
            return await client.request(op, {**base, **fields}, 10, lambda: iter([MESSAGE]))

    answer = run(go())
    assert not answer.ok
    assert why in answer.body["error"]
    assert answer.reply.code == code


def test_unknown_requests_wrong_version_and_missing_content_are_refused(tmp_path: Path) -> None:
    async def go() -> list[dict[str, Any]]:
        async with helper(tmp_path) as (client, _):
            unknown = await client.request("chown", {"path": "/etc/shadow"}, 10)
            no_content = await client.request("mailbox", {"user": "alice"}, 10)
            assert client._channel is not None
            waiter = asyncio.get_running_loop().create_future()
            client._waiting[999] = waiter
            await client._channel.send({"v": 99, "id": 999, "op": "reload"})
            old = await asyncio.wait_for(waiter, 10)
            return [unknown.body, no_content.body, old.body]

    unknown, no_content, old = run(go())
    assert "unknown request 'chown'" in unknown["error"]
    assert "exactly one content descriptor" in no_content["error"]
    assert "protocol version 99" in old["error"]


def test_a_message_cut_short_is_not_delivered(tmp_path: Path) -> None:
    """The daemon dies while writing the content: the helper must not append half a
    message (mbox truncated back), and says so."""
    (tmp_path / "mail" / "alice").parent.mkdir(exist_ok=True)

    async def go() -> dict[str, Any]:
        async with helper(tmp_path) as (client, _):
            assert client._channel is not None
            read_end, write_end = os.pipe()
            request = {
                "v": 1,
                "id": 1,
                "op": "mailbox",
                "user": "alice",
                "queue_id": QID,
                "sender": "a@x.test",
                "recipient": "alice@mx.test",
                "orcpt": None,
            }
            waiter = asyncio.get_running_loop().create_future()
            client._waiting[1] = waiter
            await client._channel.send(request, [read_end])
            os.close(read_end)
            os.write(write_end, protocol.CHUNK.pack(100) + b"only part of it")
            os.close(write_end)  # no end marker: the writer is gone
            answer = await asyncio.wait_for(waiter, 10)
            return dict(answer.body)

    body = run(go())
    reply = protocol.reply_from(body["reply"])
    assert reply is not None and reply.transient
    assert "ended early" in reply.text
    box = tmp_path / "mail" / "alice"
    assert not box.exists() or box.stat().st_size == 0


# ---- the maildrop -----------------------------------------------------------------------------


def test_maildrop_files_are_opened_by_the_helper(tmp_path: Path) -> None:
    from mailwright.core.submission import Rcpt, SubmissionEnvelope

    drop = tmp_path / "queue" / "maildrop"
    drop.mkdir(parents=True)
    envelope = SubmissionEnvelope("a@x.test", [Rcpt("b@x.test"), Rcpt("c@x.test")])
    path = maildrop.write(str(drop), envelope, b"Subject: x\r\n\r\nhi\r\n")
    (drop / "link").symlink_to(path)

    async def go() -> tuple[Any, ...]:
        async with helper(tmp_path) as (client, _):
            access = HelperMaildrop(client)
            entry = await access.open(path)
            with entry:
                copy = await access.keep(entry, [1])
                content = b"".join(entry.chunks())
            missing = corrupt = refused = None
            try:
                await access.open(str(drop / "gone"))
            except FileNotFoundError as exc:
                missing = exc
            try:
                await access.open(str(drop / "link"))
            except maildrop.MaildropError as exc:
                corrupt = exc
            answer = await client.request("maildrop_open", {"name": "../queue.db"}, 10)
            refused = answer.body["error"]
            return content, copy, missing, corrupt, refused

    content, copy, missing, corrupt, refused = run(go())
    assert content == b"Subject: x\r\n\r\nhi\r\n"
    kept = maildrop.open_entry(copy)
    with kept:
        assert [r.address for r in kept.envelope.recipients] == ["c@x.test"]
    assert missing is not None
    assert "symbolic link" in str(corrupt)
    assert "not a maildrop file name" in refused


# ---- the protocol itself ----------------------------------------------------------------------


def test_frames_and_descriptors_cross_the_socket_pair() -> None:
    async def go() -> tuple[dict[str, Any], bytes]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        left, right = Channel(a), Channel(b)
        read_end, write_end = os.pipe()
        os.write(write_end, b"through the descriptor")
        os.close(write_end)
        await left.send({"id": 1, "text": "ü"}, [read_end])
        os.close(read_end)
        message, fds = await right.receive()
        data = os.read(fds[0], 100)
        protocol.close_all(fds)
        left.close()
        right.close()
        return message, data

    message, data = run(go())
    assert message == {"id": 1, "text": "ü"}
    assert data == b"through the descriptor"


def test_a_frame_that_is_not_a_json_object_is_a_protocol_error() -> None:
    async def go() -> list[str]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        right = Channel(b)
        problems = []
        for raw in (b"[1, 2]", b"{not json", b"x" * (protocol.MAX_FRAME + 10)):
            a.send(raw)
            try:
                await right.receive()
            except ProtocolError as exc:
                problems.append(str(exc))
        a.close()
        right.close()
        return problems

    assert len(run(go())) == 3


def test_content_chunks_round_trip_and_a_cancelled_writer_stops() -> None:
    read_end, write_end = os.pipe()
    pieces = [b"a" * 100_000, b"", b"b" * (protocol.MAX_CHUNK + 5)]
    writer = threading.Thread(
        target=protocol.feed_content, args=(write_end, lambda: iter(pieces), threading.Event())
    )
    writer.start()
    received = b"".join(protocol.Content(read_end)())
    writer.join()
    assert received == b"".join(pieces)

    read_end, write_end = os.pipe()
    cancel = threading.Event()
    cancel.set()
    assert protocol.feed_content(write_end, lambda: iter([b"x" * 1_000_000]), cancel) is False
    with pytest.raises(protocol.TruncatedContentError):
        b"".join(protocol.Content(read_end)())


def test_replies_are_checked_on_the_way_in() -> None:
    assert protocol.reply_from({"code": 250, "status": "2.0.0", "lines": ["ok"]}) is not None
    for bad in ({"code": 999, "status": None, "lines": []}, {"code": 250}, "250 ok"):
        with pytest.raises(ProtocolError):
            protocol.reply_from(bad)


def test_the_helper_never_follows_a_maildrop_that_is_a_link(tmp_path: Path) -> None:
    """The daemon's account owns the queue directory; pointing "maildrop" at someone's
    files must not make the helper open them."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "diary").write_text("dear diary")
    (tmp_path / "queue").mkdir()
    (tmp_path / "queue" / "maildrop").symlink_to(secrets)

    async def go() -> Any:
        async with helper(tmp_path) as (client, _):
            return await client.request("maildrop_open", {"name": "diary"}, 10)

    answer = run(go())
    assert not answer.ok and not answer.fds
    assert "maildrop:" in answer.body["error"]
