"""Limits across worker processes over real sockets (issue 14): the test plays the
supervisor. It makes the shared memory (``SharedState.create``), forks two workers, each
a whole daemon counting in it (``Runtime.share``), on a port of its own so that the test
chooses which worker a client reaches; it kills a worker and resets its counts as the
supervisor does."""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mailwright.config.loader import load_settings
from mailwright.daemon.app import run_daemon
from mailwright.daemon.notify import Notifier
from mailwright.daemon.runtime import Runtime
from mailwright.policy.sharedlimits import SharedState
from tests.support.daemon import Mailwright, deep_merge, wait_until
from tests.support.security import Client, plain, secure_config, trusting

UNTRUSTED = {"relay": {"networks": []}, "routing": {"local_domains": ["mx.test"]}}
PER_ADDRESS = "421 4.7.0 mx.test Too many connections from your address"
IN_TOTAL = "421 4.7.0 mx.test Too many connections, try again later"


class Worker:
    """One forked daemon counting in ``state`` as worker ``index``."""

    def __init__(self, root: Path, config: dict[str, Any], state: SharedState, index: int):
        self.mw = Mailwright(root, config)
        kind = config.get("kind", "smtp")
        self.mw.config.pop("kind", None)
        self.mw.config["listeners"] = [{"address": "127.0.0.1", "port": self.mw.port, "kind": kind}]
        self.mw.write_config()
        self.port = self.mw.port
        self.state, self.index = state, index
        self.pid = 0

    def start(self) -> None:
        settings = load_settings(self.mw.config_path)
        settings.queue.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 70
            try:
                os.close(read_end)
                runtime = Runtime(
                    config_path=self.mw.config_path,
                    notifier=Notifier(parent_fd=write_end),
                    share=self.state.worker(self.index),
                )
                code = run_daemon(settings, runtime)
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(code)
        os.close(write_end)
        self.pid = pid
        with os.fdopen(read_end, "rb") as pipe:
            assert pipe.read() == b"ready\n", "the worker did not start"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.pid:
            os.kill(self.pid, sig)
            os.waitpid(self.pid, 0)
            self.pid = 0


@contextmanager
def workers(
    tmp_path: Path, server: dict[str, Any], config: dict[str, Any] | None = None
) -> Iterator[tuple[SharedState, list[Worker]]]:
    state = SharedState.create(2)
    config = deep_merge({**UNTRUSTED, "server": {"reverse_dns": False, **server}}, config or {})
    started = [Worker(tmp_path / f"w{i}", config, state, i) for i in range(2)]
    try:
        for worker in started:
            worker.start()
        yield state, started
    finally:
        for worker in started:
            worker.stop()


def test_connections_of_one_address_count_in_every_worker(tmp_path: Path) -> None:
    with workers(tmp_path, {"max_connections_per_ip": 2}) as (_, (one, two)):
        held = [Client(one.port, "127.0.0.5"), Client(two.port, "127.0.0.5")]
        assert all(c.greeting.startswith("220") for c in held)
        third = Client(one.port, "127.0.0.5")
        assert third.greeting == PER_ADDRESS and third.closed()
        other = Client(two.port, "127.0.0.6")  # another address is not hit
        assert other.greeting.startswith("220")
        held[1].cmd("QUIT")  # one leaves, in the other worker: room again here

        def admitted() -> bool:
            c = Client(one.port, "127.0.0.5")
            held.append(c)
            return c.greeting.startswith("220")

        wait_until(admitted, what="a free slot for the address")
        for c in [*held, other]:
            c.close()


def test_total_connections_count_in_every_worker(tmp_path: Path) -> None:
    with workers(tmp_path, {"max_connections": 3}) as (_, (one, two)):
        held = [Client(one.port, "127.0.0.11"), Client(one.port, "127.0.0.12")]
        held.append(Client(two.port, "127.0.0.13"))
        assert all(c.greeting.startswith("220") for c in held)
        fourth = Client(two.port, "127.0.0.14")
        assert fourth.greeting == IN_TOTAL and fourth.closed()
        for c in held:
            c.close()


def test_a_dead_workers_connections_are_forgotten_once_reset(tmp_path: Path) -> None:
    with workers(tmp_path, {"max_connections_per_ip": 1}) as (state, (one, two)):
        held = Client(two.port, "127.0.0.5")
        assert held.greeting.startswith("220")
        refused = Client(one.port, "127.0.0.5")
        assert refused.greeting == PER_ADDRESS
        two.stop(signal.SIGKILL)  # it dies with the connection counted
        again = Client(one.port, "127.0.0.5")
        assert again.greeting == PER_ADDRESS  # still counted: nobody reset it yet
        state.reset_worker(1)  # the supervisor, before starting a replacement
        admitted = Client(one.port, "127.0.0.5")
        assert admitted.greeting.startswith("220")
        for c in (held, refused, again, admitted):
            c.close()


def test_connection_rate_counts_in_every_worker(tmp_path: Path) -> None:
    with workers(tmp_path, {"max_connection_rate_per_ip": 3}) as (_, (one, two)):
        clients = [Client(one.port, "127.0.0.5"), Client(two.port, "127.0.0.5")]
        clients.append(Client(one.port, "127.0.0.5"))
        assert all(c.greeting.startswith("220") for c in clients)
        fourth = Client(two.port, "127.0.0.5")
        assert fourth.greeting == "421 mx.test Too many connections per minute from your address"
        assert Client(two.port, "127.0.0.6").greeting.startswith("220")
        for c in clients:
            c.close()


def auth(worker: Worker, source: str, user: str, password: str) -> str:
    """One AUTH PLAIN, on a connection of its own, under STARTTLS."""
    c = Client(worker.port, source)
    c.ehlo()
    assert c.starttls(trusting(Path(worker.mw.config["tls"]["certificate"]))).startswith("220")
    c.ehlo()
    reply = c.cmd(f"AUTH PLAIN {plain(user, password)}")
    c.close()
    return reply


def test_auth_failures_count_in_every_worker(tmp_path: Path) -> None:
    config = secure_config(tmp_path, kind="submission")
    config["auth"].update({"max_failures_per_ip": 10, "max_failures_per_user": 3})
    with workers(tmp_path, {}, config) as (_, (one, two)):
        guesses = [auth(w, "127.0.0.2", "alice", "wrong guess") for w in (one, two, one)]
        assert all(r.startswith("535 5.7.8") for r in guesses)
        refused = "454 4.7.0 Too many failed authentication attempts, try again later"
        assert auth(two, "127.0.0.2", "alice", "correct horse") == refused
        assert auth(one, "127.0.0.2", "alice", "correct horse") == refused
        assert auth(two, "127.0.0.2", "bob", "battery staple").startswith("235")
        assert auth(one, "127.0.0.1", "alice", "correct horse").startswith("235")
