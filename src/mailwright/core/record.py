"""Plain value classes for the modules on the ``sendmail`` start-up path.

``sendmail`` must start fast, and importing ``dataclasses`` (with ``inspect``) costs
milliseconds, so the classes it loads (``core.envelope``, ``smtp.client`` and what they
use) derive from ``Record`` instead: each writes its own ``__slots__`` and typed
``__init__`` whose parameters are named as its slots; ``Record`` compares, shows and
copies them by those slots. A ``Record`` is mutable and unhashable; a ``Value`` is one
that nothing changes after ``__init__`` (by convention) and is hashable. Reads no settings.
"""

from __future__ import annotations

from typing import Any, Self


def _fields(cls: type) -> tuple[str, ...]:
    return tuple(n for klass in reversed(cls.__mro__) for n in klass.__dict__.get("__slots__", ()))


class Record:  # noqa: PLW1641 (unhashable on purpose: __eq__ sets __hash__ to None)
    __slots__ = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _fields(self.__class__))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in _fields(self.__class__))
        return f"{self.__class__.__name__}({shown})"

    def replace(self, **changes: Any) -> Self:
        """A copy with some attributes changed, made by ``__init__`` (which checks them)."""
        names = _fields(self.__class__)
        unknown = set(changes) - set(names)
        if unknown:
            raise TypeError(f"{self.__class__.__name__} has no {', '.join(sorted(unknown))}")
        make: Any = self.__class__  # its own __init__, not Record's
        result: Self = make(**{n: changes.get(n, getattr(self, n)) for n in names})
        return result


class Value(Record):
    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self._values())
