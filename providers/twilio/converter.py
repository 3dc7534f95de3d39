"""Twilio Media Streams JSON → events: the one place the wire format is interpreted.

Contract of ``decode_message(text)``: parse one text frame (``str`` or UTF-8 ``bytes``)
and return exactly one of ``Connected``, ``Start``, ``Media``, ``Dtmf``, ``Mark``,
``Stop`` or ``UnknownEvent``; or raise ``TwilioProtocolError`` whose ``field`` is the
JSON path of the first offending field (``None`` when the text is not JSON or not an
object).  Nothing else escapes: no ``KeyError``, ``TypeError``, ``ValueError`` or cattrs
``ClassValidationError``.  Stateless: order, sequence and limit rules live in
``protocol.py``.

The wire rules, all enforced by one private cattrs converter (``structure_message``):

- the message is a JSON object, tagged by the string ``"event"``;
- camelCase keys (``sequenceNumber``, ``streamSid``, ``sampleRate`` ...) map to the
  snake_case event fields; unknown keys are ignored (Twilio adds fields over time);
- counters (``sequenceNumber``, ``chunk``, ``timestamp``) are JSON strings of 1 to 18
  ASCII decimal digits, turned into ints; ``sampleRate`` and ``channels`` are JSON
  integers (not booleans, not floats);
- strings are strings: nothing is coerced with ``str()``;
- ``media.payload`` is strict base64 (``base64.b64decode(s, validate=True)``);
- ``start.tracks`` is an array of strings, ``start.customParameters`` an object of
  string values, ``start.streamSid`` equals the top-level ``streamSid``;
- an event name we do not know becomes ``UnknownEvent`` carrying its
  ``sequenceNumber`` (validated when present); its other fields are not read.

``media`` — 50 messages per second per call — takes a hand-written fast path that
accepts exactly the messages the converter accepts and builds the identical ``Media``;
on anything unusual it hands the message to the converter, which produces the error.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, NewType, Union

import attrs
import cattrs
import orjson
from cattrs.errors import AttributeValidationNote, ClassValidationError
from cattrs.gen import make_dict_structure_fn, override
from cattrs.strategies import configure_tagged_union

from ..jsonwire import describe
from .errors import TwilioProtocolError
from .events import Connected, Dtmf, Mark, Media, MediaFormat, Start, Stop, UnknownEvent

__all__ = ["decode_message", "structure_message", "EVENT_NAMES", "MAX_COUNTER_DIGITS"]

#: Counters longer than this are rejected: 18 digits fit in int64, and a bound keeps
#: ``int()`` cheap (and below Python's 4300-digit conversion limit).
MAX_COUNTER_DIGITS = 18

_Counter = NewType("_Counter", int)  # a JSON string of decimal digits
_Base64 = NewType("_Base64", bytes)  # a JSON string of strict base64


class _FieldError(Exception):
    """Raised by our hooks; ``path`` is relative to the value being structured."""

    def __init__(self, detail: str, path: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.path = path


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


# ---------------------------------------------------------------------- strict hooks


def _structure_str(value: Any, _: Any) -> str:
    if type(value) is not str:
        raise _FieldError(f"expected a string, got {describe(value)}")
    return value


def _structure_int(value: Any, _: Any) -> int:
    if type(value) is not int:
        raise _FieldError(f"expected an integer, got {describe(value)}")
    return value


def _structure_counter(value: Any, _: Any) -> int:
    if (
        type(value) is not str
        or not 0 < len(value) <= MAX_COUNTER_DIGITS
        or not value.isascii()
        or not value.isdigit()
    ):
        raise _FieldError(
            f"expected a string of 1 to {MAX_COUNTER_DIGITS} decimal digits, got {describe(value)}"
        )
    return int(value)


def _structure_optional_counter(value: Any, _: Any) -> int | None:
    return None if value is None else _structure_counter(value, _)


def _structure_base64(value: Any, _: Any) -> bytes:
    if type(value) is not str:
        raise _FieldError(f"expected a base64 string, got {describe(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII str
        raise _FieldError("invalid base64") from None


def _structure_str_tuple(value: Any, _: Any) -> tuple[str, ...]:
    if type(value) is not list:
        raise _FieldError(f"expected an array of strings, got {describe(value)}")
    for index, item in enumerate(value):
        if type(item) is not str:
            raise _FieldError(f"expected a string, got {describe(item)}", f"[{index}]")
    return tuple(value)


def _structure_str_dict(value: Any, _: Any) -> dict[str, str]:
    if type(value) is not dict:
        raise _FieldError(f"expected an object of strings, got {describe(value)}")
    for key, item in value.items():  # JSON object keys are always strings
        if type(item) is not str:
            raise _FieldError(f"expected a string, got {describe(item)}", f".{key}")
    return dict(value)


# ---------------------------------------------------------------------- wire shapes
# Twilio nests each event's body under its name; these mirror the JSON and are
# flattened into the public events below.


@attrs.frozen
class _StartBody:
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    media_format: MediaFormat


@attrs.frozen
class _StartMessage:
    sequence_number: _Counter
    stream_sid: str
    start: _StartBody


@attrs.frozen
class _MediaBody:
    track: str
    chunk: _Counter
    timestamp: _Counter
    payload: _Base64


@attrs.frozen
class _MediaMessage:
    sequence_number: _Counter
    stream_sid: str
    media: _MediaBody


@attrs.frozen
class _DtmfBody:
    track: str
    digit: str


@attrs.frozen
class _DtmfMessage:
    sequence_number: _Counter
    stream_sid: str
    dtmf: _DtmfBody


@attrs.frozen
class _MarkBody:
    name: str


@attrs.frozen
class _MarkMessage:
    sequence_number: _Counter
    stream_sid: str
    mark: _MarkBody


@attrs.frozen
class _StopBody:
    account_sid: str
    call_sid: str


@attrs.frozen
class _StopMessage:
    sequence_number: _Counter
    stream_sid: str
    stop: _StopBody


# ---------------------------------------------------------------------- the converter

_converter = cattrs.Converter(detailed_validation=True)
_converter.register_structure_hook(str, _structure_str)
_converter.register_structure_hook(int, _structure_int)
_converter.register_structure_hook(_Counter, _structure_counter)
_converter.register_structure_hook(_Base64, _structure_base64)
_converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _structure_str_tuple)
_converter.register_structure_hook_func(lambda t: t == dict[str, str], _structure_str_dict)


def _register_object(cls: type, **overrides: Any) -> None:
    """Structure ``cls`` from a JSON object with camelCase keys; anything else is an error."""
    renames = {
        field.name: override(rename=_camel(field.name))
        for field in attrs.fields(cls)
        if "_" in field.name
    }
    renames.update(overrides)
    structure = make_dict_structure_fn(cls, _converter, **renames)

    def structure_object(value: Any, _: Any) -> Any:
        if type(value) is not dict:
            raise _FieldError(f"expected an object, got {describe(value)}")
        return structure(value, cls)

    _converter.register_structure_hook(cls, structure_object)


for _cls in (MediaFormat, _StartBody, _MediaBody, _DtmfBody, _MarkBody, _StopBody):
    _register_object(_cls)
for _cls in (Connected, _StartMessage, _MediaMessage, _DtmfMessage, _MarkMessage, _StopMessage):
    _register_object(_cls)
_register_object(
    UnknownEvent,
    sequence_number=override(rename="sequenceNumber", struct_hook=_structure_optional_counter),
)


def _flattened(wire: type, build: Any) -> Any:
    structure_wire = _converter.get_structure_hook(wire)

    def structure(value: Any, _: Any) -> Any:
        return build(structure_wire(value, wire))

    return structure


def _start(m: _StartMessage) -> Start:
    s = m.start
    if s.stream_sid != m.stream_sid:
        raise _FieldError("does not match the top-level streamSid", ".start.streamSid")
    return Start(
        m.sequence_number,
        m.stream_sid,
        s.account_sid,
        s.call_sid,
        s.tracks,
        s.custom_parameters,
        s.media_format,
    )


def _media(m: _MediaMessage) -> Media:
    b = m.media
    return Media(m.sequence_number, m.stream_sid, b.track, b.chunk, b.timestamp, b.payload)


_converter.register_structure_hook(Start, _flattened(_StartMessage, _start))
_converter.register_structure_hook(Media, _flattened(_MediaMessage, _media))
_converter.register_structure_hook(
    Dtmf,
    _flattened(_DtmfMessage, lambda m: Dtmf(m.sequence_number, m.stream_sid, m.dtmf.track, m.dtmf.digit)),
)
_converter.register_structure_hook(
    Mark, _flattened(_MarkMessage, lambda m: Mark(m.sequence_number, m.stream_sid, m.mark.name))
)
_converter.register_structure_hook(
    Stop,
    _flattened(
        _StopMessage,
        lambda m: Stop(m.sequence_number, m.stream_sid, m.stop.account_sid, m.stop.call_sid),
    ),
)

_KnownMessage = Union[Connected, Start, Media, Dtmf, Mark, Stop]
#: The wire name of each known event class.
EVENT_NAMES: dict[type, str] = {
    Connected: "connected",
    Start: "start",
    Media: "media",
    Dtmf: "dtmf",
    Mark: "mark",
    Stop: "stop",
}
_KNOWN_EVENTS = frozenset(EVENT_NAMES.values())
# No ``default=UnknownEvent`` here: cattrs keeps its tag table in a defaultdict, which
# would remember every unknown event name a peer ever sent.  Unknown names are routed
# to UnknownEvent before the union is consulted.
configure_tagged_union(_KnownMessage, _converter, EVENT_NAMES.__getitem__, tag_name="event")
_structure_known = _converter.get_structure_hook(_KnownMessage)
_structure_unknown = _converter.get_structure_hook(UnknownEvent)


def _protocol_error(exc: BaseException) -> TwilioProtocolError:
    """The first leaf of a cattrs error tree, as a ``TwilioProtocolError`` with its path."""
    path = ""
    while isinstance(exc, ClassValidationError):
        exc = exc.exceptions[0]  # errors are collected in field order: report the first
        for note in getattr(exc, "__notes__", ()):
            if isinstance(note, AttributeValidationNote):
                path += "." + _camel(note.name)
                break
    if isinstance(exc, _FieldError):
        path += exc.path
        detail = exc.detail
    elif isinstance(exc, KeyError):
        detail = "missing required field"
    else:  # not expected: every hook raises _FieldError
        detail = f"invalid value ({type(exc).__name__})"
    return TwilioProtocolError(detail, path.lstrip(".") or None)


# ---------------------------------------------------------------------- entry points


def structure_message(obj: Any) -> Connected | Start | Media | Dtmf | Mark | Stop | UnknownEvent:
    """Structure one parsed JSON value with the converter (the reference path)."""
    if type(obj) is not dict:
        raise TwilioProtocolError(f"expected a JSON object, got {describe(obj)}")
    if "event" not in obj:
        raise TwilioProtocolError("missing required field", "event")
    event = obj["event"]
    if type(event) is not str:
        raise TwilioProtocolError(f"expected a string, got {describe(event)}", "event")
    try:
        if event in _KNOWN_EVENTS:
            return _structure_known(obj, _KnownMessage)
        return _structure_unknown(obj, UnknownEvent)
    except ClassValidationError as exc:
        raise _protocol_error(exc) from exc
    except _FieldError as exc:
        raise _protocol_error(exc) from exc


_loads = orjson.loads
# ``a2b_base64(s, strict_mode=True)`` accepts a subset of what ``b64decode(s,
# validate=True)`` accepts (alphabet only, padding only at the end and correct) and
# decodes it identically, without b64decode's per-call regex; whatever it refuses
# goes to the converter, which decides with b64decode and names the error.
_a2b_base64 = binascii.a2b_base64


def decode_message(text: str | bytes) -> Connected | Start | Media | Dtmf | Mark | Stop | UnknownEvent:
    """Parse and structure one Twilio text frame (see the module docstring)."""
    try:
        obj = _loads(text)
    except orjson.JSONDecodeError as exc:
        raise TwilioProtocolError(f"invalid JSON ({exc})") from exc
    # Fast path for media: same acceptance and result as the converter, fewer calls.
    if type(obj) is dict and obj.get("event") == "media":
        seq = obj.get("sequenceNumber")
        sid = obj.get("streamSid")
        body = obj.get("media")
        if (
            type(seq) is str
            and type(sid) is str
            and type(body) is dict
            and 0 < len(seq) <= MAX_COUNTER_DIGITS
            and seq.isascii()
            and seq.isdigit()
        ):
            track = body.get("track")
            chunk = body.get("chunk")
            timestamp = body.get("timestamp")
            payload = body.get("payload")
            if (
                type(track) is str
                and type(chunk) is str
                and type(timestamp) is str
                and type(payload) is str
                and 0 < len(chunk) <= MAX_COUNTER_DIGITS
                and chunk.isascii()
                and chunk.isdigit()
                and 0 < len(timestamp) <= MAX_COUNTER_DIGITS
                and timestamp.isascii()
                and timestamp.isdigit()
            ):
                try:
                    audio = _a2b_base64(payload, strict_mode=True)
                except ValueError:  # binascii.Error, or a non-ASCII str
                    pass  # the converter decides (and names the error)
                else:
                    return Media(int(seq), sid, track, int(chunk), int(timestamp), audio)
    return structure_message(obj)
