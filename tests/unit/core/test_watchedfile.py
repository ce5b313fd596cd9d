"""The one watch-and-reload mechanism: change detected, bad file keeps the old table,
the check interval, a removed file, strict tables, discarded values."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from mailwright.core.tablefile import TableError
from mailwright.core.watchedfile import WatchedFile


def parse_pairs(path: Path) -> tuple[dict[str, str], list[TableError]]:
    """``key value`` lines; a line without a value is a problem."""
    try:
        text = path.read_text()
    except OSError as exc:
        return {}, [TableError(str(path), 0, f"cannot read: {exc.strerror}")]
    table, errors = {}, []
    for number, line in enumerate(text.splitlines(), start=1):
        key, _, value = line.partition(" ")
        if value:
            table[key] = value
        else:
            errors.append(TableError(str(path), number, f"{key!r} has no value"))
    return table, errors


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str) -> None:
    """Replace the file as an editor does (a new inode), so the change is always seen."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def watched(path: Path, clock: Clock, **kwargs: bool) -> WatchedFile[dict[str, str]]:
    return WatchedFile(path, parse_pairs, {}, interval=1.0, clock=clock, **kwargs)


def test_a_change_is_seen_after_the_interval(tmp_path: Path) -> None:
    path, clock = tmp_path / "t", Clock()
    write(path, "a 1\n")
    table = watched(path, clock)
    assert table.current() == {"a": "1"}
    write(path, "a 2\n")
    assert table.current() == {"a": "1"}  # within the interval: no look at the file
    clock.now += 1.0
    assert table.current() == {"a": "2"}
    assert table.reloads == 2


def test_an_unchanged_file_is_not_parsed_again(tmp_path: Path) -> None:
    path, clock = tmp_path / "t", Clock()
    write(path, "a 1\n")
    parses = []

    def counting(p: Path) -> tuple[dict[str, str], list[TableError]]:
        parses.append(p)
        return parse_pairs(p)

    table = WatchedFile(path, counting, {}, interval=1.0, clock=clock)
    for _ in range(5):
        clock.now += 2.0
        assert table.current() == {"a": "1"}
    assert len(parses) == 1


def test_a_same_size_edit_in_place_is_seen(tmp_path: Path) -> None:
    path, clock = tmp_path / "t", Clock()
    path.write_text("a 1\n")
    table = watched(path, clock)
    path.write_text("a 2\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a coarse clock
    clock.now += 1.0
    assert table.current() == {"a": "2"}


def test_bad_lines_install_the_good_ones(tmp_path: Path) -> None:
    path, clock = tmp_path / "t", Clock()
    write(path, "a 1\n")
    table = watched(path, clock)
    write(path, "a 2\nbroken\n")
    clock.now += 1.0
    assert table.current() == {"a": "2"}
    assert [(e.line, e.problem) for e in table.errors] == [(2, "'broken' has no value")]


def test_a_strict_table_with_a_bad_line_keeps_the_old_one_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, clock = tmp_path / "t", Clock()
    write(path, "a 1\n")
    table = watched(path, clock, strict=True)
    write(path, "a 2\nbroken\n")
    with caplog.at_level(logging.ERROR, "mailwright.tables"):
        for _ in range(3):
            clock.now += 1.0
            assert table.current() == {"a": "1"}
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}:2: 'broken' has no value",
        f"{path}: keeping the table in use",
    ]
    write(path, "a 3\n")  # fixed: installed
    clock.now += 1.0
    assert table.current() == {"a": "3"} and table.errors == []


def test_a_strict_table_with_bad_lines_at_first_uses_the_good_ones(tmp_path: Path) -> None:
    path = tmp_path / "t"
    write(path, "a 1\nbroken\n")
    table = watched(path, Clock(), strict=True)
    assert table.current() == {"a": "1"} and [e.line for e in table.errors] == [2]


def test_a_removed_file_keeps_the_old_table_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, clock = tmp_path / "t", Clock()
    write(path, "a 1\n")
    table = watched(path, clock)
    path.unlink()
    with caplog.at_level(logging.ERROR, "mailwright.tables"):
        for _ in range(3):
            clock.now += 1.0
            assert table.current() == {"a": "1"}
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: cannot read: No such file or directory",
        f"{path}: keeping the table in use",
    ]
    write(path, "b 2\n")  # back: installed
    clock.now += 1.0
    assert table.current() == {"b": "2"}


def test_a_file_missing_at_start_is_empty_until_it_appears(tmp_path: Path) -> None:
    path, clock = tmp_path / "t", Clock()
    table = watched(path, clock)
    assert table.current() == {} and [e.line for e in table.errors] == [0]
    write(path, "a 1\nbroken\n")
    clock.now += 1.0
    assert table.current() == {"a": "1"}


def test_reload_reads_now_and_returns_the_problems(tmp_path: Path) -> None:
    path, clock = tmp_path / "t", Clock()
    write(path, "a 1\n")
    table = watched(path, clock)
    write(path, "a 2\nb\n")
    assert [e.line for e in table.reload()] == [2]  # no interval wait
    assert table.current() == {"a": "2"}


def test_a_replaced_value_is_discarded(tmp_path: Path) -> None:
    path, clock = tmp_path / "t", Clock()
    write(path, "a 1\n")
    gone: list[dict[str, str]] = []
    table = WatchedFile(path, parse_pairs, {}, interval=1.0, clock=clock, discard=gone.append)
    write(path, "a 2\n")
    clock.now += 1.0
    table.current()
    assert gone == [{"a": "1"}]
