"""JSON text frames, for the vendors whose messages are JSON: strict reading, compact writing.

Reading is strict so a codec can promise that a malformed server message raises
``ProviderProtocolError`` and nothing else (no ``KeyError``, ``TypeError`` ...):

* ``parse_object`` turns one WebSocket message into a ``WireObject`` (a binary frame,
  text that is not JSON, or JSON that is not an object are errors);
* ``WireObject`` reads fields by JSON type, never coercing (``"1"`` is not a number,
  ``true`` is not an integer); every error names the field's JSON path, e.g.
  ``$.words[2].start: expected a number, got string '1.5'``;
* ``describe`` names a JSON value in an error (the Twilio converter's too);
* ``short`` folds a vendor's text into one bounded line for an error detail.

Every vendor codec whose messages are JSON reads them here, so one malformed message
is reported alike whoever sent it.

Writing: ``dumps`` (compact, via orjson) and ``b64`` (audio bytes to base64 text).
"""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson

from .errors import ProviderProtocolError

__all__ = ["WireObject", "parse_object", "describe", "short", "dumps", "b64", "MAX_SECONDS", "DETAIL_LIMIT"]

#: Times beyond this (about 115 days) are not times: rejected before converting to ms.
MAX_SECONDS = 10_000_000.0
#: Vendor text in an error detail is cut to this many characters.
DETAIL_LIMIT = 200

_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", int: "number",
                    float: "number", bool: "boolean", type(None): "null"}


def describe(value: Any) -> str:
    """``value`` named in plain words, short: ``string 'abc'``, ``number 1.5``, ``array``."""
    if isinstance(value, str):
        return f"string {value[:32]!r}" + ("..." if len(value) > 32 else "")
    if isinstance(value, (bool, int, float)):
        return f"{_JSON_TYPE_NAMES[type(value)]} {orjson.dumps(value).decode()[:32]}"
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def short(text: str) -> str:
    """``text`` on one line (white space folded), at most ``DETAIL_LIMIT`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 3] + "..."


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``."""
    return orjson.dumps(value).decode()


def b64(audio: bytes) -> str:
    """Standard base64 (with padding) of ``audio``, as text."""
    return base64.b64encode(audio).decode("ascii")


def parse_object(provider: str, message: str | bytes) -> WireObject:
    """One server message as a JSON object; ``ProviderProtocolError`` otherwise."""
    if not isinstance(message, str):
        raise ProviderProtocolError(provider, f"binary frame of {len(message)} bytes where JSON text was expected")
    try:
        value = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise ProviderProtocolError(provider, f"message is not JSON: {message[:60]!r}") from None
    if type(value) is not dict:
        raise ProviderProtocolError(provider, f"message is a JSON {describe(value)}, not an object")
    return WireObject(provider, value)


class WireObject:
    """A JSON object being read.  Getters raise ``ProviderProtocolError`` naming the path.

    ``optional_*`` getters treat a missing key and ``null`` alike (vendors mix both)."""

    __slots__ = ("provider", "data", "path")

    def __init__(self, provider: str, data: dict[str, Any], path: str = "$") -> None:
        self.provider = provider
        self.data = data
        self.path = path

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def _error(self, key: str, detail: str) -> ProviderProtocolError:
        return ProviderProtocolError(self.provider, f"{self.path}.{key}: {detail}")

    def _required(self, key: str) -> Any:
        try:
            return self.data[key]
        except KeyError:
            raise self._error(key, "missing") from None

    def string(self, key: str) -> str:
        value = self._required(key)
        if type(value) is not str:
            raise self._error(key, f"expected a string, got {describe(value)}")
        return value

    def optional_string(self, key: str, default: str | None = None) -> str | None:
        value = self.data.get(key)
        if value is None:
            return default
        if type(value) is not str:
            raise self._error(key, f"expected a string, got {describe(value)}")
        return value

    def number(self, key: str) -> float:
        value = self._required(key)
        if type(value) not in (int, float):
            raise self._error(key, f"expected a number, got {describe(value)}")
        return float(value)

    def optional_number(self, key: str) -> float | None:
        return None if self.data.get(key) is None else self.number(key)

    def integer(self, key: str) -> int:
        value = self._required(key)
        if type(value) is not int:
            raise self._error(key, f"expected an integer, got {describe(value)}")
        return value

    def boolean(self, key: str) -> bool:
        value = self._required(key)
        if type(value) is not bool:
            raise self._error(key, f"expected a boolean, got {describe(value)}")
        return value

    def optional_boolean(self, key: str, default: bool = False) -> bool:
        return default if self.data.get(key) is None else self.boolean(key)

    def optional_integer(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if type(value) is not int:
            raise self._error(key, f"expected an integer, got {describe(value)}")
        return value

    def seconds_ms(self, key: str) -> int:
        """A time in seconds (JSON number), as whole milliseconds."""
        seconds = self.number(key)
        if not (math.isfinite(seconds) and 0 <= seconds <= MAX_SECONDS):
            raise self._error(key, f"expected a time in seconds, got {seconds:g}")
        return round(seconds * 1000)

    def optional_seconds_ms(self, key: str) -> int | None:
        """A time in seconds (JSON number), as whole milliseconds; ``None`` if absent."""
        return None if self.data.get(key) is None else self.seconds_ms(key)

    def number_ms(self, key: str) -> int:
        """A time in milliseconds (any JSON number), rounded to whole milliseconds."""
        value = self.number(key)
        if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS * 1000):
            raise self._error(key, f"expected a time in milliseconds, got {value:g}")
        return round(value)

    def optional_ms(self, key: str) -> int | None:
        """A time in milliseconds (JSON integer); ``None`` if absent."""
        value = self.optional_integer(key)
        if value is not None and not 0 <= value <= MAX_SECONDS * 1000:
            raise self._error(key, f"expected a time in milliseconds, got {value}")
        return value

    def object(self, key: str) -> WireObject:
        value = self._required(key)
        if type(value) is not dict:
            raise self._error(key, f"expected an object, got {describe(value)}")
        return WireObject(self.provider, value, f"{self.path}.{key}")

    def optional_object(self, key: str) -> WireObject | None:
        return None if self.data.get(key) is None else self.object(key)

    def objects(self, key: str, *, required: bool = False) -> list[WireObject]:
        """An array of objects; a missing key or ``null`` is an empty list unless ``required``."""
        value = self._required(key) if required else self.data.get(key)
        if value is None:
            if required:
                raise self._error(key, "expected an array, got null")
            return []
        if type(value) is not list:
            raise self._error(key, f"expected an array, got {describe(value)}")
        items = []
        for index, item in enumerate(value):
            if type(item) is not dict:
                raise self._error(f"{key}[{index}]", f"expected an object, got {describe(item)}")
            items.append(WireObject(self.provider, item, f"{self.path}.{key}[{index}]"))
        return items

    def text(self, *keys: str) -> str:
        """Human text for an error: the first of ``keys`` holding a string, or a nested
        ``message``/``detail`` string (vendors vary); never raises."""
        for key in keys:
            value = self.data.get(key)
            if isinstance(value, dict) and isinstance(value.get("message", value.get("detail")), str):
                value = value.get("message", value.get("detail"))
            if isinstance(value, str) and value:
                return value[:200]
            if isinstance(value, (dict, list)) and value:
                return dumps(value)[:200]
        return ""
