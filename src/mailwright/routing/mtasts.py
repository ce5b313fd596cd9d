"""MTA-STS (RFC 8461): the policy a mail domain publishes for TLS towards its MX hosts.

Sans-I/O part: ``parse_record`` reads the ``_mta-sts.<domain>`` TXT record
(``v=STSv1; id=...;``), ``parse_policy`` the policy file (``version: STSv1``,
``mode``, ``mx`` patterns, ``max_age``; CRLF or LF lines), ``StsPolicy.matches``
the MX patterns (``*.`` stands for exactly one label), ``HttpResponse.parse`` the
HTTPS answer. Validation is strict: anything malformed raises ``PolicyError``
and counts as no policy.

I/O part: ``MtaStsPolicies.policy(domain)`` looks the TXT record up through our
own DNS resolver (never the system's), fetches
``https://mta-sts.<domain>/.well-known/mta-sts.txt`` over an asyncio TLS
stream (the certificate must verify for ``mta-sts.<domain>``; no redirects;
64 KiB at most; ``Content-Type: text/plain``; one timeout for the whole fetch)
and keeps policies in memory for ``max_age``, fetching again when the TXT id
changes. When the TXT lookup or the fetch fails, an unexpired cached policy
still applies (RFC 8461 5.1); without one there is no policy. Failed fetches
are not retried for ``retry_after`` seconds. ``problem(domain)`` says, for TLS reports
(RFC 8460), why a domain with a record has no policy: a result type and a short reason.

With a ``store`` (``routing.mtasts_store``: a SQLite file of the host, or the shared
PostgreSQL database) every fetched policy is also saved there, and a domain this
process has no policy for in memory is looked up there (at most once per ``refresh``
seconds when DNS gives no id; always before fetching a new id, which another node or
process may have fetched already): a restart does not forget an enforced policy, and
the nodes of a cluster share them. A store that fails is logged; the memory goes on.

Trusts nothing from DNS or the web server. Settings (via the caller):
``delivery.mta_sts``, ``delivery.mta_sts_port``, ``delivery.tls_ca_file``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from mailwright.routing.mx import txt_string
from mailwright.routing.resolver import DnsPermanentError, DnsTemporaryError, MailHost

MAX_POLICY_SIZE = 64 * 1024
MAX_HEADER_SIZE = 16 * 1024
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 3.2: about one year
POLICY_PATH = "/.well-known/mta-sts.txt"
log = logging.getLogger(__name__)


class PolicyError(Exception):
    """A record, policy file or HTTP answer that does not make a valid policy."""


class FetchError(PolicyError):
    """The policy could not be fetched (``webpki``: the server's certificate did not
    verify); RFC 8460 reports these apart from an invalid policy. ``reason``: the same
    in a few stable words (no address, no port), for the report; the text by default."""

    def __init__(self, text: str, webpki: bool = False, reason: str = "") -> None:
        super().__init__(text)
        self.webpki = webpki
        self.reason = reason or text


class StsMode(StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


# ------------------------------------------------------------------ the TXT record

_RECORD_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]{1,}")  # VCHAR except ";" and "="


def parse_record(texts: Iterable[str]) -> str | None:
    """The policy id from a domain's TXT strings; None when no record starts with
    ``v=STSv1``. More than one such record, or a malformed one, raises PolicyError."""
    records = [t for t in texts if t.startswith("v=STSv1")]
    if not records:
        return None
    if len(records) > 1:
        raise PolicyError(f"{len(records)} TXT records start with v=STSv1")
    fields = [f.strip(" \t") for f in records[0].split(";")]
    if fields and fields[-1] == "":
        fields.pop()  # the final ";" is optional
    if not fields or fields[0] != "v=STSv1":
        raise PolicyError(f"malformed TXT record {records[0]!r}")
    policy_id = None
    for item in fields[1:]:
        name, equals, value = item.partition("=")
        if name == "id" and equals and _RECORD_ID.fullmatch(value):
            policy_id = value if policy_id is None else policy_id
        elif not (equals and _EXT_NAME.fullmatch(name) and _EXT_VALUE.fullmatch(value)):
            raise PolicyError(f"malformed TXT record {records[0]!r}")
    if policy_id is None:
        raise PolicyError(f"TXT record without a valid id: {records[0]!r}")
    return policy_id


# ------------------------------------------------------------------ the policy file

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_MAX_AGE = re.compile(r"[0-9]{1,10}")


def _is_domain(text: str) -> bool:
    labels = text.split(".")
    return len(text) <= 253 and len(labels) >= 2 and all(_LABEL.fullmatch(x) for x in labels)


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: ``mx.example.org`` matches itself, ``*.example.org`` one more label."""
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """One domain's policy as published."""

    mode: StsMode
    mx: tuple[str, ...]  # lower-case patterns
    max_age: int  # seconds

    def matches(self, host: str) -> bool:
        return any(mx_matches(pattern, host) for pattern in self.mx)


def parse_policy(text: bytes | str) -> StsPolicy:
    """The policy file (RFC 8461 3.2); raises PolicyError naming the problem."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError("policy is not UTF-8") from None
    fields: dict[str, str] = {}
    mx: list[str] = []
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name) or "\r" in value:
            raise PolicyError(f"policy line {number}: not a 'name: value' field: {line[:80]!r}")
        value = value.strip(" \t")
        if name == "mx":
            mx.append(value)
        else:
            fields.setdefault(name, value)  # only the first of a repeated field counts
    if fields.get("version") != "STSv1":
        raise PolicyError(f"policy version is {fields.get('version')!r}, not 'STSv1'")
    try:
        mode = StsMode(fields.get("mode", ""))
    except ValueError:
        raise PolicyError(
            f"policy mode {fields.get('mode')!r} is not enforce, testing or none"
        ) from None
    age = fields.get("max_age", "")
    if not _MAX_AGE.fullmatch(age) or int(age) > MAX_AGE_LIMIT:
        raise PolicyError(f"policy max_age {age!r} is not a number of seconds up to 31557600")
    patterns = tuple(_mx_pattern(p) for p in mx)
    if not patterns and mode is not StsMode.NONE:
        raise PolicyError(f"policy in mode {mode} lists no mx")
    return StsPolicy(mode, patterns, int(age))


def _mx_pattern(text: str) -> str:
    pattern = text.lower().rstrip(".")
    if not _is_domain(pattern.removeprefix("*.")):
        raise PolicyError(f"policy mx {text!r} is not a host name or *.domain")
    return pattern


# ------------------------------------------------------------------ the HTTP answer


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete HTTP/1.x response: status, lower-case header names, decoded body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @classmethod
    def parse(cls, data: bytes, eof: bool) -> HttpResponse | None:
        """The response in ``data``, or None when more is needed (and the peer has not
        closed: ``eof``). Raises PolicyError for a malformed or oversized answer."""
        if len(data) > MAX_HEADER_SIZE + 2 * MAX_POLICY_SIZE:
            raise PolicyError(f"policy larger than {MAX_POLICY_SIZE} bytes")
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            if len(data) > MAX_HEADER_SIZE:
                raise PolicyError("HTTP headers too long")
            if eof:
                raise PolicyError("HTTP response ended in its headers")
            return None
        status, headers = _head(head)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = _dechunk(rest, eof)
        elif "content-length" in headers:
            body = _sized(rest, headers["content-length"], eof)
        else:
            body = rest if eof else None  # delimited by the end of the connection
            if len(rest) > MAX_POLICY_SIZE:
                raise PolicyError(f"policy larger than {MAX_POLICY_SIZE} bytes")
        return None if body is None else cls(status, headers, body)


def _head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    match = re.fullmatch(r"HTTP/1\.[01] ([0-9]{3})(?: .*)?", lines[0])
    if match is None:
        raise PolicyError(f"not an HTTP response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise PolicyError(f"malformed HTTP header {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(match.group(1)), headers


def _sized(rest: bytes, length: str, eof: bool) -> bytes | None:
    if not length.isdigit() or int(length) > MAX_POLICY_SIZE:
        raise PolicyError(f"policy size {length!r} is not a number up to {MAX_POLICY_SIZE}")
    if len(rest) >= int(length):
        return rest[: int(length)]
    if eof:
        raise PolicyError("HTTP response ended before its Content-Length")
    return None


def _dechunk(rest: bytes, eof: bool) -> bytes | None:
    body = b""
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            raise PolicyError(f"malformed chunk size {size_line[:20]!r}") from None
        if len(body) + size > MAX_POLICY_SIZE:
            raise PolicyError(f"policy larger than {MAX_POLICY_SIZE} bytes")
        if size == 0:
            return body  # trailers, if any, are not needed
        if len(rest) < size + 2:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    if eof:
        raise PolicyError("HTTP response ended inside a chunk")
    return None


def check_response(response: HttpResponse) -> StsPolicy:
    """RFC 8461 3.3: 200 only (no redirects), text/plain, then a valid policy."""
    if response.status != 200:
        raise FetchError(f"HTTP status {response.status} (redirects are not followed)")
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "text/plain":
        raise PolicyError(f"Content-Type is {media or 'missing'}, not text/plain")
    return parse_policy(response.body)


# ------------------------------------------------------------------ fetching and caching


def _problem(exc: Exception) -> tuple[str, str]:
    """A failed fetch as an RFC 8460 result type, and its reason in a few words."""
    if isinstance(exc, FetchError):
        return "sts-webpki-invalid" if exc.webpki else "sts-policy-fetch-error", exc.reason
    if isinstance(exc, PolicyError):
        return "sts-policy-invalid", str(exc)
    if isinstance(exc, TimeoutError):
        return "sts-policy-fetch-error", "policy fetch timed out"
    if isinstance(exc, OSError):
        return "sts-policy-fetch-error", _fetch_reason(exc)
    return "sts-policy-fetch-error", str(exc) or type(exc).__name__  # DNS


def _fetch_reason(exc: OSError) -> str:
    """What went wrong with the policy server, without its address or port (asyncio's
    ``Connect call failed ('192.0.2.1', 443)``: the system's text for its errno)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return exc.verify_message
    if isinstance(exc, ssl.SSLError):
        return str(getattr(exc, "reason", None) or type(exc).__name__)
    errno = exc.errno
    return os.strerror(errno) if isinstance(errno, int) and errno else type(exc).__name__


class StsResolver(Protocol):
    """What MTA-STS needs from DNS (``routing.mx.DnsResolver`` has both)."""

    async def records(self, name: str, rdtype: str) -> list[str]: ...

    async def host_addresses(self, host: str) -> list[MailHost]: ...


@dataclass(frozen=True, slots=True)
class SavedPolicy:
    """A policy as a store keeps it."""

    policy: StsPolicy
    policy_id: str
    expires: float  # seconds since the epoch


class StsPolicyStore(Protocol):
    """Policies beyond this process's memory (``routing.mtasts_store``); blocking calls."""

    def load(self, domain: str) -> SavedPolicy | None: ...

    def save(self, domain: str, saved: SavedPolicy) -> None: ...


@dataclass(frozen=True, slots=True)
class _Cached:
    policy: StsPolicy
    policy_id: str
    expires: float


class MtaStsPolicies:
    """Policies by domain, fetched when needed; ``policy`` never raises."""

    def __init__(
        self,
        resolver: StsResolver,
        context: ssl.SSLContext | None = None,
        *,
        port: int = 443,
        timeout: float = 20.0,
        retry_after: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        store: StsPolicyStore | None = None,
        refresh: float = 300.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.resolver = resolver
        self.context = context or ssl.create_default_context()
        self.port = port
        self.timeout = timeout
        self.retry_after = retry_after
        self.store = store
        self.refresh = refresh
        self._clock = clock
        self._wall = wall_clock  # the store's expiry times are seconds since the epoch
        self._cache: dict[str, _Cached] = {}
        self._looked_up: dict[str, float] = {}  # domain -> when the store was last asked
        self._failed: dict[tuple[str, str], float] = {}  # (domain, id) -> retry time
        self._inflight: dict[str, asyncio.Future[StsPolicy | None]] = {}
        # domain -> why it has a record but no policy: result type, reason
        self._problems: dict[str, tuple[str, str]] = {}

    def problem(self, domain: str) -> tuple[str, str] | None:
        """Why a domain that publishes an MTA-STS record has no policy in force, as an
        RFC 8460 result type (``sts-policy-fetch-error``, ``sts-policy-invalid``,
        ``sts-webpki-invalid``) and a short reason (``HTTP status 404 (redirects are not
        followed)``, ``Connection refused``); None when it has one, or no record."""
        return self._problems.get(domain.lower().rstrip("."))

    async def policy(self, domain: str) -> StsPolicy | None:
        """The domain's policy in force, or None (no policy, or none could be had)."""
        domain = domain.lower().rstrip(".")
        task = self._inflight.get(domain)
        if task is None:  # concurrent deliveries to one domain share one lookup
            task = asyncio.ensure_future(self._policy(domain))
            self._inflight[domain] = task
            task.add_done_callback(lambda _: self._inflight.pop(domain, None))
        try:
            return await asyncio.shield(task)
        except Exception:  # a bug here must not stop the mail: deliver as without MTA-STS
            log.exception("MTA-STS: %s: policy lookup failed", domain)
            return None

    async def _policy(self, domain: str) -> StsPolicy | None:
        policy = await self._lookup(domain)
        if policy is not None:  # a policy in force: whatever failed before does not matter
            self._problems.pop(domain, None)
        return policy

    async def _lookup(self, domain: str) -> StsPolicy | None:
        now = self._clock()
        cached = self._cache.get(domain)
        if cached is not None and cached.expires <= now:
            del self._cache[domain]
            cached = None
        try:
            texts = await self.resolver.records(f"_mta-sts.{domain}", "TXT")
            policy_id = parse_record(txt_string(t) for t in texts)
        except (DnsTemporaryError, DnsPermanentError, PolicyError) as exc:
            log.debug("MTA-STS: %s: no usable TXT record: %s", domain, exc)
            policy_id = None
        if policy_id is None:
            self._problems.pop(domain, None)
            cached = cached or await self._remembered(domain, now)
            return cached.policy if cached else None
        if cached is not None and cached.policy_id == policy_id:
            return cached.policy
        saved = await self._load(domain, now)  # another node or process may have it
        if saved is not None and saved.policy_id == policy_id:
            return saved.policy
        cached = cached or saved
        if self._failed.get((domain, policy_id), 0.0) > now:
            return cached.policy if cached else None
        try:
            async with asyncio.timeout(self.timeout):
                policy = check_response(await self.fetch(domain))
        except (PolicyError, DnsTemporaryError, DnsPermanentError, OSError, TimeoutError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            log.warning("MTA-STS: %s: cannot fetch the policy (id %s): %s", domain, policy_id, why)
            self._failed[(domain, policy_id)] = now + self.retry_after
            self._problems[domain] = _problem(exc)
            return cached.policy if cached else None
        self._failed.pop((domain, policy_id), None)
        self._cache[domain] = _Cached(policy, policy_id, now + policy.max_age)
        log.info("MTA-STS: %s: policy id %s, mode %s", domain, policy_id, policy.mode)
        await self._save(domain, policy, policy_id)
        return policy

    # ---- the store (a restart, the other nodes) -----------------------------------------
    async def _remembered(self, domain: str, now: float) -> _Cached | None:
        """The stored policy of a domain DNS gives no id for, asked at most once per
        ``refresh`` (most domains publish none: they must not cost a query each)."""
        if now - self._looked_up.get(domain, float("-inf")) < self.refresh:
            return None
        return await self._load(domain, now)

    async def _load(self, domain: str, now: float) -> _Cached | None:
        """The store's unexpired policy of ``domain``, now also in memory."""
        store = self.store
        if store is None:
            return None
        self._looked_up[domain] = now
        try:
            saved = await asyncio.to_thread(store.load, domain)
        except Exception as exc:  # a store that fails must not stop the mail
            log.warning("MTA-STS: %s: cannot read the stored policy: %s", domain, exc)
            return None
        if saved is None:
            return None
        left = saved.expires - self._wall()
        if left <= 0:
            return None
        cached = _Cached(saved.policy, saved.policy_id, now + left)
        self._cache[domain] = cached
        return cached

    async def _save(self, domain: str, policy: StsPolicy, policy_id: str) -> None:
        store = self.store
        if store is None:
            return
        saved = SavedPolicy(policy, policy_id, self._wall() + policy.max_age)
        try:
            await asyncio.to_thread(store.save, domain, saved)
        except Exception as exc:
            log.warning("MTA-STS: %s: cannot store the policy: %s", domain, exc)

    async def fetch(self, domain: str) -> HttpResponse:
        """GET the policy file from ``mta-sts.<domain>`` (each address in turn)."""
        host = f"mta-sts.{domain}"
        addresses = await self.resolver.host_addresses(host)
        error: Exception = FetchError(f"{host} has no address")
        for address in addresses:
            try:
                return await self._get(host, address.address)
            except (OSError, ssl.SSLError) as exc:
                webpki = isinstance(exc, ssl.SSLCertVerificationError)
                text = f"{host} [{address.address}]:{self.port}: {exc}"
                error = FetchError(text, webpki, _fetch_reason(exc))
        raise error

    async def _get(self, host: str, address: str) -> HttpResponse:
        reader, writer = await asyncio.open_connection(
            address, self.port, ssl=self.context, server_hostname=host
        )
        try:
            request = (
                f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {host}\r\n"
                "User-Agent: Mailwright\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
            )
            writer.write(request.encode("ascii"))
            await writer.drain()
            data = b""
            while True:
                chunk = await reader.read(16384)
                response = HttpResponse.parse(data + chunk, eof=not chunk)
                if response is not None:
                    return response
                data += chunk
        finally:
            writer.close()
