"""One live SMTP/LMTP client connection: asyncio streams driving ``smtp.client``.

``ClientSession.open`` connects (TCP or a Unix socket), reads the greeting,
says EHLO/LHLO, negotiates STARTTLS as the ``TlsPolicy`` asks and logs in with
the ``Credentials`` it was given (SMTP AUTH, refused without TLS unless
allowed; a refused login is a ``SessionError`` with 4.7.0); ``send`` runs
one mail transaction, streaming the content (never the whole message in
memory); ``quit`` and ``abort`` end it. Every wait has the RFC 5321 4.5.3.2
timeout of the command it waits for (``ClientTimeouts``); a timeout or an I/O
error settles the open recipients with a temporary failure (4.4.2), never an
exception escaping to the caller. Connection-level failures raise
``SessionError`` carrying the reply to report. Trusts nothing from the peer
(the protocol core checks every byte). Reads its settings from the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mailwright.core.reply import Reply
from mailwright.core.watchdog import ReadWatchdog
from mailwright.delivery.agent import NotQueuedError, queued
from mailwright.routing.tlsrpt import Result
from mailwright.smtp.client import (
    Authenticated,
    AuthFailed,
    AuthSkipped,
    ClientConnection,
    ClientEvent,
    ClientSettings,
    Closed,
    Credentials,
    Extensions,
    Phase,
    SendContent,
    SessionFailed,
    SessionReady,
    State,
    TlsReady,
    TlsRefused,
    Transaction,
    TransactionDone,
    TransactionResult,
)

READ_SIZE = 256 * 1024
WRITE_SIZE = 64 * 1024  # content is written in pieces of about this size
_ENCODING_DER = 2  # _ssl.ENCODING_DER, for the private chain getter of Python < 3.13


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    """Seconds; defaults are RFC 5321 4.5.3.2 (RSET and QUIT: Postfix's shorter values)."""

    connect: float = 30.0
    greeting: float = 300.0
    helo: float = 300.0
    starttls: float = 300.0  # the reply to STARTTLS and the handshake
    mail: float = 300.0
    rcpt: float = 300.0
    data_init: float = 120.0
    data_block: float = 180.0  # each write of content, and each BDAT reply
    data_end: float = 600.0
    rset: float = 20.0
    quit: float = 10.0

    def for_phase(self, phase: Phase | None) -> float:
        value: float = getattr(self, _PHASE_TIMEOUTS.get(phase, "helo"))
        return value


# the timeout of each phase of the dialogue, by the ClientTimeouts field that holds it
_PHASE_TIMEOUTS: dict[Phase | None, str] = {
    Phase.GREETING: "greeting",
    Phase.HELLO: "helo",
    Phase.STARTTLS: "starttls",
    Phase.AUTH: "helo",
    Phase.RSET: "rset",
    Phase.MAIL: "mail",
    Phase.RCPT: "rcpt",
    Phase.DATA: "data_init",
    Phase.BDAT: "data_block",
    Phase.END: "data_end",
    Phase.QUIT: "quit",
}


# the server's certificate chain (DER, its own first) -> None when good, else why not
ChainCheck = Callable[[list[bytes]], "str | None"]


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """STARTTLS for one destination: ``verify`` and ``check`` imply ``require``."""

    starttls: bool = True  # use STARTTLS when the peer offers it
    require: bool = False  # no TLS, no delivery (4.7.5)
    verify: bool = False  # the certificate must verify for the host name
    # DANE (delivery.dane): the chain the server presented must pass this, else 4.7.5;
    # checked after the handshake, before anything else is sent
    check: ChainCheck | None = None
    check_name: str = ""  # what passing it is called in the log ("dane-verified")

    @property
    def required(self) -> bool:
        return self.require or self.verify or self.check is not None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: a host name and address, or a Unix socket."""

    name: str  # MX host name: logs, TLS server name
    address: str = ""  # IP address as text
    port: int = 25
    socket_path: str = ""
    dnssec: bool = False  # MX and address records validated (``MailHost.secure``): DANE
    canonical: str = ""  # the CNAME-expanded name (``MailHost.canonical``): DANE's first

    @property
    def remote_mta(self) -> str:
        if self.socket_path:
            return self.socket_path
        return f"{self.name} [{self.address}]"

    @property
    def key(self) -> str:
        return self.socket_path or f"[{self.address}]:{self.port}"


class SessionError(Exception):
    """The session could not be set up or was lost; ``reply`` is what to report."""

    def __init__(
        self,
        reply: Reply,
        tls_handshake: bool = False,
        tls_result: str = "",
        tls_reason: str = "",
    ) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.tls_handshake = tls_handshake  # worth one more try without STARTTLS
        # a TLS failure, as an RFC 8460 result type (routing.tlsrpt.Result); "" otherwise
        self.tls_result = tls_result
        # and what failed, in a few stable words (RFC 8460 failure-reason-code)
        self.tls_reason = tls_reason
        self.local_address = ""  # our end of the connection, when there was one
        self.peer_helo = ""  # the name in the peer's EHLO reply, when it got that far


class ContentError(Exception):
    """Reading the message to send failed (our side, not the peer's)."""


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.removeprefix("IPv6:"))
    except ValueError:
        return False
    return True


def opportunistic_context() -> ssl.SSLContext:
    """TLS that encrypts without checking who is at the other end (RFC 7435)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def peer_chain(ssl_object: Any) -> list[bytes]:
    """The certificates the server sent (DER, its own first), not verified by us.

    Python 3.13 has ``get_unverified_chain``; 3.10-3.12 have it on the ``_ssl`` object
    only; without either, the server's own certificate alone."""
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        chain = getter() or []
        return [c if isinstance(c, bytes) else c.public_bytes(_ENCODING_DER) for c in chain]
    own = ssl_object.getpeercert(binary_form=True)
    return [own] if own else []


# OpenSSL's X509_V_ERR_* codes that RFC 8460 4.3.1 names apart
_EXPIRED = {10}  # CERT_HAS_EXPIRED
_NAME_MISMATCH = {62, 63, 64}  # HOSTNAME_MISMATCH, EMAIL_MISMATCH, IP_ADDRESS_MISMATCH


def verify_result(code: int) -> Result:
    """The RFC 8460 result type of a certificate that did not verify."""
    if code in _EXPIRED:
        return Result.CERTIFICATE_EXPIRED
    if code in _NAME_MISMATCH:
        return Result.CERTIFICATE_HOST_MISMATCH
    return Result.CERTIFICATE_NOT_TRUSTED


STARTTLS_NOT_OFFERED = "STARTTLS not offered"  # the reason of a session without the offer


def handshake_reason(exc: BaseException) -> str:
    """A failed TLS handshake in a few stable words (RFC 8460 failure-reason-code):
    OpenSSL's reason (``WRONG_VERSION_NUMBER``, ``TLSV1_ALERT_HANDSHAKE_FAILURE``), the
    system's text for the error number (``Connection reset by peer``), or what happened;
    never an address or a port."""
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    if isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None):
        return str(exc.reason)  # (an SSLError made in Python code may have none)
    errno = getattr(exc, "errno", None)  # an int from the system; anything from other code
    system = isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError)
    if system and isinstance(errno, int) and errno:
        return os.strerror(errno)
    return f"TLS handshake failed ({type(exc).__name__})"


def _reply(code: int, status: str, text: str) -> Reply:
    return Reply.of(code, status, text)


@dataclass(eq=False, repr=False)  # one live connection: equal only to itself
class ClientSession:
    """A connected, greeted session; use ``open`` to make one."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: ClientConnection
    endpoint: Endpoint
    timeouts: ClientTimeouts
    # learnt as the session goes on
    extensions: Extensions = field(default_factory=Extensions, init=False)
    tls_details: dict[str, str] = field(default_factory=dict, init=False)
    credentials: Credentials | None = field(default=None, init=False)  # what it logged in with
    auth_details: dict[str, str] = field(default_factory=dict, init=False)
    tls_reported: bool = field(default=False, init=False)  # its RFC 8460 result is counted
    # the host name in the peer's EHLO/HELO/LHLO reply (RFC 8460 receiving-mx-helo)
    peer_helo: str = field(default="", init=False)
    # why the session has no TLS although the peer offered STARTTLS ("": it has, or no offer)
    tls_failure: str = field(default="", init=False)
    poolable: bool = field(default=True, init=False)  # False: opened without the policies
    created: float = field(default_factory=time.monotonic, init=False)
    _events: deque[ClientEvent] = field(default_factory=deque, init=False)
    # the read timeout: one timer per connection, moved lazily (made in the running loop)
    _watchdog: ReadWatchdog = field(
        default_factory=lambda: ReadWatchdog(asyncio.get_running_loop()), init=False
    )

    # ---- setting up -----------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        endpoint: Endpoint,
        settings: ClientSettings,
        timeouts: ClientTimeouts,
        tls: TlsPolicy,
        context: ssl.SSLContext | None,
        credentials: Credentials | None = None,
        plaintext_auth: bool = False,
    ) -> ClientSession:
        """Connect, greet, hello, STARTTLS as ``tls`` says, then AUTH with ``credentials``
        (without TLS only if ``plaintext_auth``); raises ``SessionError``."""
        reader, writer = await cls._connect(endpoint, timeouts.connect)
        session = cls(reader, writer, ClientConnection(settings), endpoint, timeouts)
        try:
            await session._hello()
            await session._negotiate_tls(tls, context)
            if credentials is not None:
                await session._authenticate(credentials, plaintext_auth)
        except SessionError as exc:
            exc.local_address = session.local_address
            exc.peer_helo = session.peer_helo
            session.abort()
            raise
        except BaseException:
            session.abort()
            raise
        return session

    @staticmethod
    async def _connect(
        endpoint: Endpoint, timeout: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(timeout):
                if endpoint.socket_path:
                    return await asyncio.open_unix_connection(endpoint.socket_path, limit=READ_SIZE)
                return await asyncio.open_connection(
                    endpoint.address, endpoint.port, limit=READ_SIZE
                )
        except TimeoutError:
            why = f"timed out after {timeout:g}s"
        except OSError as exc:
            why = exc.strerror or str(exc)
        where = (
            endpoint.remote_mta
            if endpoint.socket_path
            else f"{endpoint.remote_mta}:{endpoint.port}"
        )
        raise SessionError(_reply(451, "4.4.1", f"connect to {where}: {why}"))

    async def _hello(self) -> None:
        event = await self.next_event()
        if isinstance(event, SessionReady):
            self.extensions = event.extensions
            words = event.reply.lines[0].split(maxsplit=1) if event.reply.lines else []
            self.peer_helo = words[0] if words else ""
            return
        raise SessionError(self._failure(event))

    async def _negotiate_tls(self, tls: TlsPolicy, context: ssl.SSLContext | None) -> None:
        offered = self.extensions.starttls and not self.endpoint.socket_path
        if tls.starttls and offered and context is not None:
            self.conn.starttls()
            event = await self.next_event()
            if isinstance(event, TlsReady):
                await self._handshake(tls, context)
                await self._hello()
            elif isinstance(event, TlsRefused):
                if tls.required:
                    raise SessionError(
                        _reply(
                            451,
                            "4.7.5",
                            f"TLS is required, but {self.peer} refused STARTTLS: {event.reply}",
                        ),
                        tls_result=Result.STARTTLS_NOT_SUPPORTED,
                        tls_reason=str(event.reply),
                    )
                self.tls_failure = str(event.reply)
            else:
                raise SessionError(self._failure(event))
        if tls.required and not self.conn.tls:
            raise SessionError(
                _reply(451, "4.7.5", f"TLS is required, but {self.peer} does not offer STARTTLS"),
                tls_result=Result.STARTTLS_NOT_SUPPORTED,
                tls_reason=STARTTLS_NOT_OFFERED,
            )

    async def _handshake(self, tls: TlsPolicy, context: ssl.SSLContext) -> None:
        name = self.endpoint.name
        server_hostname = None if is_ip_literal(name) and not tls.verify else name
        try:
            async with asyncio.timeout(self.timeouts.starttls):
                await self.writer.start_tls(context, server_hostname=server_hostname)
        except ssl.SSLCertVerificationError as exc:
            raise SessionError(
                _reply(
                    451,
                    "4.7.5",
                    f"TLS certificate of {self.peer} did not verify: {exc.verify_message}",
                ),
                tls_result=verify_result(exc.verify_code),
                tls_reason=exc.verify_message or handshake_reason(exc),
            ) from None
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            raise SessionError(
                _reply(
                    451,
                    "4.7.5" if tls.required else "4.4.2",
                    f"TLS handshake with {self.peer} failed: {why}",
                ),
                tls_handshake=True,
                tls_result=Result.VALIDATION_FAILURE,
                tls_reason=handshake_reason(exc),
            ) from None
        ssl_object = self.writer.get_extra_info("ssl_object")
        self.conn.tls_started()
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            self.tls_details = {
                "tls": ssl_object.version() or "",
                "tls_cipher": cipher[0] if cipher else "",
                "tls_verified": "yes" if tls.verify else "no",
            }
        if tls.check is not None:
            problem = tls.check(peer_chain(ssl_object)) if ssl_object else "no TLS session"
            if problem is not None:
                raise SessionError(
                    _reply(451, "4.7.5", f"TLS certificate of {self.peer}: {problem}"),
                    tls_result=Result.VALIDATION_FAILURE,  # the caller knows the check's kind
                    tls_reason=problem,
                )
            self.tls_details["tls_verified"] = "yes"
            self.tls_details["tls_check"] = tls.check_name

    async def _authenticate(self, credentials: Credentials, plaintext: bool) -> None:
        self.conn.authenticate(credentials, allow_plaintext=plaintext)
        event = await self.next_event()
        self.credentials = credentials  # even when the peer offers no AUTH: the pool key
        if isinstance(event, Authenticated):
            self.auth_details = {"auth": event.mechanism, "auth_user": credentials.username}
        elif isinstance(event, AuthFailed):
            await self.quit()
            raise SessionError(event.reply)
        elif not isinstance(event, AuthSkipped):
            raise SessionError(self._failure(event))

    def _failure(self, event: ClientEvent | None) -> Reply:
        if isinstance(event, SessionFailed):
            return event.reply
        return _reply(
            451, "4.5.0", f"Protocol error: unexpected {type(event).__name__} from {self.peer}"
        )

    # ---- transactions ---------------------------------------------------------------------
    @property
    def peer(self) -> str:
        return self.endpoint.remote_mta

    @property
    def local_address(self) -> str:
        """Our IP address on this connection ("" for a Unix socket)."""
        name = self.writer.get_extra_info("sockname")
        return str(name[0]) if isinstance(name, tuple) and name else ""

    @property
    def alive(self) -> bool:
        return (
            not self.conn.closed
            and not self.reader.at_eof()
            and not self.writer.transport.is_closing()
        )

    async def send(
        self,
        transaction: Transaction,
        content: Iterable[bytes],
        committed: asyncio.Future[bool] | None = None,
    ) -> TransactionResult:
        """One transaction; ``content`` is the whole message, iterated once, lazily.

        ``committed``: the content waits for it (an early start, ``delivery.agent``); a
        False drops the connection, which makes the peer discard the transaction, and
        raises ``NotQueuedError``. Raises ``ContentError`` (after aborting the session) when
        ``content`` fails.
        """
        self.conn.begin(transaction)
        while True:
            event = await self.next_event()
            if isinstance(event, SendContent):
                if not await queued(committed):
                    self.abort()
                    raise NotQueuedError(f"not sent to {self.peer}: the message was not queued")
                await self._stream(content)
            elif isinstance(event, TransactionDone):
                return event.result
            elif event is None or self.conn.closed:
                raise SessionError(self._failure(event))

    async def _stream(self, content: Iterable[bytes]) -> None:
        conn = self.conn
        chunks = iter(content)
        chunk = self._next_chunk(chunks)
        while chunk is not None and not (conn.content_refused or conn.closed):
            conn.send_content(chunk)
            while conn.content_blocked and not conn.closed:
                await self._flush(self.timeouts.data_block)
                await self._read()
                await self._flush(self.timeouts.data_block)
            if conn.content_refused or conn.closed:
                break
            # one chunk ahead: the last piece goes out in one write with the end of data
            chunk = self._next_chunk(chunks)
            if chunk is not None and conn.output_size >= WRITE_SIZE:
                await self._flush(self.timeouts.data_block)
        conn.end_content()
        await self._flush(self.timeouts.data_block)

    def _next_chunk(self, chunks: Iterator[bytes]) -> bytes | None:
        try:
            return next(chunks, None)
        except Exception as exc:  # the queue could not give us the message
            self.abort()
            raise ContentError(f"{type(exc).__name__}: {exc}") from exc

    async def next_event(self) -> ClientEvent | None:
        """The next event from the core, reading (with the phase's timeout) as needed."""
        conn = self.conn
        while True:
            if self._events:
                return self._events.popleft()
            event = conn.next_event()
            await self._flush(self.timeouts.for_phase(conn.waiting_for))
            if event is not None:
                return event
            if conn.closed or conn.state is State.TLS:
                return None
            await self._read()

    async def _read(self) -> None:
        conn = self.conn
        phase = conn.waiting_for
        timeout = self.timeouts.for_phase(phase)
        watchdog = self._watchdog
        watchdog.start_in(timeout)
        try:
            data = await self.reader.read(READ_SIZE)
        except asyncio.CancelledError:
            if not watchdog.expired():
                raise
            when = phase.waiting_text() if phase else ""
            conn.fail(
                _reply(451, "4.4.2", f"Timeout after {timeout:g}s talking to {self.peer} {when}")
            )
            self.abort()
        except OSError as exc:
            conn.fail(_reply(451, "4.4.2", f"Connection with {self.peer} failed: {exc}"))
            self.abort()
        else:
            if data:
                conn.receive(data)
            else:
                conn.receive_eof()
        finally:
            watchdog.stop()
        while (event := conn.next_event()) is not None:
            self._events.append(event)

    async def _flush(self, timeout: float) -> None:
        out = self.conn.data_to_send()
        if not out or self.writer.transport.is_closing():
            return
        try:
            self.writer.write(out)
            if self.writer.transport.get_write_buffer_size():  # the kernel did not take it all
                async with asyncio.timeout(timeout):
                    await self.writer.drain()
        except TimeoutError:
            self.conn.fail(
                _reply(451, "4.4.2", f"Timeout after {timeout:g}s sending to {self.peer}")
            )
            self.abort()
        except OSError as exc:
            self.conn.fail(_reply(451, "4.4.2", f"Connection with {self.peer} failed: {exc}"))
            self.abort()

    # ---- ending ---------------------------------------------------------------------------
    async def quit(self) -> None:
        """QUIT politely (bounded by the quit timeout), then close."""
        if self.alive:
            self.conn.quit()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeouts.quit):
                    while not isinstance(await self.next_event(), Closed | None):
                        pass
        await self.close()

    def abort(self) -> None:
        """Drop the connection at once (after a timeout, an error, a lost session)."""
        self._watchdog.close()
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()

    async def close(self) -> None:
        self._watchdog.close()
        self.writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeouts.quit):
                await self.writer.wait_closed()
