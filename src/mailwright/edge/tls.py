"""Server-side TLS: the certificate context, its reload, and the upgrade of a client stream.

``ServerTls`` builds an ``ssl.SSLContext`` (TLS 1.2 at least, no compression, no
renegotiation) from ``tls.certificate`` / ``tls.key``; ``reload()`` (SIGHUP)
first loads the files into a scratch context and only if that works loads them
into the live one (in place: implicit-TLS listeners hold that object), so a bad
certificate never takes TLS down. Implicit TLS (RFC 8314) is the listening
socket's own (``listen_tls``): the handshake is over before the session
starts and before the client could send anything else. ``upgrade`` turns a
plaintext stream into TLS (STARTTLS), first throwing away whatever plaintext the
stream had already buffered: a command pipelined behind
STARTTLS must never be read as if it came over TLS (CVE-2011-0411,
CVE-2024-34083). Without a certificate there is no context and STARTTLS is not
offered. Settings: ``tls.*``, ``server.timeouts.tls_handshake``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

from mailwright.config.loader import ConfigError
from mailwright.config.schema import TlsSection
from mailwright.edge.stream import SessionStream

log = logging.getLogger("mailwright.edge")


class TlsSetupError(ConfigError):
    """The certificate or key cannot be used; ``str()`` says which file and why."""


def server_context(section: TlsSection) -> ssl.SSLContext:
    if section.certificate is None:
        raise TlsSetupError("no certificate configured")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if section.min_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        if section.ciphers:
            context.set_ciphers(section.ciphers)
        context.load_cert_chain(section.certificate, section.key)
    except FileNotFoundError as exc:
        raise TlsSetupError(f"{exc.filename}: no such file") from None
    except PermissionError as exc:
        raise TlsSetupError(f"{exc.filename}: permission denied") from None
    except (ssl.SSLError, OSError) as exc:
        files = f"{section.certificate}" + (f", {section.key}" if section.key else "")
        raise TlsSetupError(f"{files}: cannot load certificate and key: {exc}") from None
    return context


class ServerTls:
    """The current server context, or None when no certificate is configured."""

    def __init__(self, section: TlsSection) -> None:
        self.section = section
        self.context: ssl.SSLContext | None = None
        if section.certificate is not None:
            self.context = server_context(section)  # start-up: a bad file is fatal

    def reload(self) -> str | None:
        """Load the files again; returns the problem (the old certificate stays) or None."""
        section = self.section
        if section.certificate is None:
            return None
        try:
            fresh = server_context(section)  # a scratch load: is the new pair usable?
            if self.context is None:
                self.context = fresh
            else:
                self.context.load_cert_chain(section.certificate, section.key)
        except (TlsSetupError, ssl.SSLError, OSError) as exc:
            log.error("TLS reload failed, keeping the previous certificate: %s", exc)
            return str(exc)
        log.info("TLS certificate reloaded from %s", section.certificate)
        return None


ListenTls = tuple[ssl.SSLContext | None, float | None]  # create_server's ssl, handshake timeout


def listen_tls(tls: ServerTls | None, implicit: bool, handshake_timeout: float) -> ListenTls:
    """What ``loop.create_server`` needs for a listener: TLS only when implicit."""
    if not implicit or tls is None or tls.context is None:
        return None, None
    return tls.context, handshake_timeout


@dataclass(frozen=True, slots=True)
class TlsDetails:
    version: str
    cipher: str
    bits: int


async def upgrade(stream: SessionStream, context: ssl.SSLContext, timeout: float) -> TlsDetails:
    """TLS handshake as the server on an open stream; raises on failure or timeout."""
    stream.discard_buffered()
    async with asyncio.timeout(timeout):
        await stream.start_tls(context, ssl_handshake_timeout=timeout)
    return details(stream)


def details(writer: SessionStream) -> TlsDetails:
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is None:
        return TlsDetails("", "", 0)
    cipher = ssl_object.cipher()
    return TlsDetails(
        ssl_object.version() or "",
        cipher[0] if cipher else "",
        int(cipher[2]) if cipher else 0,
    )
