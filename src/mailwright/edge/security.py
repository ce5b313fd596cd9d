"""STARTTLS and AUTH for one session: what the listener offers, the handshake, the SASL dialogue.

``EdgeSecurity`` is shared by all sessions (server TLS context, authenticator,
AUTH failure counters); ``SessionSecurity`` drives one client. What a session
offers depends on its listener: STARTTLS when the listener allows TLS and a
certificate is loaded; AUTH (PLAIN, LOGIN) when the listener offers it and a
users file is configured, and only under TLS unless the client is on loopback
and ``auth.plaintext_on_loopback`` is set (else ``538 5.7.11``). After a
handshake the session forgets everything said before it, and the client's
plaintext already buffered is dropped (``edge.tls.upgrade``). AUTH replies:
``235 2.7.0``, ``535 5.7.8`` (answered later after each failure of the same
address), ``501`` for ``*`` or bad base64, ``454 4.7.0`` once the address, or the
user name from that address, has too many recent failures (never for an address
that did not fail: nobody can lock a user out), ``454 4.7.0`` too when the failure
counters cannot be read (the cluster's database is away: no guess goes uncounted),
``421 4.7.0`` after ``auth.max_failures_per_session``. Logs ``STARTTLS=server`` and ``AUTH=server``
lines with the user name and mechanism, never a password.

Trusts nothing the client sends. Settings: ``listeners``, ``tls.*``, ``auth.*``,
``server.timeouts.tls_handshake``, ``queue.backend`` (where the counters are).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from dataclasses import dataclass

from mailwright.config.schema import Listener, ListenerAuth, ListenerTls, Settings
from mailwright.core.reply import Reply
from mailwright.edge import tls
from mailwright.edge.stream import SessionStream
from mailwright.edge.tls import ListenTls, ServerTls
from mailwright.observability import maillog
from mailwright.policy.auth import Authenticator
from mailwright.policy.hooks import SessionInfo
from mailwright.policy.limits import AuthThrottle, cluster_limits
from mailwright.policy.sharedlimits import WorkerShare
from mailwright.policy.submission import is_loopback
from mailwright.queue.store import StoreError
from mailwright.smtp import events as ev
from mailwright.smtp import sasl
from mailwright.smtp.server import ServerConnection, decode_sasl

log = logging.getLogger("mailwright.edge")

TLS_UNAVAILABLE = Reply.of(454, "4.7.0", "TLS not available due to temporary reason")
AUTH_UNAVAILABLE = Reply.of(454, "4.7.0", "Temporary authentication failure")
BAD_CREDENTIALS = Reply.of(535, "5.7.8", "Authentication credentials invalid")
TOO_MANY_FAILURES = Reply.of(
    454, "4.7.0", "Too many failed authentication attempts, try again later"
)
_BASE64_TOKEN = re.compile(r"^[A-Za-z0-9+/]{4,}={0,2}$")


def redact(line: str) -> str:
    """A command line fit for a log: a lone base64 token may be a stray SASL response."""
    return "<redacted>" if _BASE64_TOKEN.match(line.strip()) else line


class TlsHandshakeError(ConnectionError):
    """The handshake failed: the stream is unusable and the session ends."""


@dataclass(slots=True)
class EdgeSecurity:
    """What every session shares."""

    settings: Settings
    tls: ServerTls | None = None
    authenticator: Authenticator | None = None
    throttle: AuthThrottle | None = None

    @classmethod
    def from_settings(cls, settings: Settings, share: WorkerShare | None = None) -> EdgeSecurity:
        """``share``: the workers' shared AUTH failure counters (None: this process's own)."""
        users = settings.auth.users_file
        return cls(
            settings,
            tls=ServerTls(settings.tls),
            authenticator=Authenticator.from_file(users, settings.auth.max_concurrent_checks)
            if users is not None
            else None,
            throttle=AuthThrottle(
                settings.auth, share=share, cluster=cluster_limits(settings.queue)
            ),
        )

    def context(self) -> ssl.SSLContext | None:
        return self.tls.context if self.tls is not None else None

    def listen_tls(self, listener: Listener) -> ListenTls:
        """``loop.create_server``'s ``ssl`` and handshake timeout for ``listener``."""
        implicit = listener.tls is ListenerTls.IMPLICIT
        timeout = self.settings.server.timeouts.tls_handshake
        return tls.listen_tls(self.tls, implicit, timeout)

    def reload(self) -> None:
        """SIGHUP: certificate and users file."""
        if self.tls is not None:
            self.tls.reload()
        if self.authenticator is not None:
            self.authenticator.users.reload()


class SessionSecurity:
    """STARTTLS and AUTH of one session."""

    def __init__(
        self,
        shared: EdgeSecurity | None,
        listener: Listener,
        info: SessionInfo,
        conn: ServerConnection,
    ) -> None:
        self.shared = shared
        self.listener = listener
        self.info = info
        self.conn = conn
        self._exchange: sasl.Exchange | None = None
        self._failures = 0

    @property
    def implicit(self) -> bool:
        return self.listener.tls is ListenerTls.IMPLICIT and self.shared is not None

    def configure(self) -> None:
        """Tell the protocol core what this listener offers."""
        shared, conn = self.shared, self.conn
        if shared is None:
            return
        conn.tls_available = (
            self.listener.tls is not ListenerTls.NONE and shared.context() is not None
        )  # implicit TLS: "503 TLS already active"
        offers_auth = self.listener.auth_mode is not ListenerAuth.OFF
        if offers_auth and shared.authenticator is not None and not self.info.is_local:
            auth = shared.settings.auth
            conn.auth_mechanisms = tuple(auth.mechanisms)
            plaintext = auth.plaintext_on_loopback and is_loopback(self.info.client_address)
            conn.auth_requires_tls = not plaintext

    @property
    def _relay(self) -> str:
        return maillog.relay_text(self.info.client_name, self.info.client_address)

    # ---- TLS ----------------------------------------------------------------------------
    def may_start_tls(self) -> bool:
        return self.shared is not None and self.shared.context() is not None

    async def start_tls(self, stream: SessionStream) -> None:
        """The STARTTLS handshake, after its ``220`` was sent."""
        assert self.shared is not None
        context = self.shared.context()
        if context is None:
            raise TlsHandshakeError("no TLS context")
        timeout = self.shared.settings.server.timeouts.tls_handshake
        try:
            details = await tls.upgrade(stream, context, timeout)
        except (ssl.SSLError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            reason = "handshake timeout" if isinstance(exc, TimeoutError) else str(exc)
            maillog.emit(None, event="STARTTLS=server", relay=self._relay, error=reason)
            raise TlsHandshakeError(reason) from None
        self.conn.tls_started()
        self._record(details)

    def implicit_tls(self, writer: SessionStream) -> None:
        """An implicit-TLS connection: the listener did the handshake already."""
        self.conn.tls = True
        self._record(tls.details(writer))

    def _record(self, details: tls.TlsDetails) -> None:
        info = self.info
        info.tls_version, info.tls_cipher, info.tls_cipher_bits = (
            details.version,
            details.cipher,
            details.bits,
        )
        info.helo, info.esmtp = "", False  # RFC 3207 4.2: the client starts over
        info.auth_user, info.auth_mechanism = "", ""
        self._exchange = None
        maillog.emit(
            None,
            event="STARTTLS=server",
            relay=self._relay,
            version=details.version,
            verify="NO",
            cipher=details.cipher,
            bits=f"{details.bits}/{details.bits}",
        )

    # ---- AUTH ---------------------------------------------------------------------------
    async def auth(self, event: ev.Auth) -> None:
        """Answer one AUTH event (the command, or one response line of its exchange)."""
        conn = self.conn
        shared = self.shared
        if shared is None or shared.authenticator is None or shared.throttle is None:
            conn.respond(AUTH_UNAVAILABLE)
            return
        if event.mechanism:  # the AUTH command
            self._exchange = None
            try:
                blocked = await shared.throttle.ip_blocked(self.info.client_address)
            except StoreError as exc:
                self._log_failure(event.mechanism, "", f"failure counters unavailable: {exc}")
                conn.respond(AUTH_UNAVAILABLE)
                return
            if blocked:
                self._log_failure(event.mechanism, "", "too many failures from the address")
                conn.respond(TOO_MANY_FAILURES)
                return
            try:
                initial = None if event.initial is None else _decode_initial(event.initial)
            except ValueError:
                conn.respond(sasl.BAD_BASE64)
                return
            self._exchange = sasl.exchange_for(event.mechanism)
            await self._step(self._exchange.start(initial))
            return
        try:
            data = decode_sasl(event.initial or "")
        except ValueError:
            self._exchange = None
            conn.respond(sasl.BAD_BASE64)
            return
        if data is None or self._exchange is None:
            self._exchange = None
            conn.respond(sasl.CANCELLED)
            return
        await self._step(self._exchange.step(data))

    async def _step(self, step: sasl.Step) -> None:
        if isinstance(step, sasl.Challenge):
            self.conn.challenge(step.text)
            return
        exchange, self._exchange = self._exchange, None
        if isinstance(step, sasl.Failure):
            self.conn.respond(step.reply)
            return
        assert exchange is not None
        await self._verify(exchange.mechanism, step)

    async def _verify(self, mechanism: str, credentials: sasl.Credentials) -> None:
        shared = self.shared
        assert shared is not None and shared.authenticator is not None
        assert shared.throttle is not None
        throttle, ip, user = shared.throttle, self.info.client_address, credentials.user
        try:
            blocked = await throttle.ip_blocked(ip) or await throttle.user_blocked(user, ip)
        except StoreError as exc:  # uncounted guesses would defeat the limits
            self._log_failure(mechanism, user, f"failure counters unavailable: {exc}")
            self.conn.respond(AUTH_UNAVAILABLE)
            return
        if blocked:
            self._log_failure(mechanism, user, "too many failures")
            self.conn.respond(TOO_MANY_FAILURES)
            return
        ok = bool(user) and await shared.authenticator.check(user, credentials.password)
        if ok:
            await throttle.succeeded(user, ip)
            self.info.auth_user, self.info.auth_mechanism = user, mechanism
            maillog.emit(
                None,
                event="AUTH=server",
                relay=self._relay,
                authid=user,
                mech=mechanism,
                bits=self.info.tls_cipher_bits,
            )
            self.conn.respond(Reply.of(235, "2.7.0", "Authentication successful"))
            return
        delay = await throttle.failed(ip, user)
        self._failures += 1
        self._log_failure(mechanism, user, "bad credentials")
        if delay:
            await asyncio.sleep(delay)  # slows a guesser down; other sessions go on
        if self._failures >= shared.settings.auth.max_failures_per_session:
            host = shared.settings.hostname
            self.conn.respond(
                Reply.of(421, "4.7.0", f"{host} Too many failed authentication attempts")
            )
            return
        self.conn.respond(BAD_CREDENTIALS)

    def _log_failure(self, mechanism: str, user: str, reason: str) -> None:
        maillog.emit(
            None,
            event="AUTH=server failure",
            relay=self._relay,
            mech=mechanism,
            user=user or None,
            reason=reason,
        )


def _decode_initial(text: str) -> bytes:
    """An initial response: ``=`` is empty, ``*`` is not allowed here."""
    data = decode_sasl(text)
    if data is None:
        raise ValueError("cancel as initial response")
    return data
