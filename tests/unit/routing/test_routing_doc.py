"""docs/routing.md is true: every example block in it is run against the code.

Each ``transport`` block parses without a problem, one entry per line; each
``credentials`` block too, and it gives the login for its section's smarthost. Each
``console`` block's ``mailwright address test`` commands run (click, in process) with
the configuration of their section: the ``toml`` blocks merged, ``routing.transport_table``
pointing at the section's ``transport`` block (the table at the top of the document for a
section without one); what they print is what the document shows.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailwright.cli.main import cli
from mailwright.config.loader import load_settings
from mailwright.routing.credentials import parse_credentials
from mailwright.routing.router import Router
from mailwright.routing.transport import parse_transport_table
from tests.support.daemon import deep_merge, render_toml

DOC = Path(__file__).resolve().parents[3] / "docs" / "routing.md"
HEADING = re.compile(r"^#{1,3} (.+)$")


@dataclass
class Section:
    title: str
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (language, text)

    def of(self, language: str) -> list[str]:
        return [text for lang, text in self.blocks if lang == language]


def sections() -> list[Section]:
    """The document cut at its headings (``#`` lines inside a code block are not headings)."""
    out: list[Section] = []
    fence: tuple[str, list[str]] | None = None
    for line in DOC.read_text().splitlines():
        if fence is not None:
            if line == "```":
                out[-1].blocks.append((fence[0], "\n".join(fence[1]) + "\n"))
                fence = None
            else:
                fence[1].append(line)
        elif line.startswith("```"):
            fence = (line[3:], [])
        elif heading := HEADING.match(line):
            out.append(Section(heading.group(1)))
    assert fence is None, "an unclosed code block"
    return out


def entry_lines(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def reference_table() -> str:
    return next(t for s in sections() for t in s.of("transport"))


def commands(block: str) -> list[tuple[list[str], list[str]]]:
    """``$ mailwright ...`` lines of a console block, each with the lines it prints."""
    out: list[tuple[list[str], list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((shlex.split(line[2:]), []))
        else:
            out[-1][1].append(line)
    return out


def section_config(section: Section, tmp_path: Path) -> Path:
    """The section's configuration, with its table files written under tmp_path."""
    config: dict[str, Any] = {
        "hostname": "mx.example.com",
        "queue": {"directory": str(tmp_path / "q")},
        "routing": {"alias_file": ""},
    }
    for block in section.of("toml"):
        config = deep_merge(config, tomllib.loads(block))
    table = tmp_path / "transport"
    table.write_text((section.of("transport") or [reference_table()])[0])
    config["routing"]["transport_table"] = str(table)
    if "auth_table" in config.get("delivery", {}):
        (tmp_path / "passwords").write_text(section.of("credentials")[0])
        config["delivery"]["auth_table"] = str(tmp_path / "passwords")
    path = tmp_path / "mailwright.toml"
    path.write_text(render_toml(config))
    return path


EXAMPLES = [s for s in sections() if s.of("console")]


def test_the_document_has_the_examples_a_newcomer_needs() -> None:
    titles = [s.title for s in EXAMPLES]
    assert "Relay a domain to an internal mail server" in titles
    assert "Send all outbound mail through a smarthost with a login" in titles
    assert "Deliver a domain to Dovecot over LMTP" in titles
    assert "Refuse a domain with an error" in titles
    values = {line.split()[1].partition(":")[0] for line in entry_lines(reference_table())}
    assert values == {"smtp", "lmtp", "error"}


@pytest.mark.parametrize("block", [t for s in sections() for t in s.of("transport")])
def test_every_transport_block_parses(block: str) -> None:
    table, errors = parse_transport_table(block.encode(), "docs/routing.md")
    assert errors == []
    assert len(table) == len(entry_lines(block))


@pytest.mark.parametrize("section", EXAMPLES, ids=[s.title for s in EXAMPLES])
def test_every_console_block_is_what_the_code_prints(section: Section, tmp_path: Path) -> None:
    config = section_config(section, tmp_path)
    for block in section.of("console"):
        for argv, shown in commands(block):
            assert argv[:3] == ["mailwright", "address", "test"], argv
            result = CliRunner().invoke(cli, ["--config", str(config), *argv[1:]])
            assert result.exit_code == 0, result.output
            assert result.stdout.splitlines() == shown


def test_the_credentials_block_logs_in_to_the_smarthost(tmp_path: Path) -> None:
    (section,) = [s for s in EXAMPLES if s.of("credentials")]
    table, errors = parse_credentials(section.of("credentials")[0].encode(), "docs/routing.md")
    assert errors == [] and len(table) == 1
    router, problems = Router.from_settings(load_settings(section_config(section, tmp_path)))
    login = table.lookup(router.route("far.example"))
    assert problems == [] and login is not None and login.username == "user@isp.example"
