"""``mailwright access ...``: check the access table and show which entry decides a case.

``test`` takes a client (``--connect IP``, ``--host NAME``), a sender (``--from``)
and recipients (``--to``, repeatable) and prints, for each, the entry that
matches (file line and text) and what it means, or that none does. ``check``
reports every problem as ``file:line: problem`` (exit 78). ``--file`` overrides
``access.table``; ``test --json`` prints the same as JSON. Settings: ``access.table``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mailwright.cli.output import fail, print_json
from mailwright.cli.settings import load_or_exit
from mailwright.core.address import Address, AddressError, parse_path
from mailwright.core.sysexits import ExitCode
from mailwright.policy.access import AccessTable, Rule, access_denied, read_access


def _table_path(ctx: click.Context, file: Path | None) -> Path:
    path = file or load_or_exit(ctx).access.table
    if path is None:
        fail("no access table: set access.table or give --file", ExitCode.USAGE)
        raise AssertionError  # not reached
    return path


def _address(text: str, null_ok: bool) -> Address | None:
    path = text if text.startswith("<") else f"<{text}>"
    try:
        return parse_path(path, utf8=True, allow_null=null_ok)
    except AddressError as exc:
        fail(f"{text!r}: {exc}", ExitCode.USAGE)
        raise AssertionError from None  # not reached


def _outcome(rule: Rule | None, shown: str) -> str:
    if rule is None:
        return "no entry matches (the defaults apply)"
    if rule.action.value == "REJECT":
        meaning = str(access_denied(shown))
    elif rule.reply is not None:
        meaning = str(rule.reply)
    else:
        meaning = rule.action.value
    return f"{rule} => {meaning}"


@click.group()
def access() -> None:
    """The access table (Connect:, From:, To: entries)."""


_file_option = click.option(
    "--file", type=click.Path(path_type=Path), help="The table (default access.table)."
)


@access.command("test")
@click.option("--connect", "ip", help="Client IP address.")
@click.option("--host", default="", help="Client host name (verified reverse DNS).")
@click.option("--from", "sender", help="Envelope sender (<> for the null sender).")
@click.option("--to", "recipients", multiple=True, help="Recipient (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@_file_option
@click.pass_context
def test(
    ctx: click.Context,
    ip: str | None,
    host: str,
    sender: str | None,
    recipients: tuple[str, ...],
    as_json: bool,
    file: Path | None,
) -> None:
    """Show which entry of the access table matches.

    \b
    Examples:
      mailwright access test --connect 192.0.2.7 --from a@example.com --to b@example.net
      mailwright access test --json --host mail.example.com --to b@example.net
    """
    path = _table_path(ctx, file)
    table, errors = read_access(path)
    for error in errors:
        click.echo(str(error), err=True)
    if ip is None and not host and sender is None and not recipients:
        fail("nothing to test: give --connect, --host, --from or --to", ExitCode.USAGE)
    cases = _cases(table, ip, host, sender, recipients)
    if as_json:
        print_json([_case_json(case, rule, shown) for case, rule, shown in cases])
        return
    for case, rule, shown in cases:
        click.echo(f"{case}: {_outcome(rule, shown)}")


Case = tuple[str, Rule | None, str]  # "From:<a@b>", the matching rule, the address shown


def _cases(
    table: AccessTable,
    ip: str | None,
    host: str,
    sender: str | None,
    recipients: tuple[str, ...],
) -> list[Case]:
    cases: list[Case] = []
    if ip is not None or host:
        rule = table.connect(ip or "", host)
        cases.append((f"Connect:{ip or ''}{' ' + host if host else ''}", rule, ""))
    if sender is not None:
        address = _address(sender, null_ok=True)
        shown = "<>" if address is None else f"<{address}>"
        cases.append((f"From:{shown}", table.address("from", address), shown))
    for text in recipients:
        address = _address(text, null_ok=False)
        shown = f"<{address}>"
        cases.append((f"To:{shown}", table.address("to", address), shown))
    return cases


def _case_json(case: str, rule: Rule | None, shown: str) -> dict[str, object]:
    entry = None
    if rule is not None:
        entry = {"line": rule.line, "text": rule.text, "action": rule.action.value}
    return {"case": case, "entry": entry, "outcome": _outcome(rule, shown)}


@access.command("check")
@_file_option
@click.pass_context
def check(ctx: click.Context, file: Path | None) -> None:
    """Report every problem of the access table as file:line: problem.

    \b
    Examples:
      mailwright access check
      mailwright access check --file /etc/mailwright/access
    """
    path = _table_path(ctx, file)
    table, errors = read_access(path)
    for error in errors:
        click.echo(str(error), err=True)
    if errors:
        sys.exit(ExitCode.CONFIG)
    click.echo(f"{path}: {len(table)} entries, OK")
