"""The base class of in-process filters: a policy hook with options and a name.

A filter gets the same stages as a milter (connect, helo, mail, rcpt, data,
message, reset, close) and the same powers: return a negative ``Reply`` to
refuse, or at the message stage edit ``txn.headers`` (a ``HeaderList``),
``txn.recipients``, ``txn.sender``, replace the body with
``txn.body.replace(...)``, set ``txn.hold_reason`` (quarantine) or
``txn.discard``. Its options are a pydantic model (``Options``) validated
when the configuration is loaded, so a typo is a configuration error.

A minimal filter, registered under entry point group ``mailwright.filters``::

    class Hello(Filter):
        class Options(BaseModel):
            greeting: str = "hello"

        async def message(self, session, txn):
            txn.headers.append(Header.make("X-Hello", self.options.greeting))
            return None

Trusts nothing; settings: whatever the subclass reads from ``settings``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from mailwright.config.schema import Settings
from mailwright.policy.hooks import Hook


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Filter(Hook):
    """Subclass this; override the stages you need (all continue by default)."""

    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, name: str, options: Any, settings: Settings) -> None:
        self.name = name
        self.options = options
        self.settings = settings
