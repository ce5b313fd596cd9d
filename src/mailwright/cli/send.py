"""``mailwright send``: a friendly way to send a test message through the local daemon.

Builds a plain-text message from options and stdin and submits it exactly as
``sendmail`` does (the local socket, else the maildrop; the daemon adds what is
missing and checks the rest). Prints the queue id, or JSON with ``--json``; exits with
the same sysexits codes as ``sendmail``. Settings: the local submission view of the
configuration (``--config``).
"""

from __future__ import annotations

import json
import sys
from email.header import Header as MimeHeader

import click

from mailwright.cli.draft import Draft, to_crlf
from mailwright.cli.sendmail import Caller
from mailwright.cli.settings import load_or_exit
from mailwright.cli.submit import recipients_of, submit
from mailwright.config.lite import SubmitConfig
from mailwright.config.loader import config_path
from mailwright.core.submission import SubmissionEnvelope


def _encoded(text: str) -> str:
    return text if text.isascii() else MimeHeader(text, "utf-8").encode()


@click.command()
@click.option("--to", "to", multiple=True, required=True, metavar="ADDRESS", help="Recipient.")
@click.option("--cc", multiple=True, metavar="ADDRESS", help="Copy recipient.")
@click.option("--bcc", multiple=True, metavar="ADDRESS", help="Blind copy (no header).")
@click.option("--from", "sender", metavar="ADDRESS", help="Sender (default: you@local domain).")
@click.option("--subject", default="", help="Subject line.")
@click.option("--header", "extra", multiple=True, metavar="'NAME: VALUE'", help="Extra header.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def send(
    ctx: click.Context,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    sender: str | None,
    subject: str,
    extra: tuple[str, ...],
    as_json: bool,
) -> None:
    """Send a message whose body is read from stdin.

    \b
    Examples:
      echo "it works" | mailwright send --to postmaster@example.org --subject test
      mailwright send --to a@example.org --cc b@example.org --subject report < report.txt
    """
    settings = load_or_exit(ctx)
    root = ctx.find_root()
    config = SubmitConfig.from_settings(
        settings, str(config_path(root.obj.get("config") if root.obj else None) or "")
    )
    body = to_crlf(sys.stdin.buffer.read())
    caller = Caller()
    envelope_sender = config.qualify(sender) if sender else f"{caller.login}@{config.domain}"
    message = Draft([], body)
    if sender:
        message.add("From", config.qualify(sender))
    if to:
        message.add("To", ", ".join(config.qualify(a) for a in to))
    if cc:
        message.add("Cc", ", ".join(config.qualify(a) for a in cc))
    if subject:
        message.add("Subject", _encoded(subject))
    for line in extra:
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or " " in name.strip():
            raise click.UsageError(f"--header wants 'Name: value', not {line!r}")
        message.add(name.strip(), value.strip())
    if not body.isascii():
        message.add("MIME-Version", "1.0")
        message.add("Content-Type", "text/plain; charset=utf-8")
        message.add("Content-Transfer-Encoding", "8bit")
    message.complete(sender=envelope_sender, full_name=caller.full_name, hostname=config.hostname)
    content = message.encode()
    recipients = [config.qualify(a) for a in (*to, *cc, *bcc)]
    envelope = SubmissionEnvelope(
        envelope_sender,
        recipients_of(recipients, None),
        body_type=None if content.isascii() else "8BITMIME",
        smtputf8=not all(a.isascii() for a in (envelope_sender, *recipients)),
    )
    outcome = submit(content, envelope, config)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "queued": bool(outcome.via),
                    "via": outcome.via or None,
                    "id": outcome.queue_id,
                    "errors": outcome.errors,
                    "exit_code": outcome.code,
                },
                indent=2,
            )
        )
    else:
        for line in outcome.errors:
            click.echo(f"mailwright: {line}", err=True)
        if outcome.via == "socket":
            click.echo(f"queued as {outcome.queue_id}")
        elif outcome.via == "maildrop":
            click.echo(
                f"the daemon is not running: left in the maildrop as {outcome.queue_id}; "
                "it is queued when the daemon starts"
            )
    ctx.exit(outcome.code)
