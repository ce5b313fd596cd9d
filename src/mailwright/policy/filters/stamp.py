"""The ``stamp`` filter: adds or rewrites one configured header field on every message.

Typical use: a do-not-forward mark, a site tag, a policy notice. ``mode``:
``replace`` (default) removes every existing field of that name first, so a
client cannot forge it; ``add`` always adds one more; ``keep`` adds only when
the message has none. ``position``: ``bottom`` (after the client's headers,
like a milter's ADDHEADER) or ``top`` (above everything, like INSHEADER 0).
Settings: its ``options`` (header, value, mode, position).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from mailwright.core.headers import Header
from mailwright.core.reply import Reply
from mailwright.policy.filters.base import Filter
from mailwright.policy.hooks import SessionInfo, Transaction

_FIELD_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")


class StampOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    header: str
    value: str
    mode: Literal["replace", "add", "keep"] = "replace"
    position: Literal["bottom", "top"] = "bottom"

    @field_validator("header")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _FIELD_NAME.match(value):
            raise ValueError(f"{value!r} is not a header field name")
        return value

    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("the value must be one line")
        return value


class StampFilter(Filter):
    Options = StampOptions

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        options: StampOptions = self.options
        headers = txn.headers
        assert headers is not None
        existing = headers.count_of(options.header)
        if options.mode == "keep" and existing:
            return None
        if options.mode == "replace" and existing:
            headers[:] = [h for h in headers if not h.is_(options.header)]
        field = Header.make(options.header, options.value)
        if options.position == "top":
            headers.insert(0, field)
        else:
            headers.append(field)
        return None
