"""A milter as a policy hook: the MTA side of one filter for every SMTP session.

At ``connect`` it opens the filter's socket, negotiates, and sends the client's
connect information before our greeting (as Sendmail does); the connection
then serves every message of the session and ends with QUIT at ``close``.
Envelope stages send macros and the command and turn the filter's verdict into
a reply (``verdict``). At end of message the filter gets the headers the
client sent (not our own ``Received:``, as with Sendmail and Postfix), end of
headers, the body in chunks of at most 65535 bytes, and end of message; its
modifications are collected on a copy and applied to the transaction only
with a positive final verdict (``modify``), before the queue commit and the
``250``. ABORT goes to the filter whenever a message it saw ends early.

A CONNECT or HELO reject/tempfail refuses the rest of the session (every HELO
and unknown command gets it, and MAIL if one came), as Postfix does; ACCEPT
there retires the filter for the session; ACCEPT later retires it for the
message. DISCARD at CONNECT/HELO and SKIP outside the body are logged and
ignored (Postfix). A refusal of an unknown command (UNKNOWN) replaces the
``500``. With ``SMFIP_RCPT_REJ`` the filter also sees the recipients earlier
checks refused (``rcpt_refused``; its verdict is not used). A filter that fails
(unreachable, timeout, closed, garbage, a reply not allowed at that stage, an
invalid or un-negotiated modification) is dropped for the rest of the session
and its failure policy answers MAIL, RCPT, DATA and end of data from then on:
``tempfail`` (451 4.7.1), ``reject`` (550 5.7.1) or ``accept`` (as if absent).
Nothing it sent for the failed message is applied. Every refusal is logged
with the filter's name, every failure once (a warning in the mail log).

Trusts the filter only within the protocol; every packet is validated.
Settings: one ``filters`` entry (``MilterFilter``), ``hostname``,
``routing.local_domains`` and the router's (through ``MacroSource``),
``queue.spool_dir``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

from mailwright.config.endpoint import parse_endpoint
from mailwright.config.schema import MilterFilter
from mailwright.core.envelope import Recipient
from mailwright.core.headers import Header
from mailwright.core.reply import Reply
from mailwright.observability import maillog, metrics
from mailwright.policy.filters.scope import covers
from mailwright.policy.hooks import Hook, SessionInfo, Transaction
from mailwright.policy.milter import codec, verdict
from mailwright.policy.milter.client import Connection, MilterError
from mailwright.policy.milter.codec import Simple, Stage
from mailwright.policy.milter.macros import CONFIG_STAGES, DEFAULTS, MacroScope, MacroSource, values
from mailwright.policy.milter.modify import Edit, LineEndings, ModificationError, own_trace
from mailwright.policy.milter.negotiation import Offer, Step

SESSION_STAGES = frozenset({"connect", "helo"})
# a failed filter's policy does not answer these: the session and unknown commands go on
NO_POLICY_STAGES = SESSION_STAGES | {"unknown"}
END_OF_DATA_STAGES = frozenset({"header", "eoh", "body", "eom"})
_SEND_BATCH = 256 * 1024  # bytes of no-reply packets written at once


@dataclass(slots=True)
class Conversation:
    """One filter's state for one SMTP session."""

    session: SessionInfo
    conn: Connection | None = None
    failed: bool = False  # the failure policy answers for the rest of the session
    retired: bool = False  # the filter accepted the session: it gets nothing more
    session_reply: Reply | None = None  # a CONNECT/HELO refusal, repeated to later commands
    in_message: bool = False  # saw MAIL and not yet the end of that message
    message_done: bool = False  # accepted (or discarded) this message: skip it until next MAIL


def header_for_filter(header: Header, leading_space: bool) -> bytes:
    """A field's value as milters get it: LF between folded lines, one leading space removed."""
    value = header.value.replace(b"\r\n", b"\n").replace(b"\0", b" ")
    if not leading_space and value.startswith(b" "):
        value = value[1:]
    room = codec.MAX_DATA - len(header.name) - 2
    return value[:room]


class MilterHook(Hook):
    mta_check = False  # a filter's refusal is not shown to the filters after it (Sendmail)

    def __init__(self, config: MilterFilter, source: MacroSource, spool_dir: Path | None) -> None:
        self.name = config.display_name
        self.config = config
        self.endpoint = parse_endpoint(config.milter)
        self.offer = Offer.for_version(config.protocol)
        self.source = source
        self.spool_dir = spool_dir
        self.configured = dict(DEFAULTS)
        for key, stage in CONFIG_STAGES.items():
            names = getattr(config.macros, key)
            if names is not None:
                self.configured[stage] = tuple(names)
        self._talks: dict[int, Conversation] = {}

    # ---- stages -------------------------------------------------------------------------
    async def connect(self, session: SessionInfo) -> Reply | None:
        if not covers(self.config, session):
            return None
        talk = Conversation(session)
        self._talks[id(session)] = talk
        return await self._guard(talk, "connect", None, self._open(talk))

    async def helo(self, session: SessionInfo, name: str) -> Reply | None:
        talk, reply = await self._ready(session, "helo", None)
        if talk is None:
            return reply
        return await self._guard(talk, "helo", None, self._helo(talk, name))

    async def mail(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        talk, reply = await self._ready(session, "mail", txn)
        if talk is None:
            return reply
        return await self._guard(talk, "mail", txn, self._mail(talk, txn))

    async def rcpt(
        self, session: SessionInfo, txn: Transaction, recipient: Recipient, raw_params: list[str]
    ) -> Reply | None:
        talk, reply = await self._ready(session, "rcpt", txn)
        if talk is None or talk.message_done or txn.discard:
            return reply
        return await self._guard(talk, "rcpt", txn, self._rcpt(talk, txn, recipient, raw_params))

    async def rcpt_refused(
        self,
        session: SessionInfo,
        txn: Transaction,
        recipient: Recipient,
        raw_params: list[str],
        refusal: Reply,
    ) -> None:
        """SMFIP_RCPT_REJ: the recipient an earlier check refused, with ``{rcpt_mailer}``
        ``error``; the filter's verdict cannot change the refusal (ACCEPT or DISCARD only
        end the message for this filter, as they do for libmilter)."""
        talk = self._talks.get(id(session))
        if talk is None or talk.failed or talk.retired or talk.session_reply is not None:
            return
        conn = talk.conn
        if conn is None or conn.options is None or not conn.options.rcpt_rejected:
            return
        if not talk.in_message or talk.message_done or txn.discard:
            return
        path = f"<{recipient.address}>".encode("utf-8", "surrogateescape")
        args = [p.encode("utf-8", "surrogateescape") for p in raw_params]
        scope = MacroScope(session, txn, recipient, refusal)
        await self._guard(
            talk, "rcpt", txn, self._shown(talk, scope, codec.encode_rcpt(path, args))
        )

    async def _shown(self, talk: Conversation, scope: MacroScope, packet: bytes) -> None:
        conn = talk.conn
        assert conn is not None and conn.options is not None
        macros = self._macros(talk, Stage.ENVRCPT, scope)
        if not conn.options.sends(Step.RCPT):
            if macros:
                conn.defer(macros)
            return
        response = await conn.command(macros, packet, wait=conn.options.waits(Step.RCPT))
        if response == Simple(codec.ACCEPT) or response == Simple(codec.DISCARD):
            # libmilter is done with this message after either: send it nothing more for it
            talk.message_done = True
        elif response is not None and not isinstance(response, Simple | codec.ReplyCode):
            raise MilterError(f"{type(response).__name__} not allowed at rcpt")

    async def data(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        talk, reply = await self._ready(session, "data", txn)
        if talk is None or talk.message_done or txn.discard:
            return reply
        scope = MacroScope(session, txn)
        return await self._guard(
            talk, "data", txn, self._step(talk, Step.DATA, Stage.DATA, scope, codec.encode_data())
        )

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        talk, reply = await self._ready(session, "eom", txn)
        if talk is None or talk.message_done or txn.discard:
            return reply
        return await self._guard(talk, "eom", txn, self._content(talk, txn))

    async def unknown(self, session: SessionInfo, line: str) -> Reply | None:
        """An SMTP command we do not implement (UNKNOWN, v3+); only the error text can change."""
        talk, reply = await self._ready(session, "unknown", None)
        if talk is None:
            return reply
        packet = codec.encode_unknown(line.encode("utf-8", "surrogateescape")[:60000])
        step = self._step(talk, Step.UNKNOWN, None, MacroScope(session), packet, "unknown")
        return await self._guard(talk, "unknown", None, step)

    async def reset(self, session: SessionInfo, txn: Transaction | None) -> None:
        talk = self._talks.get(id(session))
        if talk is not None:
            await self._abort(talk)

    async def close(self, session: SessionInfo) -> None:
        talk = self._talks.pop(id(session), None)
        if talk is None or talk.conn is None or talk.conn.closed:
            return
        await self._abort(talk)
        if talk.conn is not None:
            await talk.conn.quit()

    # ---- the conversation ---------------------------------------------------------------
    async def _ready(
        self, session: SessionInfo, where: str, txn: Transaction | None
    ) -> tuple[Conversation | None, Reply | None]:
        """The conversation to use now, or (None, the reply that stands in for the filter)."""
        talk = self._talks.get(id(session))
        if talk is None:  # a session whose connect stage we did not see (local submission)
            if not covers(self.config, session):
                return None, None
            talk = Conversation(session)
            self._talks[id(session)] = talk
            reply = await self._guard(talk, "connect", None, self._open(talk))
            if reply is None and session.helo and not talk.failed and not talk.retired:
                reply = await self._guard(talk, "helo", None, self._helo(talk, session.helo))
            if reply is not None and where != "helo":
                return None, reply
        if talk.retired:
            return None, None
        if talk.failed:
            policy_reply = None if where in NO_POLICY_STAGES else self._policy_reply()
            return None, policy_reply
        if talk.session_reply is not None:
            return None, talk.session_reply
        return talk, None

    async def _open(self, talk: Conversation) -> Reply | None:
        conn = await Connection.open(self.endpoint, self.config.timeouts)
        talk.conn = conn
        await conn.negotiate(self.offer, self.configured)
        session = talk.session
        hostname, family, port, address = self._connect_info(session)
        packet = codec.encode_connect(hostname, family, port, address)
        return await self._step(talk, Step.CONNECT, Stage.CONNECT, MacroScope(session), packet)

    @staticmethod
    def _connect_info(session: SessionInfo) -> tuple[bytes, bytes, int, bytes]:
        address = session.client_address
        if session.is_local:  # like Postfix: local submission looks like localhost
            return b"localhost", codec.FAMILY_INET, 0, b"127.0.0.1"
        if address.lower().startswith("::ffff:") and "." in address:
            address = address[7:]  # an IPv4-mapped peer is reported as IPv4 (Sendmail)
        if ":" in address:
            name = session.client_name or f"[IPv6:{address}]"
            return name.encode(), codec.FAMILY_INET6, session.client_port, address.encode()
        name = session.client_name or f"[{address}]"
        return name.encode(), codec.FAMILY_INET, session.client_port, address.encode()

    async def _helo(self, talk: Conversation, name: str) -> Reply | None:
        await self._abort(talk)
        packet = codec.encode_helo(name.encode("utf-8", "surrogateescape"))
        return await self._step(talk, Step.HELO, Stage.HELO, MacroScope(talk.session), packet)

    async def _mail(self, talk: Conversation, txn: Transaction) -> Reply | None:
        await self._abort(talk)
        talk.in_message, talk.message_done = True, False
        if txn.discard:
            return None
        args = [p.encode("utf-8", "surrogateescape") for p in txn.raw_mail_params]
        sender = (txn.raw_sender or "<>").encode("utf-8", "surrogateescape")
        packet = codec.encode_mail(sender, args)
        return await self._step(
            talk, Step.MAIL, Stage.ENVFROM, MacroScope(talk.session, txn), packet
        )

    async def _rcpt(
        self, talk: Conversation, txn: Transaction, recipient: Recipient, raw_params: list[str]
    ) -> Reply | None:
        path = f"<{recipient.address}>".encode("utf-8", "surrogateescape")
        args = [p.encode("utf-8", "surrogateescape") for p in raw_params]
        scope = MacroScope(talk.session, txn, recipient)
        return await self._step(
            talk, Step.RCPT, Stage.ENVRCPT, scope, codec.encode_rcpt(path, args)
        )

    def _macros(self, talk: Conversation, stage: Stage | None, scope: MacroScope) -> bytes:
        assert talk.conn is not None and talk.conn.options is not None
        options = talk.conn.options
        if stage is None or not options.sends_macros(stage):
            return b""
        names = options.macro_names(stage)
        return codec.encode_macros(stage, values(names, self.source, scope)) if names else b""

    async def _step(
        self,
        talk: Conversation,
        step: Step,
        stage: Stage | None,
        scope: MacroScope,
        packet: bytes,
        where: str | None = None,
    ) -> Reply | None:
        """Macros (sent even when the filter skips the step: with the next command then),
        the command, its verdict."""
        conn = talk.conn
        assert conn is not None and conn.options is not None
        macros = self._macros(talk, stage, scope)
        if not conn.options.sends(step):
            if macros:
                conn.defer(macros)
            return None
        response = await conn.command(macros, packet, wait=conn.options.waits(step))
        if response is None:
            return None
        return await self._decide(talk, where or step.name.lower(), response, scope.txn)

    async def _decide(
        self, talk: Conversation, where: str, response: codec.Response, txn: Transaction | None
    ) -> Reply | None:
        """A verdict: None to go on, or the reply for the client. Bad ones raise MilterError."""
        reply: Reply | None
        if isinstance(response, codec.ReplyCode):
            reply = verdict.parse_reply_text(response.text)
            if reply is None or reply.positive:
                raise MilterError(f"invalid reply text {response.text[:80]!r}")
        elif isinstance(response, Simple):
            code = response.code
            if code == codec.CONTINUE:
                return None
            if code == codec.ACCEPT:
                # at UNKNOWN too: libmilter is then done with the message (state HELO)
                await self._accepted(talk, where)
                return None
            if code == codec.DISCARD and txn is not None and where not in SESSION_STAGES:
                txn.discard, talk.message_done = True, True
                maillog.emit(txn.queue_id, milter=self.name, stage=where, event="discard")
                return None
            if code in (codec.DISCARD, codec.SKIP):  # out of place, harmless: Postfix ignores it
                self._ignored(txn, where, "DISCARD" if code == codec.DISCARD else "SKIP")
                return None
            reply = {
                codec.REJECT: verdict.rejected(end_of_data=where in END_OF_DATA_STAGES),
                codec.TEMPFAIL: verdict.TEMPFAIL,
                codec.SHUTDOWN: verdict.SHUTDOWN,
            }.get(code)
            if reply is None:
                raise MilterError(f"reply {code.decode(errors='replace')!r} not allowed at {where}")
        else:
            raise MilterError(f"{type(response).__name__} not allowed at {where}")
        queue_id = txn.queue_id if txn is not None else None
        maillog.emit(queue_id, milter=self.name, stage=where, reject=str(reply))
        if where in SESSION_STAGES:
            talk.session_reply = reply
            if where == "connect" and reply.code != 421:
                return None  # the greeting stays 220; HELO and MAIL get the refusal
        return reply

    def _ignored(self, txn: Transaction | None, where: str, what: str) -> None:
        maillog.emit_fields(
            txn.queue_id if txn is not None else None,
            {"milter": self.name, "stage": where, "ignored": f"{what} not allowed at {where}"},
            logging.WARNING,
        )

    async def _accepted(self, talk: Conversation, where: str) -> None:
        if where not in SESSION_STAGES:
            talk.message_done = True
            return
        talk.retired = True  # done with this session: QUIT now, as Sendmail does
        if talk.conn is not None:
            await talk.conn.quit()

    async def _abort(self, talk: Conversation) -> None:
        """ABORT to a filter that is inside a message that will not reach its end."""
        if not talk.in_message:
            return
        talk.in_message = talk.message_done = False
        conn = talk.conn
        if conn is None or conn.closed or talk.failed or talk.retired:
            return
        try:
            await conn.send(codec.encode_abort())
        except MilterError as exc:
            self._fail(talk, "abort", exc, None)

    # ---- end of message -----------------------------------------------------------------
    async def _content(self, talk: Conversation, txn: Transaction) -> Reply | None:
        conn = talk.conn
        assert conn is not None and conn.options is not None and txn.headers is not None
        options = conn.options
        scope = MacroScope(talk.session, txn)
        reply = await self._headers(talk, txn)
        if reply is not None or talk.message_done:
            return reply
        reply = await self._step(talk, Step.EOH, Stage.EOH, scope, codec.encode_eoh())
        if reply is not None or talk.message_done:
            return reply
        if options.sends(Step.BODY):
            reply = await self._body(talk, txn)
            if reply is not None or talk.message_done:
                return reply
        edit = Edit.of(txn, options, self.name)
        endings = LineEndings()

        def take(mod: codec.Modification) -> None:
            if isinstance(mod, codec.ReplaceBody):
                edit.replace_body(mod.data, endings, self.spool_dir)
            else:
                edit.apply(mod)

        try:
            response = await conn.end_of_message(
                self._macros(talk, Stage.EOM, scope), codec.encode_eom(), on_modification=take
            )
            talk.in_message = False
            reply = await self._decide(talk, "eom", response, txn)
            if reply is None and not txn.discard:
                edit.finish_body(endings)
                edit.commit(txn)
                self._after_commit(txn)
        finally:
            edit.discard_body()
        return reply

    def _after_commit(self, txn: Transaction) -> None:
        if not txn.recipients:
            txn.discard = True  # every recipient was removed: nothing left to deliver
            maillog.emit(txn.queue_id, milter=self.name, event="all recipients removed")
        elif txn.hold_reason:
            maillog.emit(txn.queue_id, milter=self.name, quarantine=txn.hold_reason)

    async def _headers(self, talk: Conversation, txn: Transaction) -> Reply | None:
        conn = talk.conn
        assert conn is not None and conn.options is not None and txn.headers is not None
        options = conn.options
        if not options.sends(Step.HEADER):
            return None
        hidden = own_trace(txn.headers, txn.queue_id)
        wait = options.waits(Step.HEADER)
        batch: list[bytes] = []
        size = 0
        for header in txn.headers:
            if header is hidden:
                continue
            name = header.name.encode("ascii", "replace")
            packet = codec.encode_header(name, header_for_filter(header, options.leading_space))
            if wait:
                reply = await self._decide(talk, "header", await conn.verdict_for(packet), txn)
                if reply is not None or talk.message_done:
                    return reply
                continue
            batch.append(packet)
            size += len(packet)
            if size >= _SEND_BATCH:
                await conn.send(*batch)
                batch, size = [], 0
        if batch:
            await conn.send(*batch)
        return None

    async def _body(self, talk: Conversation, txn: Transaction) -> Reply | None:
        conn = talk.conn
        assert conn is not None and conn.options is not None and txn.body is not None
        options = conn.options
        wait = options.waits(Step.BODY)
        batch: list[bytes] = []
        size = 0
        for chunk in txn.body.chunks(codec.MAX_DATA):
            packet = codec.encode_body(chunk)
            if not wait:
                batch.append(packet)
                size += len(packet)
                if size >= _SEND_BATCH:
                    await conn.send(*batch)
                    batch, size = [], 0
                continue
            response = await conn.verdict_for(packet)
            if response == Simple(codec.SKIP):  # even if not negotiated: it asks for less
                return None
            reply = await self._decide(talk, "body", response, txn)
            if reply is not None or talk.message_done:
                return reply
        if batch:
            await conn.send(*batch)
        return None

    # ---- failure ------------------------------------------------------------------------
    async def _guard(
        self,
        talk: Conversation,
        where: str,
        txn: Transaction | None,
        work: Awaitable[Reply | None],
    ) -> Reply | None:
        metrics.milter_call(self.name, where)
        try:
            return await work
        except (MilterError, ModificationError, ValueError) as exc:
            return self._fail(talk, where, exc, txn)

    def _fail(
        self, talk: Conversation, where: str, exc: Exception, txn: Transaction | None
    ) -> Reply | None:
        talk.failed = True
        metrics.milter_failure(self.name, where, exc)
        if talk.conn is not None:
            talk.conn.close()  # no QUIT: the conversation is in an unknown state
        policy = self.config.on_failure
        queue_id = txn.queue_id if txn is not None else None
        fields: dict[str, object] = {
            "milter": self.name,
            "stage": where,
            "failed": str(exc),
            "action": policy.value,
        }
        maillog.emit_fields(queue_id, fields, logging.WARNING)  # the one line for this failure
        return None if where in NO_POLICY_STAGES else self._policy_reply()

    def _policy_reply(self) -> Reply | None:
        return verdict.failure_reply(self.config.on_failure)
