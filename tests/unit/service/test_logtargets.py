"""Log targets: text and JSON lines on stderr, syslog datagrams to a socket the test binds,
and the queue id on every line logged while a message is handled."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.config.schema import LogSection
from mailwright.observability import logtargets, maillog


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def capture(section: LogSection, monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logtargets.configure(section)
    return stream


def test_json_lines_carry_the_mail_log_fields(
    monkeypatch: pytest.MonkeyPatch, restore_root: None
) -> None:
    stream = capture(LogSection(format="json"), monkeypatch)  # type: ignore[arg-type]
    maillog.accepted(
        "01JD3K7Q2M4XK9A",
        sender="a@x.test",
        size=123,
        nrcpts=2,
        msgid="<m@x>",
        proto="ESMTP",
        daemon="smtp-25",
        relay="[192.0.2.1]",
    )
    logging.getLogger("mailwright.queue").error("01JD3K7Q2M4XK9A: agent failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["queue_id"] == "01JD3K7Q2M4XK9A"
    assert first["from"] == "<a@x.test>"
    assert first["size"] == 123 and first["nrcpts"] == 2
    assert first["message"].startswith("01JD3K7Q2M4XK9A: from=<a@x.test>, size=123")
    assert first["level"] == "info" and first["logger"] == "mailwright.mail"
    assert first["time"].endswith("Z")
    assert "msgid" in first and "bodytype" not in first  # None fields are left out
    assert second["queue_id"] == "01JD3K7Q2M4XK9A" and second["level"] == "error"


def test_text_lines_and_the_level(monkeypatch: pytest.MonkeyPatch, restore_root: None) -> None:
    stream = capture(LogSection(level="warning"), monkeypatch)  # type: ignore[arg-type]
    logging.getLogger("mailwright.daemon").info("not shown")
    logging.getLogger("mailwright.daemon").warning("shown")
    (line,) = stream.getvalue().splitlines()
    assert line.endswith("]: shown") and "mailwright[" in line


def test_lines_logged_while_a_message_is_handled_carry_its_id(
    monkeypatch: pytest.MonkeyPatch, restore_root: None
) -> None:
    stream = capture(LogSection(), monkeypatch)
    token = maillog.current_queue_id.set("01JD3K7Q2M4XK9B")
    try:
        logging.getLogger("mailwright.routing").warning("/home/u/.forward: ignored: %s", "mode")
        logging.getLogger("mailwright.queue").info("01JD3K7Q2M4XK9B: already there")
    finally:
        maillog.current_queue_id.reset(token)
    logging.getLogger("mailwright.routing").warning("no message now")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("]: 01JD3K7Q2M4XK9B: /home/u/.forward: ignored: mode")
    assert lines[1].endswith("]: 01JD3K7Q2M4XK9B: already there")  # not twice
    assert lines[2].endswith("]: no message now")


def test_syslog_datagrams_with_facility_mail_and_ident(tmp_path: Path, restore_root: None) -> None:
    path = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    logtargets.configure(LogSection(target="syslog", syslog_socket=path, syslog_ident="sm-mta"))  # type: ignore[arg-type]
    maillog.emit("01JD3K7Q2M4XK9C", to="<b@x.test>", stat="Sent")
    logging.getLogger("mailwright.daemon").error("trouble")
    info = sock.recv(4096).decode()
    error = sock.recv(4096).decode()
    # <PRI> = facility mail (2) * 8 + severity (info 6, error 3)
    assert info.startswith("<22>sm-mta[")
    assert info.endswith("]: 01JD3K7Q2M4XK9C: to=<b@x.test>, stat=Sent")
    assert "\0" not in info
    assert error.startswith("<19>sm-mta[") and error.endswith("]: trouble")
    sock.close()


def test_syslog_json_and_a_missing_socket(tmp_path: Path, restore_root: None) -> None:
    path = tmp_path / "later.sock"
    logtargets.configure(LogSection(target="syslog", format="json", syslog_socket=path))  # type: ignore[arg-type]
    logging.getLogger("mailwright.daemon").warning("lost: nobody listens yet")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    maillog.emit("01JD3K7Q2M4XK9D", to="<c@x.test>", stat="Deferred")
    data = sock.recv(4096).decode()
    prefix, _, body = data.partition("]: ")
    assert prefix.startswith("<22>mailwright[")
    record = json.loads(body)
    assert record["queue_id"] == "01JD3K7Q2M4XK9D" and record["stat"] == "Deferred"
    sock.close()


def test_detached_means_syslog(tmp_path: Path) -> None:
    handler = logtargets.build_handler(LogSection(syslog_socket=tmp_path / "x"), detached=True)
    assert isinstance(handler, logtargets.SyslogHandler)
    handler.close()


def test_the_log_section_checks_its_values() -> None:
    from pydantic import ValidationError

    assert LogSection(level="DEBUG").level == "debug"  # type: ignore[arg-type]
    for bad in ({"syslog_facility": "nope"}, {"syslog_ident": "two words"}, {"target": "file"}):
        with pytest.raises(ValidationError):
            LogSection.model_validate(bad)
