"""The Twilio Media Streams state machine (what either side sends is built by ``encoders.py``).

Sans-I/O: text in, events out; arguments in, text out.  No trio, no clock, no logging.
"""

from __future__ import annotations

import enum

import attrs

from .converter import EVENT_NAMES, decode_message
from .errors import TwilioLimitError, TwilioOrderError, TwilioProtocolError, UnsupportedMediaFormatError
from .events import (
    MULAW_8K_MONO,
    Connected,
    Dtmf,
    DuplicateDropped,
    Mark,
    Media,
    MediaFormat,
    Start,
    Stop,
    TwilioEvent,
    UnknownEvent,
)

__all__ = [
    "TwilioLimits",
    "DecoderStatistics",
    "TwilioStreamDecoder",
    "SUPPORTED_MEDIA_FORMAT",
]

#: The one format the gateway decodes; anything else in ``start`` is refused.
SUPPORTED_MEDIA_FORMAT = MULAW_8K_MONO


@attrs.frozen
class TwilioLimits:
    """Bounds on what one peer may make the decoder hold; exceeding one raises
    ``TwilioLimitError``.

    ``max_payload_bytes``: decoded bytes in one ``media`` message (8000 = 1 s of audio).
    ``max_custom_parameters``: entries in ``start.customParameters``.
    ``max_custom_parameter_chars``: ``len(name) + len(value)`` of one parameter.
    ``max_message_chars``: length of one text frame (bytes, when given bytes).
    """

    max_payload_bytes: int = 8000
    max_custom_parameters: int = 64
    max_custom_parameter_chars: int = 1000
    max_message_chars: int = 64 * 1024  # the gateway's --max-message-bytes default too


@attrs.frozen
class DecoderStatistics:
    """Snapshot of a ``TwilioStreamDecoder``'s counters.

    ``messages``: messages accepted (including dropped duplicates; not those that raised).
    ``media_frames`` / ``media_bytes``: ``Media`` events returned and their payload bytes.
    ``sequence_gaps``: forward jumps of ``sequenceNumber``; ``missing_messages``: the
    messages those jumps skipped.  ``duplicates``: ``DuplicateDropped`` returned.
    ``unknown_events``: ``UnknownEvent`` returned.  ``dtmf`` / ``marks``: ``Dtmf`` /
    ``Mark`` returned.
    """

    messages: int = 0
    media_frames: int = 0
    media_bytes: int = 0
    sequence_gaps: int = 0
    missing_messages: int = 0
    duplicates: int = 0
    unknown_events: int = 0
    dtmf: int = 0
    marks: int = 0


class _State(enum.Enum):
    # ``connected`` is optional: a stream that opens with ``start`` is accepted.
    INITIAL = enum.auto()
    CONNECTED = enum.auto()
    STREAMING = enum.auto()
    STOPPED = enum.auto()


_INITIAL = _State.INITIAL
_CONNECTED = _State.CONNECTED
_STREAMING = _State.STREAMING
_STOPPED = _State.STOPPED


class TwilioStreamDecoder:
    """Decodes the messages Twilio sends on one Media Streams socket, in order::

        connected → start → (media | dtmf | mark)* → stop

    ``receive(text)`` returns exactly one event per message, or raises.

    Order (``TwilioOrderError``): ``connected`` only as the first message; ``start`` at
    most once, first or after ``connected``; ``media``/``dtmf``/``mark``/``stop`` only
    after ``start``; nothing at all after ``stop``.  Unknown event names are accepted
    anywhere before ``stop`` and returned as ``UnknownEvent``.

    Sequence: ``start``'s ``sequenceNumber`` is the anchor; every later message that
    carries one should be the last + 1.  A forward jump is a gap: counted, the message
    is returned normally.  A number not after the last is a duplicate: the message has
    no effect and ``DuplicateDropped`` is returned instead.  ``chunk`` and ``timestamp``
    are parsed but not checked for order (the first timestamp may be > 0).

    Identity: every message after ``start`` must carry ``start``'s ``streamSid``
    (``TwilioProtocolError``, field ``streamSid``); unknown events are not checked.

    Content: ``start.mediaFormat`` must be ``SUPPORTED_MEDIA_FORMAT``
    (``UnsupportedMediaFormatError``); ``TwilioLimits`` apply (``TwilioLimitError``).

    Checks run in this order: message length, wire format (``converter.py``), order,
    ``streamSid``, content, sequence.  A message that raises changes neither state nor
    statistics, so the caller decides whether the stream goes on (normally it ends).
    """

    def __init__(self, limits: TwilioLimits | None = None) -> None:
        self.limits = limits or TwilioLimits()
        self._max_message_chars = self.limits.max_message_chars
        self._max_payload_bytes = self.limits.max_payload_bytes
        self._state = _INITIAL
        self._start: Start | None = None
        self._stream_sid: str | None = None
        self._last_sequence = 0
        self._messages = 0
        self._media_frames = 0
        self._media_bytes = 0
        self._sequence_gaps = 0
        self._missing_messages = 0
        self._duplicates = 0
        self._unknown_events = 0
        self._dtmf = 0
        self._marks = 0

    @property
    def started(self) -> bool:
        """``start`` has been received (stays true after ``stop``)."""
        return self._start is not None

    @property
    def stopped(self) -> bool:
        """``stop`` has been received: any further message is an order error."""
        return self._state is _STOPPED

    @property
    def start(self) -> Start | None:
        """The ``start`` event of this stream, once received."""
        return self._start

    def statistics(self) -> DecoderStatistics:
        """A frozen snapshot of the counters."""
        return DecoderStatistics(
            messages=self._messages,
            media_frames=self._media_frames,
            media_bytes=self._media_bytes,
            sequence_gaps=self._sequence_gaps,
            missing_messages=self._missing_messages,
            duplicates=self._duplicates,
            unknown_events=self._unknown_events,
            dtmf=self._dtmf,
            marks=self._marks,
        )

    def receive(self, text: str | bytes) -> TwilioEvent:
        """Decode one text frame from Twilio into one event (see the class docstring)."""
        if len(text) > self._max_message_chars:
            raise TwilioLimitError(
                f"message of {len(text)} characters exceeds max_message_chars={self._max_message_chars}",
                limit="max_message_chars",
                value=len(text),
                maximum=self._max_message_chars,
            )
        event = decode_message(text)
        if type(event) is Media and self._state is _STREAMING:  # the hot path
            if event.stream_sid != self._stream_sid:
                raise self._stream_sid_error(event.stream_sid)
            size = len(event.payload)
            if size > self._max_payload_bytes:
                raise TwilioLimitError(
                    f"{size} decoded bytes exceed max_payload_bytes={self._max_payload_bytes}",
                    "media.payload",
                    limit="max_payload_bytes",
                    value=size,
                    maximum=self._max_payload_bytes,
                )
            sequence = event.sequence_number
            if sequence != self._last_sequence + 1:
                duplicate = self._account_sequence(sequence, "media")
                if duplicate is not None:
                    return duplicate
            else:
                self._last_sequence = sequence
            self._messages += 1
            self._media_frames += 1
            self._media_bytes += size
            return event
        return self._receive_other(event)

    # ------------------------------------------------------------------ the rest

    def _receive_other(self, event: TwilioEvent) -> TwilioEvent:
        state = self._state
        name = EVENT_NAMES.get(type(event)) or event.event  # type: ignore[union-attr]
        if state is _STOPPED:
            raise TwilioOrderError(f"{name} after stop: nothing may follow stop", "event")
        if isinstance(event, UnknownEvent):
            if state is _STREAMING and event.sequence_number is not None:
                duplicate = self._account_sequence(event.sequence_number, name)
                if duplicate is not None:
                    return duplicate
            self._messages += 1
            self._unknown_events += 1
            return event
        if isinstance(event, Connected):
            if state is _CONNECTED:
                raise TwilioOrderError("a second connected", "event")
            if state is _STREAMING:
                raise TwilioOrderError("connected after start: connected must be first", "event")
            self._state = _CONNECTED
            self._messages += 1
            return event
        if isinstance(event, Start):
            if state is _STREAMING:
                raise TwilioOrderError("a second start: start comes once per stream", "event")
            _check_media_format(event.media_format)
            self._check_custom_parameters(event.custom_parameters)
            self._state = _STREAMING
            self._start = event
            self._stream_sid = event.stream_sid
            self._last_sequence = event.sequence_number
            self._messages += 1
            return event
        # media, dtmf, mark, stop
        if state is not _STREAMING:
            raise TwilioOrderError(f"{name} before start", "event")
        if event.stream_sid != self._stream_sid:  # type: ignore[union-attr]
            raise self._stream_sid_error(event.stream_sid)  # type: ignore[union-attr]
        duplicate = self._account_sequence(event.sequence_number, name)  # type: ignore[union-attr]
        if duplicate is not None:
            return duplicate
        self._messages += 1
        if isinstance(event, Dtmf):
            self._dtmf += 1
        elif isinstance(event, Mark):
            self._marks += 1
        elif isinstance(event, Stop):
            self._state = _STOPPED
        return event

    def _account_sequence(self, sequence: int, name: str) -> DuplicateDropped | None:
        """Record ``sequence``; a ``DuplicateDropped`` (already counted) if it is not new."""
        last = self._last_sequence
        if sequence <= last:
            self._messages += 1
            self._duplicates += 1
            return DuplicateDropped(sequence, name)
        if sequence > last + 1:
            self._sequence_gaps += 1
            self._missing_messages += sequence - last - 1
        self._last_sequence = sequence
        return None

    def _stream_sid_error(self, stream_sid: str) -> TwilioProtocolError:
        return TwilioProtocolError(
            f"{stream_sid!r} is not this stream's streamSid {self._stream_sid!r}", "streamSid"
        )

    def _check_custom_parameters(self, parameters: dict[str, str]) -> None:
        limits = self.limits
        if len(parameters) > limits.max_custom_parameters:
            raise TwilioLimitError(
                f"{len(parameters)} parameters exceed max_custom_parameters={limits.max_custom_parameters}",
                "start.customParameters",
                limit="max_custom_parameters",
                value=len(parameters),
                maximum=limits.max_custom_parameters,
            )
        for name, value in parameters.items():
            chars = len(name) + len(value)
            if chars > limits.max_custom_parameter_chars:
                raise TwilioLimitError(
                    f"name and value of {chars} characters exceed "
                    f"max_custom_parameter_chars={limits.max_custom_parameter_chars}",
                    f"start.customParameters.{name}",
                    limit="max_custom_parameter_chars",
                    value=chars,
                    maximum=limits.max_custom_parameter_chars,
                )


def _describe_format(media_format: MediaFormat) -> str:
    channels = "channel" if media_format.channels == 1 else "channels"
    return f"{media_format.encoding}, {media_format.sample_rate} Hz, {media_format.channels} {channels}"


def _check_media_format(media_format: MediaFormat) -> None:
    supported = SUPPORTED_MEDIA_FORMAT
    if media_format == supported:
        return
    if media_format.encoding != supported.encoding:
        field = "start.mediaFormat.encoding"
    elif media_format.sample_rate != supported.sample_rate:
        field = "start.mediaFormat.sampleRate"
    else:
        field = "start.mediaFormat.channels"
    raise UnsupportedMediaFormatError(
        f"unsupported media format {_describe_format(media_format)}; "
        f"supported: {_describe_format(supported)}",
        field,
    )
