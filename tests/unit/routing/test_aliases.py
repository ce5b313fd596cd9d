"""aliases(5): every syntax rule and its error message, compiling atomically, reloading."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mailwright.routing.aliases import AliasTable, compile_aliases, parse_aliases
from mailwright.routing.items import Item, ItemKind, parse_items

A, U, P, F, INC = (
    ItemKind.ADDRESS,
    ItemKind.USER,
    ItemKind.PROG,
    ItemKind.FILE,
    ItemKind.INCLUDE,
)


def parse(text: str) -> tuple[dict[str, list[Item]], list[str]]:
    parsed = parse_aliases(text.encode(), "aliases")
    return {e.name: list(e.items) for e in parsed.entries}, [str(p) for p in parsed.problems]


# ---- items ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ("alice", [Item(A, "alice")]),
        ("alice, bob@example.org", [Item(A, "alice"), Item(A, "bob@example.org")]),
        ("\\alice", [Item(U, "alice")]),
        ('"|/usr/bin/prog -x, y"', [Item(P, "/usr/bin/prog -x, y")]),
        ("|/usr/bin/vacation", [Item(P, "/usr/bin/vacation")]),
        ("/var/log/list.mbox", [Item(F, "/var/log/list.mbox")]),
        ('"/var/log/with space"', [Item(F, "/var/log/with space")]),
        (":include:/etc/mail/list", [Item(INC, "/etc/mail/list")]),
        (":INCLUDE: /etc/mail/list", [Item(INC, "/etc/mail/list")]),
        ("Alice Example <alice@example.org>", [Item(A, "alice@example.org")]),
        ("alice (the boss), ,bob", [Item(A, "alice"), Item(A, "bob")]),
        ('"john doe"@example.org', [Item(A, '"john doe"@example.org')]),
        ('"|/bin/echo \\"quoted\\""', [Item(P, '/bin/echo "quoted"')]),
        ("a\n  b", [Item(A, "a"), Item(A, "b")]),
    ],
)
def test_items(text: str, items: list[Item]) -> None:
    assert parse_items(text) == (items, [])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("|/usr/bin/prog -x", 'a program with arguments must be quoted: "|/usr/bin/prog -x"'),
        ("/var/log/a b", "a file name with spaces must be quoted"),
        (":include:etc/list", ":include: needs an absolute path"),
        ('"|/bin/prog', "unbalanced quote"),
        ("alice (comment", "unbalanced parenthesis"),
        ("bad@@example.org", "bad address"),
        ("\\bad@host", "bad local user name"),
        ("<alice", "bad address (unbalanced <>)"),
        ("|", "empty program"),
    ],
)
def test_bad_items(text: str, problem: str) -> None:
    items, problems = parse_items(text)
    assert items == [] and len(problems) == 1 and problem in problems[0]


def test_item_text_round_trip() -> None:
    for item in [Item(P, "/bin/prog -x, y"), Item(F, "/a b"), Item(INC, "/x"), Item(U, "me")]:
        assert parse_items(str(item)) == ([item], [])


# ---- the file ------------------------------------------------------------------------------


def test_entries_names_and_continuations() -> None:
    entries, problems = parse(
        "# a comment\n\nStaff: alice,\n  bob,\n\tcarol\nlist: dave, \\\nerin\nPostMaster: root\n"
    )
    assert problems == []
    assert entries == {
        "staff": [Item(A, "alice"), Item(A, "bob"), Item(A, "carol")],
        "list": [Item(A, "dave"), Item(A, "erin")],
        "postmaster": [Item(A, "root")],
    }


def test_comment_only_at_line_start() -> None:
    entries, problems = parse("a: b # not a comment\n")
    assert entries == {}
    assert problems == ["aliases:1: b # not a comment... bad address (white space)"]


def test_bad_lines_are_reported_and_the_rest_kept() -> None:
    entries, problems = parse(
        "ok1: alice\n"
        "no colon here\n"
        "  its continuation is part of the bad entry\n"
        "# after a comment\n"
        " stray: leading space\n"
        "empty:\n"
        "blank:   \n"
        "user@example.org: alice\n"
        "bad name: alice\n"
        "ok2: bob, |/bin/prog -x, carol\n"
        "dup: alice\n"
        "DUP: bob\n"
        "ok3: carol\n"
    )
    assert problems == [
        "aliases:2: missing colon",
        "aliases:5: Non-continuation line starts with space",
        "aliases:6: empty... missing value for alias",
        "aliases:7: blank... missing value for alias",
        "aliases:8: user@example.org... cannot alias non-local names",
        "aliases:9: bad name... illegal alias name",
        'aliases:10: |/bin/prog -x... a program with arguments must be quoted: "|/bin/prog -x"',
        "aliases:12: Warning: duplicate alias name dup",
    ]
    assert entries["ok2"] == [Item(A, "bob"), Item(A, "carol")]
    assert entries["dup"] == [Item(A, "alice")]  # the first one is kept
    assert set(entries) == {"ok1", "ok2", "dup", "ok3"}


def test_invalid_utf8_line() -> None:
    parsed = parse_aliases(b"a: b\nc: \xff\nd: e\n", "aliases")
    assert [str(p) for p in parsed.problems] == ["aliases:2: not valid UTF-8"]
    assert [e.name for e in parsed.entries] == ["a", "d"]


def test_crlf_file() -> None:
    entries, problems = parse("a: b,\r\n  c\r\n")
    assert problems == [] and entries == {"a": [Item(A, "b"), Item(A, "c")]}


def test_statistics_like_sendmail() -> None:
    parsed = parse_aliases(b"ab: cd, ef\nx: y\n", "aliases")
    assert parsed.longest == len("cd, ef")
    assert parsed.total == len("ab") + len("cd, ef") + len("x") + len("y")


# ---- compiling and reading -----------------------------------------------------------------


def test_compile_and_lookup(tmp_path: Path) -> None:
    source = tmp_path / "aliases"
    source.write_text("Staff: alice, bob\nbroken\n")
    report = compile_aliases(source, tmp_path / "aliases.db")
    assert report.summary() == f"{source}: 1 aliases, longest 10 bytes, 15 bytes total"
    assert [str(p) for p in report.problems] == [f"{source}:2: missing colon"]
    table = AliasTable(tmp_path / "aliases.db")
    assert table.lookup("STAFF") == (Item(A, "alice"), Item(A, "bob"))
    assert table.lookup("nobody") is None
    assert table.source_uid == os.getuid()
    assert not list(tmp_path.glob(".*tmp"))


def test_missing_table_means_no_aliases(tmp_path: Path) -> None:
    assert AliasTable(tmp_path / "none.db").lookup("x") is None


def test_rebuilt_table_is_picked_up_without_restart(tmp_path: Path) -> None:
    source, db = tmp_path / "aliases", tmp_path / "aliases.db"
    source.write_text("a: one\n")
    compile_aliases(source, db)
    now = [0.0]
    table = AliasTable(db, check_interval=1.0, clock=lambda: now[0])
    assert table.lookup("a") == (Item(A, "one"),)
    source.write_text("a: two\nb: three\n")
    compile_aliases(source, db)
    assert table.lookup("a") == (Item(A, "one"),)  # not looked at again within a second
    now[0] = 1.5
    assert table.lookup("a") == (Item(A, "two"),)
    assert table.lookup("b") == (Item(A, "three"),)
    assert table.reloads == 2


def test_readers_never_see_a_half_built_table(tmp_path: Path) -> None:
    """Rebuild in a loop (in another process) while this one reads: every lookup sees
    a whole table, old or new."""
    source, db = tmp_path / "aliases", tmp_path / "aliases.db"
    generations = 6
    for g in range(generations):
        (tmp_path / f"gen{g}").write_text("".join(f"n{i}: gen{g}-{i}\n" for i in range(2000)))
    source.write_bytes((tmp_path / "gen0").read_bytes())
    compile_aliases(source, db)
    script = (
        "import sys, shutil; from pathlib import Path; "
        "from mailwright.routing.aliases import compile_aliases\n"
        f"for g in range({generations}):\n"
        f"    shutil.copy('{tmp_path}/gen%d' % g, '{source}')\n"
        f"    compile_aliases(Path('{source}'), Path('{db}'))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[3] / "src"))
    builder = subprocess.Popen([sys.executable, "-c", script], env=env)
    table = AliasTable(db, check_interval=0.0)
    seen: set[str] = set()
    errors: list[str] = []
    try:
        while builder.poll() is None:
            first = table.lookup("n0")
            last = table.lookup("n1999")
            if first is None or last is None:
                errors.append("missing entry")
                continue
            seen.add(first[0].value.split("-")[0])
            assert first[0].value.startswith("gen") and last[0].value.startswith("gen")
    finally:
        builder.wait(30)
    assert builder.returncode == 0 and errors == []
    assert table.lookup("n0") == (Item(A, f"gen{generations - 1}-0"),)


def test_hundred_thousand_aliases_build_and_load(tmp_path: Path) -> None:
    # correctness at size only: the speed is measured by bench/local_delivery.py, not here
    source, db = tmp_path / "aliases", tmp_path / "aliases.db"
    with source.open("w") as f:
        for i in range(100_000):
            f.write(f"user{i}: person{i}@example.org, local{i}\n")
    report = compile_aliases(source, db)
    assert report.count == 100_000 and report.problems == []
    table = AliasTable(db)
    assert table.lookup("user99999") == (
        Item(A, "person99999@example.org"),
        Item(A, "local99999"),
    )
    assert table.lookup("user100000") is None


def test_lookups_from_many_threads(tmp_path: Path) -> None:
    source, db = tmp_path / "aliases", tmp_path / "aliases.db"
    source.write_text("".join(f"a{i}: b{i}\n" for i in range(100)))
    compile_aliases(source, db)
    table = AliasTable(db)
    failures: list[int] = []

    def work(n: int) -> None:
        for i in range(200):
            if table.lookup(f"a{(i + n) % 100}") != (Item(A, f"b{(i + n) % 100}"),):
                failures.append(i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
