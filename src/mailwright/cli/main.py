"""``mailwright``: the admin command line (serve, config, queue, ...).

Every error is one line on stderr and a sysexits exit code, never a traceback.
Settings: whichever file ``--config`` / ``$MAILWRIGHT_CONFIG`` names.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from mailwright.cli.settings import load_or_exit
from mailwright.config.loader import config_path
from mailwright.config.schema import Settings, masked_conninfo
from mailwright.core.sysexits import ExitCode


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from mailwright.cli.version import package_version

    click.echo(f"mailwright {package_version()}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the installed version and exit.",
)
@click.option(
    "--config",
    "-C",
    "config",
    metavar="FILE",
    envvar="MAILWRIGHT_CONFIG",
    help="Configuration file (default $MAILWRIGHT_CONFIG or /etc/mailwright/mailwright.toml).",
)
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Mailwright, a durable mail transfer agent.

    \b
    Examples:
      mailwright serve --config /etc/mailwright/mailwright.toml
      mailwright config check
    """
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


@cli.command()
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Overrides [log] level.",
)
@click.option(
    "--daemon",
    "detach",
    is_flag=True,
    help="Detach (for hosts without systemd); logs go to syslog, the pid to --pid-file.",
)
@click.option(
    "--pid-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the pid here (default with --daemon: [service] pid_file, "
    "else <queue dir>/mailwright.pid).",
)
@click.pass_context
def serve(ctx: click.Context, log_level: str | None, detach: bool, pid_file: str | None) -> None:
    """Run the daemon: in the foreground (systemd Type=notify), or detached with --daemon.

    \b
    Examples:
      mailwright --config mailwright.toml serve
      mailwright serve --daemon --pid-file /run/mailwright.pid
      systemctl reload mailwright     # SIGHUP: the configuration again
    """
    from pathlib import Path

    from mailwright.daemon.launch import LaunchOptions, launch

    settings = load_or_exit(ctx)
    path = config_path(ctx.find_root().obj.get("config"))
    options = LaunchOptions(
        config_path=path.resolve() if path is not None else None,
        log_level=log_level,
        detach=detach,
        pid_file=Path(pid_file).resolve() if pid_file else None,
    )
    code = launch(settings, options)
    if code:
        sys.exit(code)


@cli.group()
def config() -> None:
    """Check or show the configuration."""


@config.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Validate the configuration file; exit 78 (EX_CONFIG) on any problem.

    \b
    Example:
      mailwright --config /etc/mailwright/mailwright.toml config check
    """
    settings = load_or_exit(ctx)
    # each reports its problems
    checked = [_plugins_ok(settings), _auth_table_ok(settings), _generic_table_ok(settings)]
    if not all(checked):
        sys.exit(ExitCode.CONFIG)
    _warn_unsigned_reports(settings)
    _warn_idle_dmarc_reports(settings)
    path = config_path(ctx.obj.get("config"))
    click.echo(f"{path or 'built-in defaults'}: OK")


def _plugins_ok(settings: Settings) -> bool:
    """What the daemon checks when it builds its parts (filter plugin options, milter
    endpoints, DNS blocklist zones): the same function, so the same message."""
    from mailwright.daemon.generation import GenerationError, check_plugins

    try:
        check_plugins(settings)
    except GenerationError as exc:
        click.echo(f"mailwright: {exc}", err=True)
        return False
    return True


def _warn_unsigned_reports(settings: Settings) -> None:
    """TLS reports that would go unsigned: a warning, not a failure (they still go)."""
    from mailwright.daemon.tlsreports import unsigned_warning

    if (warning := unsigned_warning(settings)) is not None:
        click.echo(f"mailwright: warning: {warning}", err=True)


def _warn_idle_dmarc_reports(settings: Settings) -> None:
    from mailwright.policy.dmarc import idle_reports_warning

    if (warning := idle_reports_warning(settings)) is not None:
        click.echo(f"mailwright: warning: {warning}", err=True)


def _auth_table_ok(settings: Settings) -> bool:
    """``delivery.auth_table``: every problem as ``file:line: problem`` (never a password)."""
    if settings.delivery.auth_table is None:
        return True
    from mailwright.routing.credentials import exposure, load_credentials

    _, errors = load_credentials(settings.delivery.auth_table)
    for error in errors:
        click.echo(f"mailwright: {error}", err=True)
    if (warning := exposure(settings.delivery.auth_table)) is not None:
        click.echo(f"mailwright: warning: {warning}", err=True)
    return not errors


def _generic_table_ok(settings: Settings) -> bool:
    """``rewrite.generic_table``: every problem as ``file:line: problem``."""
    from mailwright.routing.generic import rewriter_from_settings

    _, errors = rewriter_from_settings(settings, follow=False)
    for error in errors:
        click.echo(f"mailwright: {error}", err=True)
    return not errors


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML-like text.")
@click.option(
    "--show-secrets", is_flag=True, help="Print the token and database password as they are."
)
@click.pass_context
def config_show(ctx: click.Context, as_json: bool, show_secrets: bool) -> None:
    """Print the effective settings (defaults filled in); secrets are masked.

    \b
    Example:
      mailwright config show --json
    """
    settings = load_or_exit(ctx)
    data = settings.model_dump(mode="json")
    if data["http"]["token"] and not show_secrets:  # output ends up in tickets and chats
        data["http"]["token"] = "********"
    if not show_secrets:  # a password may be written into the connection string
        data["queue"]["postgresql"] = masked_conninfo(data["queue"]["postgresql"])
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    _print_toml(data)


def _print_toml(data: dict[str, Any], prefix: str = "") -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not _is_tables(v)}
    for key, value in scalars.items():
        click.echo(f"{key} = {json.dumps(value)}")
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            click.echo(f"\n[{name}]")
            _print_toml(value, f"{name}.")
        elif _is_tables(value):
            for item in value:
                click.echo(f"\n[[{name}]]")
                _print_toml(item, f"{name}.")


def _is_tables(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def main() -> None:
    cli(prog_name="mailwright")


def _register() -> None:
    from mailwright.cli.access import access
    from mailwright.cli.aliases import address, aliases
    from mailwright.cli.auth import auth
    from mailwright.cli.cluster import cluster
    from mailwright.cli.dmarc import dmarc
    from mailwright.cli.links import install_links
    from mailwright.cli.queue import queue
    from mailwright.cli.send import send
    from mailwright.cli.status import status
    from mailwright.cli.tls import tls
    from mailwright.cli.tlsrpt import tlsrpt

    cli.add_command(queue)
    cli.add_command(send)
    cli.add_command(install_links)
    cli.add_command(tls)
    cli.add_command(auth)
    cli.add_command(access)
    cli.add_command(aliases)
    cli.add_command(address)
    cli.add_command(status)
    cli.add_command(cluster)
    cli.add_command(tlsrpt)
    cli.add_command(dmarc)


_register()
