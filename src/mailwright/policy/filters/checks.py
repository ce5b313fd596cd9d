"""The ``checks`` filter: Postfix-style header_checks and body_checks on every message.

At end of message each header field (unfolded, ``Name: value``) is matched
against the ``header_checks`` rules, then each body line (without CRLF) of the
first ``body_size_limit`` octets against the ``body_checks`` rules; the first
matching rule decides for that line (see ``policy.contentrules`` for the file
format). Actions: REJECT (550 5.7.1) and DEFER (451 4.7.1) refuse the message
(their text may start with its own enhanced status code, ``REJECT 5.7.0 text``),
DISCARD accepts and drops it (these three end the inspection); HOLD puts it on
hold (quarantine), WARN only logs; in header_checks IGNORE removes the field,
REPLACE replaces it and PREPEND adds a field before it; OK and DUNNO do nothing.
Every action but OK/DUNNO is logged with the queue id. The body is read from the
spool chunk by chunk, never whole. The files are read when the configuration is
loaded (so a bad rule is a configuration error) and again on each SIGHUP reload.
Settings: its ``options`` (header_checks, body_checks, body_size_limit).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailwright.config.schema import Settings
from mailwright.core.headers import HeaderList
from mailwright.core.reply import Reply
from mailwright.observability import maillog
from mailwright.policy import contentrules
from mailwright.policy.contentrules import PASS, BodyLines, Rule, RuleTable
from mailwright.policy.filters.base import Filter
from mailwright.policy.hooks import SessionInfo, Transaction

READ_CHUNK = 64 * 1024
SHOWN = 200  # characters of a matched line that go into the log


class ChecksOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    header_checks: str | None = None  # path of a rules file
    body_checks: str | None = None  # path of a rules file
    body_size_limit: int = Field(default=50 * 1024, ge=0)  # Postfix's body_checks_size_limit

    @field_validator("header_checks")
    @classmethod
    def _header_rules(cls, value: str | None) -> str | None:
        if value is not None:
            contentrules.load(value, body=False)
        return value

    @field_validator("body_checks")
    @classmethod
    def _body_rules(cls, value: str | None) -> str | None:
        if value is not None:
            contentrules.load(value, body=True)
        return value

    @model_validator(mode="after")
    def _something(self) -> ChecksOptions:
        if self.header_checks is None and self.body_checks is None:
            raise ValueError("give header_checks, body_checks or both")
        return self


def _shown(line: str) -> str:
    return line if len(line) <= SHOWN else line[:SHOWN] + "..."


class ChecksFilter(Filter):
    Options = ChecksOptions

    def __init__(self, name: str, options: Any, settings: Settings) -> None:
        super().__init__(name, options, settings)
        opts: ChecksOptions = options
        self.header_rules: RuleTable | None = None
        self.body_rules: RuleTable | None = None
        if opts.header_checks is not None:
            self.header_rules = contentrules.load(opts.header_checks, body=False)
        if opts.body_checks is not None:
            self.body_rules = contentrules.load(opts.body_checks, body=True)

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        if self.header_rules is not None:
            assert txn.headers is not None
            reply = self._check_headers(txn, txn.headers, self.header_rules)
            if reply is not None or txn.discard:
                return reply
        if self.body_rules is not None:
            return self._check_body(txn, self.body_rules)
        return None

    def _check_headers(
        self, txn: Transaction, headers: HeaderList, rules: RuleTable
    ) -> Reply | None:
        kept = HeaderList()
        for field in headers:
            line = contentrules.header_line(field)
            rule = rules.first(line)
            if rule is None or rule.action in PASS:
                kept.append(field)
                continue
            _log(txn, "header_checks", rule, line)
            if rule.action == "IGNORE":
                continue
            if rule.action == "REPLACE":
                kept.append(rule.header())
                continue
            if rule.action == "PREPEND":
                kept.append(rule.header())
            kept.append(field)
            reply = _verdict(txn, "header_checks", rule)
            if reply is not None or txn.discard:
                return reply
        headers[:] = kept
        return None

    def _check_body(self, txn: Transaction, rules: RuleTable) -> Reply | None:
        assert txn.body is not None
        options: ChecksOptions = self.options
        lines = BodyLines(options.body_size_limit)
        for chunk in txn.body.chunks(READ_CHUNK):
            reply = self._body_lines(txn, rules, lines.feed(chunk))
            if reply is not None or txn.discard:
                return reply
            if lines.full:
                break
        return self._body_lines(txn, rules, lines.finish())

    def _body_lines(self, txn: Transaction, rules: RuleTable, lines: list[bytes]) -> Reply | None:
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            rule = rules.first(line)
            if rule is None or rule.action in PASS:
                continue
            _log(txn, "body_checks", rule, line)
            reply = _verdict(txn, "body_checks", rule)
            if reply is not None or txn.discard:
                return reply
        return None


def _verdict(txn: Transaction, kind: str, rule: Rule) -> Reply | None:
    """What REJECT, DEFER, DISCARD and HOLD do to the message; WARN does nothing more."""
    if rule.action == "REJECT":
        status, text = rule.status("5.7.1")
        return Reply.of(550, status, text or "Message content rejected")
    if rule.action == "DEFER":
        status, text = rule.status("4.7.1")
        return Reply.of(451, status, text or "Message content deferred, try again later")
    if rule.action == "DISCARD":
        txn.discard = True
    elif rule.action == "HOLD":
        txn.hold_reason = rule.text or f"held by {kind} ({rule.where})"
    return None


def _log(txn: Transaction, kind: str, rule: Rule, line: str) -> None:
    said = f"{rule.action} {_shown(line)}" + (f"; {rule.text}" if rule.text else "")
    maillog.emit(txn.queue_id, **{kind: said, "rule": rule.where})
