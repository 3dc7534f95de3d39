"""Who may read live calls: the decision for ``/calls``, ``/events``, ``/calls/…/events``
(and any other read route that serves call data).

Transcripts are personal data.  With an API token (``EARPIECE_API_TOKEN``) a request
must carry it: ``Authorization: Bearer <token>``, or ``?token=<token>`` for clients
that cannot set headers (a browser's ``EventSource``); anything else is 401.  Without a
token only loopback clients are answered (403 to others), and a request that came
through a proxy (``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``) is not loopback
whatever its socket says: a proxy on the same host would otherwise open the data to
everyone it serves.  Tokens are compared in constant time and never echoed.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import attrs

__all__ = ["ReadAccess", "AccessDecision", "is_loopback_client", "PROXY_HEADERS"]

PROXY_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-real-ip")


@attrs.frozen
class AccessDecision:
    """``status`` 200 (allowed), 401 or 403; ``why`` is for the log line and the body
    (it never contains the token)."""

    status: int
    why: str

    @property
    def allowed(self) -> bool:
        return self.status == 200


def is_loopback_client(scope: Mapping[str, Any]) -> bool:
    """The ASGI ``client`` is a loopback address and no proxy header says otherwise."""
    if any(name.lower() in PROXY_HEADERS for name, _ in scope.get("headers", ())):
        return False
    client = scope.get("client")
    if not client:
        return False
    try:
        address = ipaddress.ip_address(str(client[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _presented(scope: Mapping[str, Any]) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            scheme, _, credentials = bytes(value).strip().partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                return credentials.strip()
    query = scope.get("query_string", b"")
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key == "token" and value:
            return value.encode("latin-1", "replace")
    return None


class ReadAccess:
    """The decision, as a pure function of an ASGI scope."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    def __repr__(self) -> str:
        return f"ReadAccess({'token required' if self._token else 'loopback only'})"

    @property
    def token_required(self) -> bool:
        return self._token is not None

    def describe(self) -> str:
        """For ``serve``'s start line."""
        return "token required" if self._token else "loopback only (set EARPIECE_API_TOKEN to open them)"

    def decide(self, scope: Mapping[str, Any]) -> AccessDecision:
        if self._token is None:
            if is_loopback_client(scope):
                return AccessDecision(200, "loopback")
            return AccessDecision(403, "live call data is served to loopback clients only "
                                       "(set EARPIECE_API_TOKEN to serve it to others)")
        presented = _presented(scope)
        if presented is None:
            return AccessDecision(401, "this route needs Authorization: Bearer <EARPIECE_API_TOKEN>")
        if not hmac.compare_digest(presented, self._token):
            return AccessDecision(401, "wrong API token")
        return AccessDecision(200, "token")
