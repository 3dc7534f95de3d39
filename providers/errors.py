"""Typed provider errors.  The type says who is at fault and whether a retry can help.

Resilience code decides by ``isinstance`` / ``.fatal``, never by string matching.
Messages never contain credentials: codecs and clients build them from vendor error
text and status/close codes only.
"""

from __future__ import annotations

__all__ = [
    "ProviderError",
    "ProviderFatalError",
    "ProviderAuthError",
    "ProviderQuotaError",
    "ProviderConfigError",
    "ProviderRetryableError",
    "ProviderConnectionError",
    "ProviderOverloadedError",
    "ProviderStalledError",
    "ProviderProtocolError",
    "error_for_close_code",
    "error_for_http_status",
]


class ProviderError(Exception):
    """Base of every provider failure."""

    fatal: bool = False

    def __init__(
        self,
        provider: str,
        detail: str,
        *,
        code: int | None = None,
        status: int | None = None,
        vendor_type: str | None = None,
    ) -> None:
        super().__init__(f"{provider}: {detail}")
        self.provider = provider
        self.detail = detail
        self.code = code  # WebSocket close code, when there was one
        self.status = status  # HTTP status of a refused handshake
        self.vendor_type = vendor_type  # the vendor's own error name, e.g. "auth_error"


class ProviderFatalError(ProviderError):
    """Retrying the same provider with the same configuration cannot help."""

    fatal = True


class ProviderAuthError(ProviderFatalError):
    """Bad or missing credentials."""


class ProviderQuotaError(ProviderFatalError):
    """Usage quota or billing exhausted."""


class ProviderConfigError(ProviderFatalError):
    """The vendor rejected our configuration or audio format."""


class ProviderRetryableError(ProviderError):
    """Transient: reconnecting (with backoff) may succeed."""


class ProviderConnectionError(ProviderRetryableError):
    """Could not connect, or the connection dropped (1006, 1011, 5xx handshake)."""


class ProviderOverloadedError(ProviderRetryableError):
    """The vendor is rate limiting or out of capacity."""


class ProviderStalledError(ProviderRetryableError):
    """The vendor stopped answering or reading while audio flowed."""


class ProviderProtocolError(ProviderRetryableError):
    """The vendor sent something we cannot parse (garbage, a missing field)."""


def error_for_http_status(provider: str, status: int, detail: str = "") -> ProviderError:
    """Map a refused WebSocket handshake to a typed error."""
    text = f"handshake refused with HTTP {status}" + (f": {detail}" if detail else "")
    if status in (401, 403):
        return ProviderAuthError(provider, text, status=status)
    if status == 402:
        return ProviderQuotaError(provider, text, status=status)
    if status == 429:
        return ProviderOverloadedError(provider, text, status=status)
    if status in (400, 404, 405, 422):
        return ProviderConfigError(provider, text, status=status)
    return ProviderConnectionError(provider, text, status=status)


def error_for_close_code(provider: str, code: int, reason: str = "") -> ProviderError:
    """Map a close code with no vendor-specific meaning to a typed error."""
    text = f"connection closed with code {code}" + (f" ({reason})" if reason else "")
    if code == 1008:
        return ProviderAuthError(provider, text, code=code)
    if code in (1003, 1007, 1009, 1010):
        return ProviderConfigError(provider, text, code=code)
    if code == 1013:
        return ProviderOverloadedError(provider, text, code=code)
    return ProviderConnectionError(provider, text, code=code)
