"""sd_notify over a datagram socket the test binds (a path, and an abstract name)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from mailwright.daemon.notify import ENV, Notifier, socket_address


def listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    assert data.endswith("\n")
    return dict(line.split("=", 1) for line in data.splitlines())


def test_ready_reloading_stopping_to_a_socket_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify.sock")
    sock = listener(path)
    monkeypatch.setenv(ENV, path)
    notifier = Notifier.from_environment()
    assert ENV not in os.environ  # programs run by deliveries cannot speak for us
    notifier.ready("accepting mail on 127.0.0.1:25")
    ready = fields(sock)
    assert ready["READY"] == "1"
    assert ready["STATUS"] == "accepting mail on 127.0.0.1:25"
    assert ready["MAINPID"] == str(os.getpid())
    notifier.reloading()
    reloading = fields(sock)
    assert reloading["RELOADING"] == "1"
    import time

    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert 0 < now_usec - int(reloading["MONOTONIC_USEC"]) < 5_000_000  # CLOCK_MONOTONIC
    notifier.stopping("stopping: finishing\nsessions")
    stopping = fields(sock)
    assert stopping == {"STOPPING": "1", "STATUS": "stopping: finishing sessions"}
    notifier.close()
    sock.close()


def test_abstract_socket_names() -> None:
    name = f"mailwright-test-{os.getpid()}"
    sock = listener("\0" + name)
    notifier = Notifier(socket_address("@" + name))
    notifier.status("hello")
    assert fields(sock) == {"STATUS": "hello"}
    notifier.close()
    sock.close()


def test_nothing_to_notify(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    notifier = Notifier.from_environment()
    assert not notifier.active
    assert notifier.send("READY=1") is False
    assert socket_address("vsock:2:1234") is None


def test_a_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert notifier.send("READY=1") is False
    notifier.ready("still fine")


def test_the_waiting_parent_hears_ready_once() -> None:
    read_end, write_end = os.pipe()
    notifier = Notifier(None, write_end)
    notifier.ready("up")
    notifier.ready("again")
    assert os.read(read_end, 100) == b"ready\n"
    assert os.read(read_end, 100) == b""  # closed after the first
    os.close(read_end)
