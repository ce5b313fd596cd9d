"""The installed Mailwright version, for ``mailwright --version`` and ``sendmail -bV``.

Read from the package metadata (what pip installed), so the number printed is the one
the installed distribution carries; a source tree run without installed metadata falls
back to ``mailwright.__version__``. Standard library only, imported only when asked
(``sendmail`` must start fast). Reads no settings.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "mailwright"


def package_version() -> str:
    """``0.1.0``: the installed distribution's version."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        from mailwright import __version__

        return __version__
