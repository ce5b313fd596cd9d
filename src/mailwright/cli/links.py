"""``mailwright install-links``: make ``/usr/sbin/sendmail``, ``mailq`` and ``newaliases``
point at Mailwright, so cron, PHP, mutt and monitoring tools use it unchanged.

Each link is a symbolic link to the installed entry point of the same name (the
program name selects the mode). An existing file that is not Mailwright's is left alone
unless ``--force``, which keeps it as ``<name>.pre-mailwright``. ``--prefix`` installs
under another root (packaging, tests). Reads no settings.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import click

LINKS = (
    ("usr/sbin/sendmail", "sendmail"),
    ("usr/bin/mailq", "mailq"),
    ("usr/bin/newaliases", "newaliases"),
)
MARKER = b"mailwright.cli.sendmail"  # found in every entry point of ours
BACKUP_SUFFIX = ".pre-mailwright"
OSFILE, CANTCREAT = 72, 73


def is_mailwright(path: Path) -> bool:
    """Does ``path`` (after links) run Mailwright's sendmail entry point?"""
    try:
        with path.open("rb") as f:
            return MARKER in f.read(8192)
    except OSError:
        return False


def default_bindir() -> Path:
    return Path(sysconfig.get_path("scripts"))


def _backup_name(path: Path) -> Path:
    candidate = path.with_name(path.name + BACKUP_SUFFIX)
    n = 1
    while candidate.exists() or candidate.is_symlink():
        candidate = path.with_name(f"{path.name}{BACKUP_SUFFIX}.{n}")
        n += 1
    return candidate


def install_link(link: Path, target: Path, force: bool, dry_run: bool) -> str:
    """Create or update one link; returns what was done. ``click.ClickException`` if refused."""
    exists = link.exists() or link.is_symlink()
    if exists and link.is_symlink() and Path(os.readlink(link)) == target:
        return f"{link} -> {target} (already)"
    note = ""
    if exists and not is_mailwright(link):
        if not force:
            raise click.ClickException(
                f"refusing to replace {link}: it is not Mailwright's (use --force to keep it "
                f"as {link.name}{BACKUP_SUFFIX} and replace it)"
            )
        backup = _backup_name(link)
        note = f" (previous file kept as {backup})"
        if not dry_run:
            os.rename(link, backup)
    if dry_run:
        return f"{link} -> {target}{note} (dry run)"
    link.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    temporary = link.with_name(f".{link.name}.mailwright-new")
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    os.symlink(target, temporary)
    os.replace(temporary, link)  # atomic: the name never points nowhere
    return f"{link} -> {target}{note}"


@click.command("install-links")
@click.option(
    "--prefix",
    default="/",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Create the links under this root instead of /.",
)
@click.option(
    "--bindir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the sendmail/mailq/newaliases entry points (default: this install's).",
)
@click.option("--force", is_flag=True, help="Replace files that are not Mailwright's.")
@click.option("--dry-run", is_flag=True, help="Say what would be done, change nothing.")
def install_links(prefix: Path, bindir: Path | None, force: bool, dry_run: bool) -> None:
    """Point /usr/sbin/sendmail, /usr/bin/mailq and /usr/bin/newaliases at Mailwright.

    \b
    Examples:
      mailwright install-links
      mailwright install-links --dry-run
      mailwright install-links --prefix /tmp/root --bindir /opt/mailwright/bin
    """
    bindir = (bindir or default_bindir()).absolute()
    failed = False
    for relative, entry in LINKS:
        target = bindir / entry
        if not target.exists():
            click.echo(
                f"mailwright: no entry point {target}: install Mailwright with its sendmail, "
                "mailq and newaliases scripts first, or name their directory with --bindir",
                err=True,
            )
            raise SystemExit(OSFILE)
        try:
            click.echo(install_link(prefix / relative, target, force, dry_run))
        except click.ClickException as exc:
            click.echo(f"mailwright: {exc.message}", err=True)
            failed = True
        except OSError as exc:
            click.echo(f"mailwright: {prefix / relative}: {exc.strerror or exc}", err=True)
            failed = True
    if failed:
        raise SystemExit(CANTCREAT)
