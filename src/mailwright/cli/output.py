"""How the admin CLI prints: rich tables and progress bars on a terminal, plain text
or JSON when piped. One place decides, so every command behaves the same."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click

T = TypeVar("T")


def is_terminal() -> bool:
    return sys.stdout.isatty()


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    keys: Sequence[int] = (0,),
    console: Any = None,
) -> None:
    """A rich table on a terminal; tab-separated lines otherwise.

    The ``keys`` columns (the queue id, by default the first) are never wrapped or
    cut, whatever the terminal's width: people copy them into the next command. The
    other columns are shortened (with an ellipsis) to make room.
    """
    if console is not None or is_terminal():
        from rich.console import Console

        (console or Console()).print(rich_table(title, columns, rows, keys))
        return
    click.echo("\t".join(columns))
    for row in rows:
        click.echo("\t".join(str(c) for c in row))


def rich_table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    keys: Sequence[int] = (0,),
) -> Any:
    from rich.table import Table

    cells = [[str(c) for c in row] for row in rows]
    t = Table(title=title)
    for i, col in enumerate(columns):
        if i in keys:
            width = max((len(row[i]) for row in cells), default=0)
            t.add_column(col, no_wrap=True, min_width=max(width, len(col)), overflow="fold")
        else:
            t.add_column(col, overflow="ellipsis")
    for row in cells:
        t.add_row(*row)
    return t


@contextmanager
def progress(items: Sequence[T], label: str) -> Iterator[Iterable[T]]:
    """Iterate ``items`` with a progress bar on a terminal (when there are many)."""
    if not sys.stderr.isatty() or len(items) < 50:
        yield items
        return
    from rich.progress import track

    yield track(items, description=label, console=_stderr_console())


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def fail(message: str, code: int) -> None:
    click.echo(f"mailwright: {message}", err=True)
    sys.exit(code)
