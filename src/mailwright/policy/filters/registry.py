"""Finding in-process filters by name: the built-ins, then entry points ``mailwright.filters``.

A third-party package makes a filter available with, in its pyproject.toml::

    [project.entry-points."mailwright.filters"]
    myfilter = "mypackage.module:MyFilter"

Trusts installed packages (they run in the daemon). Reads no settings; the
options it validates come from a ``filters`` entry.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from mailwright.policy.filters.base import Filter

GROUP = "mailwright.filters"
BUILTINS = {
    "checks": "mailwright.policy.filters.checks:ChecksFilter",
    "greylist": "mailwright.policy.filters.greylist:GreylistFilter",
    "archive": "mailwright.policy.filters.archive:ArchiveFilter",
    "spamassassin": "mailwright.policy.filters.spamassassin:SpamAssassinFilter",
    "stamp": "mailwright.policy.filters.stamp:StampFilter",
    "dkim": "mailwright.policy.filters.dkim:DkimFilter",
    "dkim_verify": "mailwright.policy.filters.dkim_verify:DkimVerifyFilter",
}


def _import(target: str) -> object:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def load(name: str) -> type[Filter]:
    """The filter class called ``name``; ``ValueError`` naming what is wrong."""
    if name in BUILTINS:
        found = _import(BUILTINS[name])
    else:
        matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
        if not matches:
            known = ", ".join(sorted({*BUILTINS, *(ep.name for ep in entry_points(group=GROUP))}))
            raise ValueError(f"no filter plugin named {name!r} (known: {known})")
        try:
            found = matches[0].load()
        except Exception as exc:
            raise ValueError(f"filter plugin {name!r} failed to load: {exc}") from None
    if not (isinstance(found, type) and issubclass(found, Filter)):
        raise ValueError(f"filter plugin {name!r} is not a mailwright Filter class")
    return found


def validate_options(name: str, options: dict[str, Any]) -> BaseModel:
    cls = load(name)
    try:
        return cls.Options.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(
            "options."
            + ".".join(str(p) for p in err["loc"])
            + ": "
            + err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ValueError(problems) from None
