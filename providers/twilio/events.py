"""The closed set of events a Twilio Media Streams socket produces, as seen by the app.

Field names are the snake_case forms of Twilio's camelCase JSON names; counters that
Twilio sends as JSON strings (``sequenceNumber``, ``chunk``, ``timestamp``) are ints
here, and ``payload`` is the decoded raw mu-law bytes.  No dict from the wire travels
past the codec: ``custom_parameters`` is a fresh dict the codec never touches again.

Besides Twilio's own messages there are two bookkeeping events the decoder returns
instead of ever returning ``None``:

- ``UnknownEvent``: a well-formed message whose ``event`` name we do not know (Twilio
  adds events over time); tolerated and counted.
- ``DuplicateDropped``: a message whose ``sequenceNumber`` is not after the last one
  seen; its content must not be forwarded a second time.
"""

from __future__ import annotations

from typing import Union

import attrs

__all__ = [
    "Connected",
    "MediaFormat",
    "MULAW_8K_MONO",
    "Start",
    "Media",
    "Dtmf",
    "Mark",
    "Stop",
    "UnknownEvent",
    "DuplicateDropped",
    "TwilioEvent",
]


@attrs.frozen
class Connected:
    """Twilio's first message: the socket speaks ``protocol`` (``"Call"``) at ``version``."""

    protocol: str
    version: str


@attrs.frozen
class MediaFormat:
    """``start.mediaFormat``: the audio encoding of every later ``media`` payload."""

    encoding: str
    sample_rate: int
    channels: int


#: The only format Twilio documents for Media Streams: G.711 mu-law, 8 kHz, mono.
MULAW_8K_MONO = MediaFormat("audio/x-mulaw", 8000, 1)


@attrs.frozen
class Start:
    """The stream began: who is calling, which tracks follow, in which format.

    ``custom_parameters`` holds the ``<Parameter>`` pairs of the TwiML (``{}`` when there
    were none).  It is a plain dict for convenience and excluded from the hash.
    """

    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str] = attrs.field(hash=False)
    media_format: MediaFormat


@attrs.frozen
class Media:
    """One frame of audio: ``payload`` is raw mu-law bytes (160 bytes = 20 ms, usually).

    ``timestamp`` is milliseconds since the stream started and need not begin at 0;
    ``chunk`` counts media messages from 1.
    """

    sequence_number: int
    stream_sid: str
    track: str
    chunk: int
    timestamp: int
    payload: bytes


@attrs.frozen
class Dtmf:
    """The caller pressed ``digit`` (``"0"``-``"9"``, ``"*"``, ``"#"``)."""

    sequence_number: int
    stream_sid: str
    track: str
    digit: str


@attrs.frozen
class Mark:
    """Twilio's echo of a mark the app sent: the audio queued before it has played."""

    sequence_number: int
    stream_sid: str
    name: str


@attrs.frozen
class Stop:
    """The stream ended (the call ended or the stream was stopped); nothing follows."""

    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str


@attrs.frozen
class UnknownEvent:
    """A well-formed message with an ``event`` name this codec does not know."""

    event: str
    sequence_number: int | None = None


@attrs.frozen
class DuplicateDropped:
    """A message whose ``sequenceNumber`` was not after the last one: dropped, counted."""

    sequence_number: int
    event: str


TwilioEvent = Union[Connected, Start, Media, Dtmf, Mark, Stop, UnknownEvent, DuplicateDropped]
