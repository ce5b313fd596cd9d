"""``mailwright aliases build|test`` and ``mailwright address test``.

``aliases build`` is ``newaliases`` (and ``sendmail -bi``; both call ``newaliases``
here): it compiles ``routing.alias_file`` into the table the daemon reads (which
notices the new file by itself), prints every bad line as ``file:line: problem`` on
stderr and Sendmail's summary on stdout, with a progress bar on a terminal for large
files. Exit 0, or 65 (EX_DATAERR) when there were bad lines (the good ones are in the
table all the same), 72 (EX_OSFILE) when the file cannot be read or the table
written, 78 (EX_CONFIG) when no alias file is configured.

``aliases test NAME...`` prints what the compiled table says for each name (exit 67
if one is not there). ``address test ADDR...`` prints how each address resolves,
step by step (alias chain, ``.forward``, virtual user table), ending in Sendmail's
``-bv`` lines (mailer and target), without delivering anything; exit 67 when an
address has no valid destination. Both ``test`` commands print JSON with ``--json``.
Settings: ``routing.*``, ``local_delivery.*``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailwright.cli.output import fail, print_json
from mailwright.cli.settings import load_or_exit
from mailwright.config.schema import Settings
from mailwright.core.sysexits import ExitCode
from mailwright.routing.aliases import AliasTable, Progress, compile_aliases

if TYPE_CHECKING:
    from mailwright.routing.resolution import Resolution


@click.group()
def aliases() -> None:
    """Compile and query the alias file (newaliases).

    \b
    Examples:
      mailwright aliases build
      mailwright aliases test postmaster staff
    """


@aliases.command("build")
@click.option("--file", "source", type=click.Path(path_type=Path), help="Alias file to compile.")
@click.option("--database", type=click.Path(path_type=Path), help="Where the compiled table goes.")
@click.pass_context
def build(ctx: click.Context, source: Path | None, database: Path | None) -> None:
    """Compile the alias file atomically (newaliases, sendmail -bi).

    \b
    Examples:
      mailwright aliases build
      mailwright aliases build --file /etc/mail/aliases --database /tmp/aliases.db
    """
    code = compile_and_report(load_or_exit(ctx), source, database)
    if code:
        sys.exit(code)


def newaliases(config_path: str | None) -> int:
    """``newaliases`` and ``sendmail -bi``: what ``aliases build`` does, exit code included."""
    from mailwright.config.loader import ConfigError, load_settings

    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        print(f"mailwright: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    return compile_and_report(settings)


def compile_and_report(
    settings: Settings, source: Path | None = None, database: Path | None = None
) -> int:
    """Compile the alias file; ``file:line: problem`` lines on stderr, the summary on
    stdout; the exit code (0, 65 for bad lines, 72 unreadable/unwritable, 78 no file)."""
    source = source or settings.routing.alias_file
    if source is None:
        print("mailwright: no alias file configured (routing.alias_file)", file=sys.stderr)
        return ExitCode.CONFIG
    try:
        with _progress() as show:
            report = compile_aliases(source, database or settings.alias_database, show)
    except OSError as exc:
        print(f"mailwright: {exc.filename or source}: {exc.strerror or exc}", file=sys.stderr)
        return ExitCode.OSFILE
    for problem in report.problems:
        print(problem, file=sys.stderr)
    print(report.summary(), flush=True)
    if any(not p.problem.startswith("Warning:") for p in report.problems):
        return ExitCode.DATAERR
    return ExitCode.OK


@contextmanager
def _progress() -> Iterator[Progress | None]:
    """A progress bar on a terminal (stderr); nothing when piped."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress as Bar

    with Bar(console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, object] = {}

        def show(phase: str, done: int, total: int) -> None:
            if total < 10000:
                return
            task = tasks.get(phase)
            if task is None:
                label = "reading" if phase == "parse" else "writing"
                task = tasks[phase] = bar.add_task(label, total=total)
            bar.update(task, completed=done)  # type: ignore[arg-type]

        yield show


@aliases.command("test")
@click.argument("names", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
def test_aliases(ctx: click.Context, names: tuple[str, ...], as_json: bool) -> None:
    """Print the compiled entries for NAMES (one level, as stored).

    \b
    Examples:
      mailwright aliases test postmaster staff
      mailwright aliases test --json staff
    """
    settings = load_or_exit(ctx)
    table = AliasTable(settings.alias_database)
    if not settings.alias_database.exists():
        fail(
            f"{settings.alias_database}: no compiled alias table (run: mailwright aliases build)",
            ExitCode.NOINPUT,
        )
    missing = False
    found: dict[str, list[str] | None] = {}
    for name in names:
        items = table.lookup(name)
        found[name] = None if items is None else [str(i) for i in items]
        missing = missing or items is None
    table.close()
    if as_json:
        print_json(found)
    else:
        for name, shown in found.items():
            click.echo(
                f"{name}: {', '.join(shown)}" if shown is not None else f"{name}: no such alias"
            )
    if missing:
        sys.exit(ExitCode.NOUSER)


@click.group()
def address() -> None:
    """Show how addresses resolve (sendmail -bv)."""


@address.command("test")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
def test_address(ctx: click.Context, addresses: tuple[str, ...], as_json: bool) -> None:
    """Resolve ADDRESSES through aliases, .forward and the virtual user table.

    Exit 67 when an address is invalid or none of its destinations exists.

    \b
    Examples:
      mailwright address test staff@example.org
      mailwright address test --json staff@example.org root
    """
    from mailwright.routing.resolution import explain

    settings = load_or_exit(ctx)
    if settings.routing.alias_file is not None and not settings.alias_database.exists():
        click.echo(
            f"note: {settings.alias_database} not built yet: no aliases"
            " (run: mailwright aliases build)",
            err=True,
        )
    bad = False
    reports: list[dict[str, object]] = []
    for text in addresses:
        try:
            resolution = explain(settings, text)
        except ValueError as exc:
            reports.append({"address": text, "deliverable": False, "error": str(exc)})
            if not as_json:
                click.echo(f"{text}... {exc}")
            bad = True
            continue
        errors = [leaf for leaf in resolution.leaves if leaf.error is not None]
        failed = bool(errors) and len(errors) == len(resolution.leaves) and not resolution.lists
        bad = bad or failed
        reports.append(_resolution_json(text, resolution, failed))
        if as_json:
            continue
        for line in resolution.lines():
            click.echo(line)
        if resolution.temporary is not None:
            click.echo(f"{text}... temporary failure: {resolution.temporary}")
    if as_json:
        print_json(reports)
    if bad:
        sys.exit(ExitCode.NOUSER)


def _resolution_json(text: str, resolution: Resolution, failed: bool) -> dict[str, object]:
    """``address test --json``: one address, its destinations, lists and trace."""
    return {
        "address": text,
        "resolved": str(resolution.address),
        "deliverable": not failed and resolution.temporary is None,
        "temporary_failure": None if resolution.temporary is None else str(resolution.temporary),
        "destinations": [
            {
                "address": str(leaf.address),
                "mailer": None if leaf.target is None else leaf.target.mailer.value,
                "target": None if leaf.target is None else str(leaf.target),
                "error": None if leaf.error is None else str(leaf.error),
            }
            for leaf in resolution.leaves
        ],
        "lists": [
            {"name": group.list_name, "owner": str(group.owner)} for group in resolution.lists
        ],
        "trace": resolution.lines(),
    }
