"""Which sessions a filter applies to: SMTP and/or local submission, and which listeners.

Mirrors Postfix's ``smtpd_milters`` / ``non_smtpd_milters`` and Sendmail's
per-daemon ``InputMailFilters``. Settings: a filter entry's ``smtpd``,
``non_smtpd`` and ``listeners``.
"""

from __future__ import annotations

from mailwright.config.schema import FilterScope
from mailwright.policy.hooks import SessionInfo


def covers(scope: FilterScope, session: SessionInfo) -> bool:
    if session.is_local:
        return scope.non_smtpd
    if not scope.smtpd:
        return False
    return not scope.listeners or session.listener_name in scope.listeners
