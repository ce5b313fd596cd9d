"""aliases(5) items print back to themselves (what fuzz/aliases.py found in routing.items)."""

from __future__ import annotations

import pytest

from mailwright.routing.items import Item, ItemKind, parse_items


def reparsed(item: Item) -> list[Item]:
    items, problems = parse_items(str(item))
    assert problems == [], (str(item), problems)
    return items


@pytest.mark.parametrize(
    "item",
    [
        Item(ItemKind.PROG, "/usr/bin/tracker(x)"),  # unquoted, (x) was a comment
        Item(ItemKind.PROG, "/usr/bin/tracker <y>"),
        Item(ItemKind.FILE, "/var/log/a,b"),
        Item(ItemKind.ADDRESS, "/var/mail/archive@example.org"),  # read back as a file
        Item(ItemKind.ADDRESS, "|prog@example.org"),  # read back as a program
        Item(ItemKind.ADDRESS, '":include:x"@example.org'),
        Item(ItemKind.ADDRESS, '"john doe"@example.org'),
        Item(ItemKind.USER, "alice"),
    ],
)
def test_an_item_prints_back_to_itself(item: Item) -> None:
    assert reparsed(item) == [item]


def test_a_quoted_local_part_that_looks_like_a_file_stays_an_address() -> None:
    items, problems = parse_items('"/var/mail/archive"@example.org, "|/usr/bin/prog"@example.org')
    assert problems == []
    assert [i.kind for i in items] == [ItemKind.ADDRESS, ItemKind.ADDRESS]
    assert [reparsed(i) for i in items] == [[i] for i in items]


@pytest.mark.parametrize("text", ['"|/usr/bin/tracker\fbugs"', '"|a\x00b"', "/var/mail/x\x01"])
def test_a_control_character_in_a_program_or_file_is_a_problem(text: str) -> None:
    items, problems = parse_items(text)
    assert items == [] and len(problems) == 1 and "control character" in problems[0]
