"""The daemon's web endpoint: ``/metrics`` for Prometheus and the token-protected status page.

Routes: ``GET /metrics`` (Prometheus text; free for loopback clients unless
``http.metrics_require_token``, otherwise a Bearer token), ``GET /status`` (the
overview), ``GET /message/ID`` (one message), ``POST /action`` (flush, hold,
release, delete: through ``Backend.act``, which runs the same code as ``mailwright
queue``), ``GET|POST /login`` and ``POST /logout``. A request without credentials
gets 401 (and the login form), a wrong token or a forged or expired cookie 403.
State-changing posts need the CSRF token of the session. Repeated failed logins
are answered 429 for a while. Every HTML response forbids scripts, framing and
foreign resources (Content-Security-Policy) and caching. Reads ``http.*`` via
``WebSettings``.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote, urlencode

from mailwright.core.headers import HeaderList
from mailwright.core.queueid import QUEUE_ID_RE
from mailwright.queue.store import StoredMessage
from mailwright.web import statuspage
from mailwright.web.credentials import COOKIE, Credentials, Identity, Proof
from mailwright.web.history import Sample
from mailwright.web.status import Status
from mailwright.web.webserver import Request, Response

SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ACTIONS = ("flush", "flush-all", "hold", "release", "delete")
MESSAGES_SHOWN = 50
FAILURE_WINDOW, MAX_FAILURES = 60.0, 20  # failed logins per window before 429


@dataclass(slots=True)
class ActionResult:
    action: str
    done: int  # messages (or, for a flush, recipients) changed
    missing: list[str] = field(default_factory=list)  # ids not in the queue
    failed: bool = False  # the queue could not be changed (logged by the backend)


class Backend(Protocol):
    """What the site needs from the daemon (``daemon.monitor.Monitor``)."""

    async def status(self, detail: bool = False) -> Status: ...

    def history(self) -> list[Sample | None]: ...

    async def oldest_messages(self, limit: int) -> list[StoredMessage]: ...

    async def message(self, queue_id: str) -> tuple[StoredMessage, HeaderList] | None: ...

    async def act(self, action: str, ids: Sequence[str], reason: str) -> ActionResult: ...

    async def metrics(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class WebSettings:
    token: str = ""
    metrics_require_token: bool = False


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def html(status: int, text: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    return Response(status, text.encode("utf-8"), headers=[*SECURITY_HEADERS, *headers])


def redirect(location: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    return Response(303, b"", "text/plain", [("Location", location), *SECURITY_HEADERS, *headers])


def notice_text(query: dict[str, str]) -> str:
    """The outcome of the last action, rebuilt from fixed words (never echoed raw)."""
    problem = query.get("problem")
    if problem == "confirm":
        return "Nothing deleted: tick 'yes, delete' to confirm."
    if problem == "select":
        return "Select at least one message."
    if problem == "failed":
        return "The action failed; see the daemon's log."
    action = query.get("done")
    if action not in ACTIONS:
        return ""
    count = int(query["n"]) if query.get("n", "").isdigit() else 0
    missing = int(query["missing"]) if query.get("missing", "").isdigit() else 0
    if action in ("flush", "flush-all"):
        text = f"{count} recipient(s) scheduled for delivery."
    else:
        past = {"hold": "held", "release": "released", "delete": "deleted"}[action]
        text = f"{past}: {count} message(s)."
    return text + (f" {missing} not in the queue." if missing else "")


class StatusSite:
    """The request handler given to ``WebServer``."""

    def __init__(self, settings: WebSettings, backend: Backend) -> None:
        self.settings = settings
        self.credentials = Credentials(settings.token)
        self.backend = backend
        self._failures: deque[float] = deque()

    async def __call__(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == "/metrics":
            return await self._metrics(request) if method in ("GET", "HEAD") else _not_allowed()
        if path == "/":
            return redirect("/status")
        if not self.credentials.enabled:
            text = "Set http.token in the configuration to enable the status page."
            return html(403, statuspage.simple_page("Status page disabled", text))
        if path == "/login":
            return await self._login(request)
        routes = {
            ("GET", "/status"): self._status,
            ("HEAD", "/status"): self._status,
            ("GET", "/message"): self._lookup,
            ("POST", "/action"): self._action,
            ("POST", "/logout"): self._logout,
        }
        handler = routes.get((method, path))
        if handler is None and path.startswith("/message/") and method in ("GET", "HEAD"):
            handler = self._message
        if handler is None:
            known = {p for _, p in routes} | {"/login"}
            if path in known or path.startswith("/message/"):
                return _not_allowed()
            return html(404, statuspage.simple_page("Not found", "There is no such page."))
        identity = self.identify(request)
        if not identity.authenticated:
            return self._refuse(identity)
        return await handler(request, identity)

    # ---- authentication -----------------------------------------------------------------
    def identify(self, request: Request) -> Identity:
        identity = self.credentials.identify(request, time.time())
        if identity.proof is Proof.BAD:
            self._failed()
        return identity

    def _failed(self) -> None:
        now = time.monotonic()
        self._failures.append(now)
        while self._failures and self._failures[0] < now - FAILURE_WINDOW:
            self._failures.popleft()

    def _throttled(self) -> bool:
        now = time.monotonic()
        return sum(1 for t in self._failures if t >= now - FAILURE_WINDOW) >= MAX_FAILURES

    def _refuse(self, identity: Identity) -> Response:
        if identity.proof is Proof.NONE:
            return html(
                401,
                statuspage.login_page(),
                [("WWW-Authenticate", 'Bearer realm="mailwright"')],
            )
        return html(
            403,
            statuspage.login_page("The token was not accepted, or the session has expired."),
            [("Set-Cookie", _cookie(""))],
        )

    async def _login(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            if self.identify(request).authenticated:
                return redirect("/status")
            return html(200, statuspage.login_page())
        if request.method != "POST":
            return _not_allowed()
        if self._throttled():
            return html(429, statuspage.login_page("Too many failed attempts; wait a minute."))
        token = (request.form().get("token") or [""])[0]
        if not self.credentials.check_token(token):
            self._failed()
            return html(403, statuspage.login_page("That is not the token."))
        cookie = self.credentials.new_cookie(time.time())
        return redirect("/status", [("Set-Cookie", _cookie(cookie, self.credentials.lifetime))])

    async def _logout(self, request: Request, identity: Identity) -> Response:
        if not self._csrf_ok(request, identity):
            return html(403, statuspage.simple_page("Refused", "Missing or wrong CSRF token."))
        return redirect("/login", [("Set-Cookie", _cookie(""))])

    def _csrf_ok(self, request: Request, identity: Identity) -> bool:
        value = (request.form().get("csrf") or [""])[0]
        return self.credentials.check_csrf(identity.session, value)

    # ---- metrics ------------------------------------------------------------------------
    async def _metrics(self, request: Request) -> Response:
        free = is_loopback(request.peer) and not self.settings.metrics_require_token
        if not free or request.header("authorization"):
            identity = self.identify(request)
            if identity.proof is not Proof.BEARER:
                status = 401 if identity.proof is Proof.NONE else 403
                headers = [("WWW-Authenticate", 'Bearer realm="mailwright"')]
                return Response(status, b"token required\n", "text/plain", headers)
        return Response(200, await self.backend.metrics(), PROMETHEUS_TYPE)

    # ---- pages --------------------------------------------------------------------------
    async def _status(self, request: Request, identity: Identity) -> Response:
        status = await self.backend.status(detail=True)
        messages = await self.backend.oldest_messages(MESSAGES_SHOWN)
        csrf = self.credentials.csrf(identity.session)
        page = statuspage.status_page(
            status, self.backend.history(), messages, csrf, notice_text(request.query)
        )
        return html(200, page)

    async def _lookup(self, request: Request, identity: Identity) -> Response:
        queue_id = request.query.get("id", "").strip().upper()
        return redirect(f"/message/{quote(queue_id, safe='')}")

    async def _message(self, request: Request, identity: Identity) -> Response:
        queue_id = request.path.removeprefix("/message/").upper()
        csrf = self.credentials.csrf(identity.session)
        found = await self.backend.message(queue_id) if QUEUE_ID_RE.match(queue_id) else None
        if found is None:
            text = f"{queue_id} is not in the queue (delivered, bounced, deleted, or never was)."
            return html(404, statuspage.simple_page("No such message", text, csrf))
        message, headers = found
        page = statuspage.message_page(message, headers, csrf, notice_text(request.query))
        return html(200, page)

    async def _action(self, request: Request, identity: Identity) -> Response:
        if not self._csrf_ok(request, identity):
            return html(403, statuspage.simple_page("Refused", "Missing or wrong CSRF token."))
        form = request.form()
        action = (form.get("action") or [""])[0]
        ids = [
            i.strip().upper() for i in form.get("id", []) if QUEUE_ID_RE.match(i.strip().upper())
        ]
        back = "message" if (form.get("back") or [""])[0] == "message" and len(ids) == 1 else ""
        if action not in ACTIONS:
            return html(400, statuspage.simple_page("Bad request", "Unknown action."))
        location = f"/message/{ids[0]}" if back else "/status"
        if action != "flush-all" and not ids:
            return redirect(f"{location}?problem=select")
        if action == "delete" and (form.get("confirm") or [""])[0] != "yes":
            return redirect(f"{location}?problem=confirm")
        reason = (form.get("reason") or [""])[0].strip()[:200]
        result = await self.backend.act(action, [] if action == "flush-all" else ids, reason)
        if result.failed:
            return redirect(f"{location}?problem=failed")
        if action == "delete" and back:
            location = "/status"  # the message is gone
        query = {"done": action, "n": str(result.done), "missing": str(len(result.missing))}
        return redirect(f"{location}?{urlencode(query)}")


def _cookie(value: str, max_age: float = 0) -> str:
    return f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={int(max_age)}"


def _not_allowed() -> Response:
    return Response(405, b"method not allowed\n", "text/plain", [("Allow", "GET, HEAD, POST")])
