"""Log-line helpers: what a peer sent, made safe to print; who the peer is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["peer_label", "printable"]


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe for one log line: control characters escaped, at most ``limit``
    characters (a peer's field cannot forge or flood log lines)."""
    if text.isprintable() and len(text) <= limit:
        return text
    escaped = text.encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[:limit] + "…"


def peer_label(scope: Mapping[str, Any]) -> str:
    """``host:port`` of the peer of an ASGI scope, for log lines."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown peer"
