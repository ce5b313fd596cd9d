"""ARC sealing of forwarded mail (RFC 8617 5.1, ``[arc] seal``): the SMTP agent's last edit.

A message that alias expansion, a mailing list or a ``.forward`` sends on (the
scheduler marks its ``DeliveryRequest.forwarded``: a list's copy, or a message one
of whose recipients was expanded) gets a new ARC Set on top as it leaves by SMTP,
after the outbound address rewriting, so the ARC-Message-Signature covers the
message as sent:

- the ARC-Authentication-Results carries the results of every
  ``Authentication-Results:`` field with our authserv-id (``arc.authserv_id``, by
  default ``hostname``): what ``policy.spf``, ``policy.arc`` and ``dkim_verify``
  found when the message came in, with ``arc=none`` first when nothing reported
  on a message without a chain;
- the ARC-Seal's ``cv=`` is that field's ``arc=`` (``policy.arc``, ``[arc] verify``);
  a message without ARC fields is ``cv=none``. A message with a chain that was
  not validated here (verification off, or a trusted client's mail) is not
  sealed: we cannot vouch for it. Nor is one whose last ARC-Seal says
  ``cv=fail`` or that has 50 sets already (``core.arc``).

The body hash is computed streaming in a worker thread (constant memory); the
set is made again at each attempt (a retry has a new ``t=``). A message that
must then be converted to 7 bits for a peer without 8BITMIME leaves with an AMS
whose body hash no longer matches (as a DKIM signature would): its seal still
holds, the AMS fails. Sealing errors are logged and the message goes unsealed.
Trusts the queued headers (our own Authentication-Results, made at reception).
Settings: ``arc.*`` (through ``from_settings``), ``hostname``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from mailwright.config.schema import Settings
from mailwright.core.arc import Sealer, Status, method_result, next_instance, results_of
from mailwright.core.dkim import Canon, body_hash, load_signing_key
from mailwright.core.headers import HeaderList
from mailwright.delivery.agent import DeliveryRequest

log = logging.getLogger("mailwright.delivery.arc")


class ArcSealing:
    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer

    @classmethod
    def from_settings(cls, settings: Settings) -> ArcSealing | None:
        """The sealer of ``[arc] seal``, or None when it is off (the default)."""
        section = settings.arc
        if not section.seal:
            return None
        header_canon, _, body_canon = section.canonicalization.partition("/")
        sealer = Sealer(
            domain=section.domain,
            selector=section.selector,
            key=load_signing_key(section.key_file, "ARC"),
            authserv_id=section.authserv_id or settings.hostname,
            headers=tuple(section.headers),
            header_canon=_canon(header_canon),
            body_canon=_canon(body_canon),
        )
        return cls(sealer)

    def chain_status(self, request: DeliveryRequest) -> tuple[Status | None, list[str]]:
        """The cv= to seal with (None: do not seal) and the results for the AAR."""
        results = results_of(request.headers, self.sealer.authserv_id)
        found = [value for method, value in map(method_result, results) if method == "arc"]
        if next_instance(request.headers) == 1:
            return "none", results if found else ["arc=none", *results]
        if not found:
            return None, results
        if len(found) == 1 and found[0] == "pass":
            return "pass", results
        return "fail", results  # fail, or something no validator of ours wrote

    async def sealed(self, request: DeliveryRequest) -> DeliveryRequest:
        """``request`` with a new ARC Set on top, or unchanged when it is not to be sealed."""
        if not request.forwarded:
            return request
        cv, results = self.chain_status(request)
        if cv is None:
            log.info("%s: not ARC sealed: its chain was not validated here", request.queue_id)
            return request
        sealer = self.sealer
        try:
            bh = await asyncio.to_thread(_body_hash, request, sealer.body_canon)
            fields = sealer.seal(request.headers, bh, cv, results, int(time.time()))
        except Exception:  # an unsealed message is better than none at all
            log.exception("%s: ARC sealing failed; sent unsealed", request.queue_id)
            return request
        if fields is None:
            log.info("%s: not ARC sealed: its chain has ended", request.queue_id)
            return request
        headers = HeaderList([*fields, *request.headers])
        size = request.size + sum(len(f.encode()) for f in fields)
        log.info(
            "%s: ARC sealed i=%d cv=%s d=%s s=%s",
            request.queue_id,
            next_instance(request.headers),
            cv,
            sealer.domain,
            sealer.selector,
        )
        return dataclasses.replace(request, headers=headers, size=size)


def _body_hash(request: DeliveryRequest, canon: Canon) -> bytes:
    return body_hash(request.body(), canon)


def _canon(text: str) -> Canon:
    return "simple" if text == "simple" else "relaxed"
