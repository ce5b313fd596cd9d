"""The one reader of table file lines, as both the key-value tables and the AUTH users
file use it."""

from __future__ import annotations

from mailwright.core.tablefile import TableError, entry_lines
from mailwright.policy.auth import parse_users
from mailwright.routing.table import split_table

HASH = "$2b$12$" + "a" * 53


def test_entry_lines_skip_blanks_and_comments_and_report_bad_utf8() -> None:
    data = b"# comment\n\n  key value # kept  \r\n\t#indented comment\n\xff\xfe\nlast\n"
    errors: list[TableError] = []
    assert list(entry_lines(data, "t", errors)) == [(3, "key value # kept"), (6, "last")]
    assert [str(e) for e in errors] == ["t:5: not valid UTF-8"]


def test_both_readers_see_the_same_lines() -> None:
    data = b"# users\n\xff\n\n"
    _, table_errors = split_table(data + b"alice value\n", "f")
    users, user_errors = parse_users(data + f"alice:{HASH}\n".encode(), "f")
    assert table_errors == user_errors == [TableError("f", 2, "not valid UTF-8")]
    assert list(users) == ["alice"]
