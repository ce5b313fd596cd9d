"""The admin CLI's tables: queue ids stay whole on a narrow terminal."""

from __future__ import annotations

import io

from rich.console import Console

from mailwright.cli.output import table
from mailwright.core.queueid import new_queue_id

COLUMNS = ["Queue ID", "Size", "Arrived", "Sender", "Waiting for", "Status"]


def render(rows: list[tuple[object, ...]], width: int = 80) -> str:
    out = io.StringIO()
    console = Console(width=width, file=out, color_system=None)
    table("/var/spool/mailwright/queue: 3 messages", COLUMNS, rows, console=console)
    return out.getvalue()


def test_queue_ids_are_never_cut_on_an_80_column_terminal() -> None:
    ids = [new_queue_id() for _ in range(3)]
    rows = [
        (
            qid,
            123456,
            "2024-05-01 12:00",
            "<a.rather.long.sender.address@example.org>",
            "first.recipient@example.net, second.recipient@example.com",
            "Deferred: 451 4.4.1 Connection refused by mx.example.net [192.0.2.1]",
        )
        for qid in ids
    ]
    text = render(rows)
    assert all(len(line) <= 80 for line in text.splitlines())
    for qid in ids:
        assert any(qid in line for line in text.splitlines()), text
    assert "…" in text  # the other columns gave up the room


def test_a_wide_terminal_shows_everything() -> None:
    qid = new_queue_id()
    text = render([(qid, 1, "2024-05-01 12:00", "<a@x.test>", "b@y.test", "queued")], 200)
    assert qid in text and "<a@x.test>" in text and "…" not in text
