"""The names of ARC's header fields (RFC 8617) and what our ARC-Message-Signature signs.

Pure data, apart from ``core.arc`` so that the settings can name them without
loading the cryptography that ``core.arc`` needs. Reads no settings.
"""

from __future__ import annotations

AAR = "ARC-Authentication-Results"
AMS = "ARC-Message-Signature"
AS = "ARC-Seal"
ARC_FIELDS = frozenset({AAR.lower(), AMS.lower(), AS.lower()})
UNSIGNABLE = frozenset({*ARC_FIELDS, "authentication-results"})  # never in our AMS h=
# what our AMS signs by default: RFC 6376 5.4.1's set, and the DKIM signatures (RFC 8617 4.1.2)
DEFAULT_HEADERS = (
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "In-Reply-To",
    "References",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "DKIM-Signature",
)
