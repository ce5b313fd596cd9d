"""The settings for an admin subcommand: ``load_or_exit(ctx)``.

Reads the file named by ``--config`` on the root command (or the default path); a
configuration error is one line on stderr and exit 78 (EX_CONFIG), never a traceback.
Its own module so that ``cli.main`` and its subcommands need not import each other.
"""

from __future__ import annotations

import sys

import click

from mailwright.config.loader import ConfigError, load_settings
from mailwright.config.schema import Settings
from mailwright.core.sysexits import ExitCode


def load_or_exit(ctx: click.Context) -> Settings:
    """The settings, or exit 78 (EX_CONFIG) with the problem on stderr."""
    root = ctx.find_root()
    try:
        return load_settings(root.obj.get("config") if root.obj else None)
    except ConfigError as exc:
        click.echo(f"mailwright: {exc}", err=True)
        sys.exit(ExitCode.CONFIG)
