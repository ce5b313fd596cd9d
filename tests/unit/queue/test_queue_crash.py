"""Crash safety: SIGKILL a process that is queueing and delivering, then check the store.

The child (queue_crash_child.py) reports each message only after the writer said it
was committed, and announces each delivery result before recording it. After each
kill the store must hold every reported message intact, none that was reported
finished, and for a failure cut off mid-commit either the original or its bounce,
never both or neither. Several rounds run on the same store, so recovery (voided
leases) is exercised too.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import mailwright
from mailwright.queue.sqlite import SqliteQueueStore

CHILD = Path(__file__).with_name("queue_crash_child.py")
SRC = Path(mailwright.__file__).resolve().parents[1]
ROUNDS = 4


@dataclass
class Outcome:
    bounce: str | None
    committed: bool = False


@dataclass
class Log:
    """What the child reported, across all rounds."""

    queued: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (sha256, size)
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # id -> its last outcome
    bounced_from: dict[str, str] = field(default_factory=dict)  # bounce id -> original id

    def add(self, words: list[str]) -> None:
        match words:
            case ["Q", queue_id, digest, size]:
                self.queued[queue_id] = (digest, int(size))
            case ["R", queue_id, bounce]:
                self.outcomes[queue_id] = Outcome(None if bounce == "-" else bounce)
                if bounce != "-":
                    self.bounced_from[bounce] = queue_id
            case ["D", queue_id]:
                self.outcomes[queue_id].committed = True
            case _:
                raise AssertionError(f"unexpected line from the child: {words}")


def run_child(store_path: Path, spool_dir: Path, lines_wanted: int, stderr: Path) -> list[str]:
    """Start the child, SIGKILL it after ``lines_wanted`` lines; returns all complete lines."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    command = [sys.executable, str(CHILD), str(store_path), str(spool_dir)]
    lines: list[bytes] = []
    with stderr.open("wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdout is not None
        try:
            while len(lines) < lines_wanted and (line := proc.stdout.readline()):
                lines.append(line)
        finally:
            proc.kill()
            rest = proc.stdout.read()
            proc.wait()
    assert len(lines) == lines_wanted, f"child ended early:\n{stderr.read_text()}"
    lines += rest.splitlines(keepends=True)
    return [line.decode() for line in lines if line.endswith(b"\n")]


def check_store(store: SqliteQueueStore, log: Log) -> None:
    present = {m.queue_id for m in store.list_messages()}
    for queue_id, (digest, size) in log.queued.items():
        if queue_id not in log.outcomes:
            assert queue_id in present, f"acknowledged message {queue_id} was lost"
            body = b"".join(store.read_body(queue_id))
            assert (hashlib.sha256(body).hexdigest(), len(body)) == (digest, size), queue_id
            subject = store.read_headers(queue_id).get("Subject")
            assert subject is not None and subject.text == f"crash test {queue_id}"
    for queue_id, outcome in log.outcomes.items():
        bounce = outcome.bounce
        if outcome.committed:
            assert queue_id not in present, f"{queue_id} was finished but is still queued"
            if bounce is not None and bounce not in log.outcomes:
                assert bounce in present, f"bounce {bounce} of {queue_id} was lost"
                assert b"".join(store.read_body(bounce)) == f"bounce of {queue_id}\r\n".encode()
        elif bounce is not None and bounce not in log.outcomes:
            # cut off while committing: the failure and its bounce are one transaction
            assert (queue_id in present) != (bounce in present), (queue_id, bounce)


def test_acknowledged_work_survives_sigkill(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    store_path, spool_dir = tmp_path / "queue.db", tmp_path / "spool"
    spool_dir.mkdir()
    log = Log()
    for round_ in range(ROUNDS):
        wanted = rng.randint(5, 200)
        for line in run_child(store_path, spool_dir, wanted, tmp_path / f"stderr{round_}"):
            log.add(line.split())
        store = SqliteQueueStore(store_path)
        store.open()  # integrity check and recovery after the kill
        try:
            check_store(store, log)
        except AssertionError as exc:
            raise AssertionError(f"round {round_}, seed {seed}: {exc}") from exc
        finally:
            store.close()
    assert log.queued, "the child queued nothing"
    assert os.listdir(spool_dir) == [], "a killed process left spool files behind"
