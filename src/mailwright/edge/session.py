"""One client connection: drives the sans-I/O protocol core over its ``edge.stream``.

For each decision event it asks the policy pipeline, streams the message
content into a header parser and a spool (bounded memory whatever the size),
checks the hop count, prepends ``Received:`` (and, for trusted clients, adds a missing
``From:``, ``Date:`` or ``Message-ID:``), and answers ``250`` to the end of
data only after the queue commit (fsync) has returned. A failed commit answers
``451 4.3.0`` (``452 4.3.1`` when the disk is full) and nothing is kept.

On an LMTP listener, while the daemon delivers in the background, the end of data
then waits (up to ``server.timeouts.lmtp_delivery``) for the local deliveries of the
message and answers each local recipient with its own outcome (``manager.answers``):
``250`` once delivered, the failure's ``4xx``/``5xx`` otherwise (we keep no copy for
it, and send no bounce). Relayed recipients, and local ones still undelivered at the
deadline, are answered ``250`` as the message is committed: they are ours.

Every refusal is logged and counted (``mailwright_rejections_total``): policy
refusals here, and those the protocol core answers on its own (bad MAIL/RCPT
syntax, SIZE, too many errors, improper pipelining) as it reports them. A client
too slow with its message content (``server.min_data_rate``) or silent too long
gets ``421 4.4.2``, also logged and counted.

Trusts nothing the client sends. Settings: ``server.*`` (limits, timeouts,
``min_data_rate``), ``hostname``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time

from mailwright.config.schema import Listener, ListenerKind
from mailwright.core.envelope import Envelope
from mailwright.core.headers import HeaderList, HeaderParser, add_missing_origin_fields
from mailwright.core.queueid import new_queue_id
from mailwright.core.reply import Reply
from mailwright.core.trace import hop_count, protocol_name, received
from mailwright.core.watchdog import ReadWatchdog
from mailwright.edge.context import EdgeContext
from mailwright.edge.pacing import CommandClock, DataClock, early_input
from mailwright.edge.security import SessionSecurity, redact
from mailwright.edge.stream import SessionStream
from mailwright.manager.answers import Waiting
from mailwright.observability import maillog, metrics
from mailwright.policy.hooks import SessionInfo, Transaction
from mailwright.queue.spool import Spool
from mailwright.queue.store import NewMessage, Origin, StoreError, StoreFullError
from mailwright.smtp import events as ev
from mailwright.smtp.server import ServerConnection, State

log = logging.getLogger("mailwright.edge")

READ_SIZE = 256 * 1024
COMMIT_FAILED = Reply.of(451, "4.3.0", "Local error in processing, try again later")
DISK_FULL = Reply.of(452, "4.3.1", "Insufficient system storage, try again later")
TIMEOUT = "Timeout waiting for client input, closing connection"


def too_many_hops(count: int) -> Reply:
    return Reply.of(554, "5.4.6", f"Too many hops ({count} Received headers): mail loop?")


class Session:
    def __init__(
        self,
        reader: SessionStream,
        writer: SessionStream,
        ctx: EdgeContext,
        listener: Listener,
        info: SessionInfo,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.ctx = ctx
        self.listener = listener
        self.info = info
        self.conn = ServerConnection(ctx.server_settings(listener))
        self.security = SessionSecurity(ctx.security, listener, info, self.conn)
        self.security.configure()
        self.clock = CommandClock(ctx.settings.server.timeouts.command)
        server = ctx.settings.server
        self.data_clock = DataClock(server.timeouts.data_block, server.min_data_rate)
        self.txn: Transaction | None = None
        self._parser: HeaderParser | None = None
        self._spool: Spool | None = None
        self._closing = False
        self._reading = False
        self._spool_error: OSError | None = None
        # set by run(): the session's task, its loop, and the read timeout (one timer per
        # session, moved lazily: core.watchdog)
        self._task: asyncio.Task[None] | None = None
        self._event_loop: asyncio.AbstractEventLoop
        self._watchdog: ReadWatchdog | None = None

    @property
    def relay(self) -> str:
        return maillog.relay_text(self.info.client_name, self.info.client_address)

    # ---- main loop ----------------------------------------------------------------------
    async def run(self) -> None:
        self._task = asyncio.current_task()
        self._event_loop = asyncio.get_running_loop()  # every read asks its time
        self._watchdog = ReadWatchdog(self._event_loop)
        try:
            await self._greet()
            await self._loop()
        except TimeoutError:
            await self._timed_out()
        except (ConnectionError, asyncio.IncompleteReadError):
            maillog.emit(self._qid(), event="lost input channel", relay=self.relay)
        except asyncio.CancelledError:
            # shutdown while idle, or the grace period is over
            if self.txn is not None:
                maillog.emit(self._qid(), event="shutdown: transaction abandoned", relay=self.relay)
            self.conn.close(Reply.of(421, "4.3.2", "Service shutting down, closing connection"))
            await self._flush_quietly()
        finally:
            self._watchdog.close()
            await self._abort("disconnect")
            await self.ctx.pipeline.close(self.info)
            self._close_transport()

    async def _timed_out(self) -> None:
        """The read deadline passed: 421 4.4.2, logged and counted as a refusal."""
        state = self.conn.state
        clock = self.data_clock
        content_deadline = clock.deadline  # set in DATA, or while a message comes in BDAT chunks
        in_content = content_deadline is not None
        host = self.ctx.settings.hostname
        rate = clock.min_rate
        text = f"{host} {TIMEOUT}"
        now = asyncio.get_running_loop().time()
        if content_deadline is not None and rate and now >= content_deadline:
            text = f"{host} Message content too slow (under {rate} octets/s), closing connection"
        reply = Reply.of(421, "4.4.2", text)
        self.conn.close(reply)
        stage = "data" if in_content else "command"
        metrics.rejected(stage, reply)
        maillog.emit(
            self._qid(),
            reason="timeout",
            relay=self.relay,
            state=state.name,
            received=clock.received if in_content else None,
            reject=str(reply),
        )
        await self._flush(final=True)

    def _log_refusals(self) -> None:
        """Log and count what the protocol core refused on its own (Sendmail-style lines)."""
        for refusal in self.conn.take_refusals():
            metrics.rejected(refusal.stage, refusal.reply)
            if refusal.arg is not None:
                maillog.rejected(
                    self._qid(),
                    stage=refusal.stage,
                    arg=refusal.arg,
                    relay=self.relay,
                    reply=str(refusal.reply),
                )
            else:
                maillog.emit(
                    self._qid(), event=refusal.reason, relay=self.relay, reject=str(refusal.reply)
                )

    def stop(self) -> bool:
        """Shutdown: close now if idle (True), else at the end of the current transaction."""
        self._closing = True
        return self._idle

    @property
    def _idle(self) -> bool:
        return self._reading and self.conn.state is State.COMMAND and not self.conn.in_transaction

    async def _flush_quietly(self) -> None:
        try:
            self.writer.write(self.conn.data_to_send())
            async with asyncio.timeout(2):
                await self.writer.drain()
        except (OSError, TimeoutError, asyncio.CancelledError):
            pass

    async def _greet(self) -> None:
        if self.security.implicit:
            self.security.implicit_tls(self.writer)  # RFC 8314: the listener's handshake
        names = self.ctx.client_names
        if names is not None and not self.info.is_local and not self.info.client_name:
            self.info.client_name = await names.lookup(self.info.client_address)
        reply = await self.ctx.pipeline.connect(self.info)
        if (reply is None or reply.positive) and not self.info.trusted_relay:
            early = await early_input(self.reader, self.ctx.settings.server.greet_pause)
            if early:
                maillog.emit(None, event="pre-greeting traffic", relay=self.relay)
                self.conn.receive(early)
        self.conn.greet(reply if reply is not None and not reply.positive else None)
        metrics.greeted(reply)
        await self._flush()

    async def _loop(self) -> None:
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is None:
                if conn.state is State.CLOSED:
                    await self._flush(final=True)
                    return
                await self._flush()
                if self._closing and conn.state is State.COMMAND and not conn.in_transaction:
                    conn.close(Reply.of(421, "4.3.2", "Service shutting down, closing connection"))
                    continue
                data = await self._read()
                if not data:
                    maillog.emit(self._qid(), event="lost input channel", relay=self.relay)
                    return
                conn.receive(data)
                continue
            if isinstance(event, ev.Content):
                self._content(event.data)
            elif isinstance(event, ev.Closed):
                await self._flush(final=True)
                return
            else:
                await self._dispatch(event)

    async def _read(self) -> bytes:
        """The next bytes from the client; TimeoutError when none come in time."""
        loop = self._event_loop
        conn = self.conn
        content = conn.state in (State.DATA, State.BDAT)
        # message content, whole, must arrive in time at server.min_data_rate at least; a
        # message in BDAT chunks is one request (else "BDAT 1" + 1 octet at a time drips)
        message = content or (conn.bdat_in_progress and self.data_clock.min_rate > 0)
        if not message:
            self.data_clock.stop()
        if content:
            deadline = self.data_clock.before_read(loop.time())
        else:
            # a whole command line must arrive in time: a byte at a time does not help
            deadline = self.clock.before_read(conn.partial_input, loop.time())
            if message:
                deadline = min(deadline, self.data_clock.before_read(loop.time()))
        watchdog = self._watchdog
        assert watchdog is not None  # run() made it
        watchdog.start(deadline, self._task)
        self._reading = True
        try:
            data = await self.reader.read(READ_SIZE)
            if message:
                self.data_clock.after_read(len(data), loop.time())
            return data
        except asyncio.CancelledError:
            if watchdog.expired():
                raise TimeoutError from None
            raise
        finally:
            self._reading = False
            watchdog.stop()

    async def _flush(self, final: bool = False) -> None:
        self._log_refusals()
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)
        if final or self.writer.transport.get_write_buffer_size() > 65536:
            async with asyncio.timeout(self.ctx.settings.server.timeouts.command):
                await self.writer.drain()

    def _close_transport(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()

    def _qid(self) -> str | None:
        return self.txn.queue_id if self.txn else None

    # ---- events -------------------------------------------------------------------------
    async def _dispatch(self, event: ev.Event) -> None:
        if isinstance(event, ev.Hello):
            await self._hello(event)
        elif isinstance(event, ev.MailFrom):
            await self._mail(event)
        elif isinstance(event, ev.RcptTo):
            await self._rcpt(event)
        elif isinstance(event, ev.DataStart):
            await self._data(event)
        elif isinstance(event, ev.ContentEnd):
            await self._content_end(event)
        elif isinstance(event, ev.Reset):
            await self._abort(event.reason)
        elif isinstance(event, ev.StartTls):
            await self._starttls()
        elif isinstance(event, ev.Auth):
            await self.security.auth(event)
        elif isinstance(event, ev.Unknown):
            log.debug("unknown command from %s: %r", self.relay, redact(event.line[:80]))
            # a milter's reply to UNKNOWN replaces the 500 (Postfix); None: the 500
            self.conn.respond(await self.ctx.pipeline.unknown(self.info, event.line))

    async def _starttls(self) -> None:
        if not self.security.may_start_tls():
            self.conn.respond(Reply.of(454, "4.7.0", "TLS not available due to temporary reason"))
            return
        self.conn.respond(None)  # 220 2.0.0 Ready to start TLS
        await self._flush(final=True)
        await self.security.start_tls(self.writer)

    async def _hello(self, event: ev.Hello) -> None:
        await self._abort("new HELO")
        reply = await self.ctx.pipeline.helo(self.info, event.name)
        if reply is not None and not reply.positive:
            self._reject("helo", event.name, reply)
            self.conn.respond(reply)
            return
        self.info.helo = event.name
        self.info.esmtp = event.verb != "HELO"
        self.conn.respond(None)

    async def _mail(self, event: ev.MailFrom) -> None:
        txn = Transaction(
            queue_id=new_queue_id(),
            sender=event.sender,
            params=event.params,
            raw_sender=event.raw_path,
            raw_mail_params=event.raw_params,
        )
        reply = await self.ctx.pipeline.mail(self.info, txn)
        if reply is not None and not reply.positive:
            # the id the transaction would have had: grep finds the refusal too
            maillog.rejected(
                txn.queue_id, stage="mail", arg=event.raw_path, relay=self.relay, reply=str(reply)
            )
            self.conn.respond(reply)
            return
        self.txn = txn
        maillog.current_queue_id.set(txn.queue_id)  # other lines meanwhile carry it too
        self.conn.respond(None)

    async def _rcpt(self, event: ev.RcptTo) -> None:
        txn = self.txn
        assert txn is not None
        reply = await self.ctx.pipeline.rcpt(self.info, txn, event.recipient, event.raw_params)
        if reply is not None and not reply.positive:
            self._reject("rcpt", event.raw_path, reply)
            self.conn.respond(reply)
            return
        txn.recipients.append(event.recipient)
        self.conn.respond(None)

    async def _data(self, event: ev.DataStart) -> None:
        txn = self.txn
        assert txn is not None
        reply = await self.ctx.pipeline.data(self.info, txn)
        if reply is not None and not reply.positive:
            self._reject("data", None, reply)
            self.conn.respond(reply)
            return
        self._parser = HeaderParser(self.ctx.settings.server.max_header_size)
        self._spool = Spool(self.ctx.spool_dir)
        # what is queued of it passed the content checks: a bare CR or LF is refused (the
        # default) or made CRLF (``normalize``); a filter's new body is another spool
        self._spool.crlf_lines = True
        self.conn.respond(None)

    def _content(self, data: bytes) -> None:
        parser, spool = self._parser, self._spool
        if parser is None or spool is None:
            return  # content of a refused transaction is consumed by the core
        body = parser.feed(data)
        if body and self._spool_error is None:
            try:
                spool.write(body)
            except OSError as exc:  # disk full while spilling a large body
                self._spool_error = exc

    async def _content_end(self, event: ev.ContentEnd) -> None:
        txn, parser, spool = self.txn, self._parser, self._spool
        assert txn is not None and parser is not None and spool is not None
        rest = parser.close()
        if rest:
            try:
                spool.write(rest)
            except OSError as exc:
                self._spool_error = exc
        problem = event.problem or self._spool_problem() or self._check_headers(parser.headers)
        reply: Reply | list[Reply]
        if problem is None:
            txn.headers = self._with_trace(txn, parser.headers)
            txn.body = spool
            reply = await self._finish_and_answer(txn, spool)
        else:
            reply = problem
            self._reject("data", None, reply)
        self._respond_end(reply)
        self._end_transaction()

    def _spool_problem(self) -> Reply | None:
        exc = self._spool_error
        if exc is None:
            return None
        log.error("spool write failed: %s", exc)
        return DISK_FULL if exc.errno == errno.ENOSPC else COMMIT_FAILED

    def _check_headers(self, headers: HeaderList) -> Reply | None:
        hops = hop_count(headers)
        if hops > self.ctx.settings.server.max_hop_count:
            return too_many_hops(hops)
        return None

    def _protocol(self, txn: Transaction) -> str:
        info = self.info
        return protocol_name(
            esmtp=info.esmtp,
            tls=bool(info.tls_version),
            auth=bool(info.auth_user),
            utf8=txn.params.smtputf8,
            lmtp=self.listener.kind is ListenerKind.LMTP,
            local=info.is_local,
        )

    def _with_trace(self, txn: Transaction, headers: HeaderList) -> HeaderList:
        info = self.info
        only = str(txn.recipients[0].address) if len(txn.recipients) == 1 else None
        tls = f"using {info.tls_version} with cipher {info.tls_cipher}" if info.tls_version else ""
        trace = received(
            helo=info.helo,
            client_name=info.client_name,
            client_address=info.client_address,
            hostname=self.ctx.settings.hostname,
            protocol=self._protocol(txn),
            queue_id=txn.queue_id,
            recipient=only,
            tls=tls,
            local_user=info.local_user,
        )
        out = HeaderList([trace, *headers])
        if self._completes_headers():
            sender = "" if txn.sender is None else str(txn.sender)
            add_missing_origin_fields(out, sender, self.ctx.settings.hostname)
        return out

    def _completes_headers(self) -> bool:
        """Trusted network clients (loopback, ``relay.networks``, authenticated) get a
        missing From/Date/Message-ID added, as Postfix's ``local_header_rewrite_clients``;
        strangers never (local submissions: ``LocalSubmissionPolicy``; LMTP: never)."""
        info = self.info
        if info.is_local or self.listener.kind is ListenerKind.LMTP:
            return False
        return info.trusted_relay or bool(info.auth_user)

    async def _finish(self, txn: Transaction, spool: Spool) -> Reply:
        """End-of-message policy, then the durable commit; returns the reply to send."""
        reply = await self.ctx.pipeline.message(self.info, txn)
        if reply is not None and not reply.positive:
            self._reject("eom", None, reply)
            return reply
        if txn.discard:
            maillog.emit(txn.queue_id, event="discarded", relay=self.relay)
            return Reply.of(250, "2.0.0", f"{txn.queue_id} Message accepted for delivery")
        assert txn.headers is not None and txn.body is not None
        message = NewMessage(
            queue_id=txn.queue_id,
            envelope=Envelope(txn.sender, txn.params, list(txn.recipients)),
            headers=txn.headers,
            body=txn.body,
            received_at=time.time(),
            origin=self._origin(txn),
            hold_reason=txn.hold_reason,
        )
        try:
            await self.ctx.enqueue(message)
        except StoreFullError:
            return self._not_committed(txn, DISK_FULL, "queue full")
        except StoreError as exc:
            return self._not_committed(txn, COMMIT_FAILED, f"queue commit failed: {exc}")
        except Exception:
            log.exception("%s: queue commit failed", txn.queue_id)
            return self._not_committed(txn, COMMIT_FAILED, "queue commit failed")
        self._log_accepted(message, txn.log_fields)
        return Reply.of(250, "2.0.0", f"{txn.queue_id} Message accepted for delivery")

    def _not_committed(self, txn: Transaction, reply: Reply, reason: str) -> Reply:
        metrics.rejected("data", reply)  # a queue in trouble shows in the refusals' counts
        maillog.emit_fields(
            txn.queue_id,
            {"relay": self.relay, "reject": str(reply), "reason": reason},
            level=logging.ERROR,
        )
        return reply

    def _origin(self, txn: Transaction) -> Origin:
        info = self.info
        return Origin(
            protocol=self._protocol(txn),
            client_address=info.client_address,
            client_name=info.client_name,
            helo=info.helo,
            auth_user=info.auth_user,
            local_user=info.local_user,
        )

    def _log_accepted(self, message: NewMessage, checks: dict[str, str]) -> None:
        metrics.received(self.info.listener_name)
        if not maillog.log.isEnabledFor(logging.INFO):
            return  # the fields cost ~30 us per message to gather; nobody would see them
        msgid = message.headers.get("Message-ID")
        if message.envelope.params.requiretls:  # RFC 8689: grep-able as the sender asked
            checks = {**checks, "requiretls": "yes"}
        maillog.accepted(
            message.queue_id,
            sender=message.envelope.sender_text,
            size=message.size,
            nrcpts=len(message.envelope.recipients),
            msgid=msgid.text if msgid else None,
            proto=message.origin.protocol,
            daemon=self.info.listener_name,
            relay=self.relay,
            bodytype=message.envelope.params.body.value
            if message.envelope.params.body.value != "7BIT"
            else None,
            authid=self.info.auth_user or None,
            checks=checks,
        )

    def _respond_end(self, reply: Reply | list[Reply]) -> None:
        self.conn.respond(reply)

    # ---- LMTP: answer local recipients once delivered (RFC 2033, as mail.local) ----------
    def _watch_local_deliveries(self, txn: Transaction) -> Waiting | None:
        """Before the commit: tell the queue manager we wait for the local recipients."""
        deliveries = self.ctx.deliveries
        wait = self.ctx.settings.server.timeouts.lmtp_delivery
        if self.listener.kind is not ListenerKind.LMTP or deliveries is None or not wait:
            return None
        local = {
            i: str(r.address)
            for i, r in enumerate(txn.recipients)
            if deliveries.delivers_locally(str(r.address))
        }
        return deliveries.answers.watch(txn.queue_id, local) if local else None

    async def _finish_and_answer(self, txn: Transaction, spool: Spool) -> Reply | list[Reply]:
        """``_finish``; on LMTP then one reply per recipient: a local one's own outcome
        once delivered, else (relayed, or past the deadline) the commit's reply."""
        waiting = self._watch_local_deliveries(txn)
        if waiting is None:
            return await self._finish(txn, spool)
        deliveries = self.ctx.deliveries
        assert deliveries is not None
        recipients = list(txn.recipients)
        try:
            reply = await self._finish(txn, spool)
            if not reply.positive or txn.discard:
                return reply  # nothing was queued
            wait = self.ctx.settings.server.timeouts.lmtp_delivery
            if txn.hold_reason or txn.recipients != recipients:
                wait = 0.0  # held, or a milter changed the recipients: no waiting
            outcomes = await waiting.outcomes(wait)
        finally:
            deliveries.answers.forget(waiting)
        return [outcomes.get(i, reply) for i in range(len(recipients))]

    def _reject(self, stage: str, arg: str | None, reply: Reply) -> None:
        metrics.rejected(stage, reply)
        maillog.rejected(self._qid(), stage=stage, arg=arg, relay=self.relay, reply=str(reply))

    def _end_transaction(self) -> None:
        maillog.current_queue_id.set(None)
        if self._spool is not None:
            self._spool.close()
        self._spool = None
        self._spool_error = None
        self._parser = None
        self.txn = None

    async def _abort(self, reason: str) -> None:
        if self.txn is None:
            return
        txn = self.txn
        self._end_transaction()
        await self.ctx.pipeline.reset(self.info, txn)
