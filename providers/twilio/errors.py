"""Errors of the Twilio Media Streams codec.  Every one means: Twilio's side (or whatever
pretends to be Twilio) sent something this gateway will not accept.

All are ``TwilioProtocolError``; the subclass says which rule was broken.  ``field`` is
the JSON path of the offending field in the message (``"media.payload"``,
``"start.customParameters.session"``, ``"start.tracks[0]"``), or ``None`` when the
message as a whole is at fault (not JSON, not an object, too long).  Messages never
contain payload audio or custom-parameter values.
"""

from __future__ import annotations

__all__ = [
    "TwilioProtocolError",
    "TwilioOrderError",
    "UnsupportedMediaFormatError",
    "TwilioLimitError",
]


class TwilioProtocolError(Exception):
    """A message is malformed: not JSON, a missing field, a wrong type, bad base64 ..."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {detail}" if field is not None else detail)
        self.detail = detail
        self.field = field


class TwilioOrderError(TwilioProtocolError):
    """A well-formed message arrived in an order the protocol forbids.

    ``connected`` not first, ``media``/``dtmf``/``mark``/``stop`` before ``start``, a
    second ``start``, anything after ``stop``.  ``field`` is ``"event"``.
    """


class UnsupportedMediaFormatError(TwilioProtocolError):
    """``start.mediaFormat`` is not the one this gateway can decode (mu-law, 8 kHz, mono)."""


class TwilioLimitError(TwilioProtocolError):
    """A configured ``TwilioLimits`` bound was exceeded.

    ``limit`` is the name of the ``TwilioLimits`` field, ``value`` what arrived and
    ``maximum`` the configured bound.
    """

    def __init__(
        self, detail: str, field: str | None = None, *, limit: str, value: int, maximum: int
    ) -> None:
        super().__init__(detail, field)
        self.limit = limit
        self.value = value
        self.maximum = maximum
