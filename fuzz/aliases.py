"""Fuzz target: the alias file parser (``routing/aliases.py``, ``routing/items.py``).

The input is the content of an alias file (aliases(5)), any bytes. It is parsed as
``newaliases`` parses it, then every entry is checked as the compiled table will hold
it. Checks:

- parsing raises nothing: a bad line is a problem (``file:line: text``), never an error;
- each alias name is non-empty, lower case, local (no ``@``), and appears once;
- each entry has at least one item, and its line number lies within the file;
- items survive the compiled table (``dump_items`` then ``load_items``);
- an item printed (``str(item)``, as ``mailwright aliases`` shows it) parses back to
  that same item, with no problem.
"""

from __future__ import annotations

import sys

from _harness import fuzz, instrumented

with instrumented(__name__):
    from mailwright.routing.aliases import parse_aliases
    from mailwright.routing.items import dump_items, load_items, parse_items

SOURCE = "aliases.fuzz"


def check(data: bytes) -> None:
    parsed = parse_aliases(data, SOURCE)
    lines = data.count(b"\n") + 1
    for problem in parsed.problems:
        assert str(problem).startswith(f"{SOURCE}:"), str(problem)
        assert 1 <= problem.line <= lines, str(problem)
    names = [entry.name for entry in parsed.entries]
    assert len(names) == len(set(names)), "duplicate alias names kept"
    for entry in parsed.entries:
        assert entry.name and entry.name == entry.name.lower(), entry.name
        assert "@" not in entry.name and ":" not in entry.name, entry.name
        assert entry.items, f"{entry.name} without items"
        assert 1 <= entry.line <= lines
        assert load_items(dump_items(list(entry.items))) == list(entry.items)
        for item in entry.items:
            again = parse_items(str(item))
            assert again == ([item], []), f"{item!r} prints as {item} which parses as {again}"
    assert parsed.total >= parsed.longest >= 0


if __name__ == "__main__":
    fuzz(check)
    sys.exit(0)
