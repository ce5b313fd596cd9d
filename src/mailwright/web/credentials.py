"""Who may see the status page and press its buttons: whoever knows the configured token.

A client proves it per request (``Authorization: Bearer TOKEN``: scripts, curl,
Prometheus) or once through the login form, which sets a session cookie. The
cookie does not contain the token: it holds an issue time, a random nonce and an
HMAC of both under a key derived from the token, so it is checked without server
state, expires after ``SESSION_LIFETIME`` and stops working when the token
changes. Forms that change the queue carry a CSRF token (an HMAC of the session
nonce); the cookie is also ``SameSite=Strict``. A token in a URL is never
accepted: URLs end up in logs and browser histories. Every comparison is
constant-time. Reads ``http.token`` (the daemon passes it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import Enum

from mailwright.web.webserver import Request

COOKIE = "mailwright_session"
SESSION_LIFETIME = 12 * 3600.0
BEARER_SESSION = "bearer"  # the CSRF scope of requests that carry the token themselves


class Proof(Enum):
    NONE = "none"  # nothing presented: 401
    BAD = "bad"  # a wrong token or a forged or expired cookie: 403
    BEARER = "bearer"
    COOKIE = "cookie"


@dataclass(frozen=True, slots=True)
class Identity:
    proof: Proof
    session: str = ""  # the cookie's nonce, or BEARER_SESSION

    @property
    def authenticated(self) -> bool:
        return self.proof in (Proof.BEARER, Proof.COOKIE)


class Credentials:
    def __init__(self, token: str, lifetime: float = SESSION_LIFETIME) -> None:
        self._token = token.encode("utf-8")
        self._key = hashlib.sha256(b"mailwright-http\0" + self._token).digest()
        self.lifetime = lifetime

    @property
    def enabled(self) -> bool:
        return bool(self._token)

    def check_token(self, candidate: str) -> bool:
        if not self._token:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self._token)

    def identify(self, request: Request, now: float) -> Identity:
        authorization = request.header("authorization")
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and self.check_token(value.strip()):
                return Identity(Proof.BEARER, BEARER_SESSION)
            return Identity(Proof.BAD)
        cookie = request.cookie(COOKIE)
        if cookie:
            nonce = self.session_of(cookie, now)
            return Identity(Proof.COOKIE, nonce) if nonce else Identity(Proof.BAD)
        return Identity(Proof.NONE)

    def _mac(self, *parts: str) -> str:
        message = "\0".join(parts).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:40]

    def new_cookie(self, now: float) -> str:
        issued = str(int(now))
        nonce = secrets.token_hex(16)
        return f"v1.{issued}.{nonce}.{self._mac('session', issued, nonce)}"

    def session_of(self, cookie: str, now: float) -> str | None:
        """The session nonce of a valid, unexpired cookie; None otherwise."""
        if not self._token:
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
            return None
        _, issued, nonce, mac = parts
        if not hmac.compare_digest(mac, self._mac("session", issued, nonce)):
            return None
        if not 0 <= now - int(issued) <= self.lifetime:
            return None
        return nonce

    def csrf(self, session: str) -> str:
        return self._mac("csrf", session)

    def check_csrf(self, session: str, value: str) -> bool:
        return bool(session) and hmac.compare_digest(value, self.csrf(session))
