"""Issue 15: two nodes on one PostgreSQL queue; one goes away, the other delivers its mail.

A real PostgreSQL (tests/support/postgres.py), two real daemons (nodes A and B: their own
ports and queue directories, one database, background delivery, a transport table to a
Postfix smtp-sink that is down at first) and real clients. Mail accepted by node A is
deferred (the next hop is down); node B's ``mailwright queue list`` sees it and ``queue
hold``/``release`` act on it; node A stops, the next hop comes up, ``mailwright queue
flush`` on node B delivers every message: none lost, duplicates counted and reported.

Three nodes, crashes under load and a database restart: test_i15_cluster.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.support import smtp_sink
from tests.support.cluster import Node, listed, number, send
from tests.support.daemon import wait_until
from tests.support.peers import peer
from tests.support.sendmail import short_tmp

MESSAGES = 10


def node(root: Path, name: str, database: str, sink_port: int) -> Node:
    transport = f"* smtp:[127.0.0.1]:{sink_port}\n"
    return Node(root, name, "127.0.0.1", database, transport, {"server": {"workers": 2}})


def all_deferred(mw: Node, ids: set[str]) -> bool:
    messages = {m["queue_id"]: m for m in listed(mw)}
    return set(messages) == ids and all(
        r["attempts"] >= 1 and r["state"] == "queued"
        for m in messages.values()
        for r in m["recipients"]
    )


@peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")
def test_mail_of_a_stopped_node_is_delivered_by_the_other(postgres_database: str) -> None:
    with short_tmp() as root:
        sink = smtp_sink.SmtpSink(root / "sink")  # its port is chosen; it is not started
        a = node(root / "a", "node-a", postgres_database, sink.port)
        b = node(root / "b", "node-b", postgres_database, sink.port)
        a.start()
        try:
            b.start()
            try:
                ids = {send(a.port, n) for n in range(MESSAGES)}
                # both nodes try (the shared queue) and defer: the next hop is down
                wait_until(lambda: all_deferred(b, ids), 60, "every message deferred")
                assert {m["queue_id"] for m in listed(b)} == ids  # B lists A's mail
                held = sorted(ids)[0]
                done = b.cli("queue", "hold", held, "--reason", "check")
                assert done.returncode == 0, done.stderr.decode()
                assert b"held: 1 message(s)" in done.stdout
                states = {m["queue_id"]: m["state"] for m in listed(a)}  # seen from A too
                assert states[held] == "hold" and list(states.values()).count("hold") == 1
                done = b.cli("queue", "release", held)
                assert done.returncode == 0, done.stderr.decode()
                assert a.stop() == 0
                sink.start()
                flushed = b.cli("queue", "flush")
                assert flushed.returncode == 0, flushed.stderr.decode()
                wait_until(lambda: not listed(b), 60, "node B to empty the queue")
                wait_until(lambda: len(sink.messages()) >= MESSAGES, 30, "the sink to have all")
            finally:
                assert b.stop() == 0
            delivered = Counter(number(m.content) for m in sink.messages())
            duplicates = sum(count - 1 for count in delivered.values())
            print(
                f"failover: {MESSAGES} sent, {len(delivered)} delivered, {duplicates} duplicate(s)"
            )
            assert set(delivered) == set(range(MESSAGES)), "lost"
            assert any("stat=Sent" in line for line in b.log)
        finally:
            a.stop()
            sink.stop()
