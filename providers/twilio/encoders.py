"""Encoders for both directions of a Twilio Media Streams socket.

App → Twilio (bidirectional ``<Connect><Stream>``): ``encode_media``, ``encode_mark``,
``encode_clear``.  Twilio → app (our call simulator, tests, benchmarks):
``encode_connected``, ``encode_start``, ``encode_media_event``, ``encode_dtmf``,
``encode_mark_event``, ``encode_stop``.

Each returns one compact JSON text frame with the keys in the order of Twilio's
documented examples; counters are JSON strings, ``sampleRate`` and ``channels`` JSON
numbers, payloads base64.  ``decode_message(encode_x(...))`` gives back the event with
those values.  Arguments are not validated: callers pass what they mean to send.
"""

from __future__ import annotations

import base64

import orjson

from .events import MULAW_8K_MONO, MediaFormat

__all__ = [
    "encode_media",
    "encode_mark",
    "encode_clear",
    "encode_connected",
    "encode_start",
    "encode_media_event",
    "encode_dtmf",
    "encode_mark_event",
    "encode_stop",
]


def _dumps(message: dict) -> str:
    return orjson.dumps(message).decode()


def _b64(payload: bytes) -> str:
    return base64.b64encode(payload).decode("ascii")


def encode_media(stream_sid: str, payload: bytes) -> str:
    """App → Twilio: play ``payload`` (raw mu-law 8 kHz mono) into the call."""
    return _dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": _b64(payload)}})


def encode_mark(stream_sid: str, name: str) -> str:
    """App → Twilio: ask for ``name`` to be echoed once the audio queued before it played."""
    return _dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def encode_clear(stream_sid: str) -> str:
    """App → Twilio: drop all queued audio and echo every pending mark (barge-in)."""
    return _dumps({"event": "clear", "streamSid": stream_sid})


def encode_connected(*, protocol: str = "Call", version: str = "1.0.0") -> str:
    """Twilio → app: the first message of every stream."""
    return _dumps({"event": "connected", "protocol": protocol, "version": version})


def encode_start(
    *,
    stream_sid: str,
    account_sid: str,
    call_sid: str,
    custom_parameters: dict[str, str],
    tracks: tuple[str, ...] = ("inbound",),
    media_format: MediaFormat = MULAW_8K_MONO,
    sequence_number: int = 1,
) -> str:
    """Twilio → app: the stream began (``sampleRate``/``channels`` are JSON numbers)."""
    return _dumps(
        {
            "event": "start",
            "sequenceNumber": str(sequence_number),
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": list(tracks),
                "customParameters": custom_parameters,
                "mediaFormat": {
                    "encoding": media_format.encoding,
                    "sampleRate": media_format.sample_rate,
                    "channels": media_format.channels,
                },
            },
            "streamSid": stream_sid,
        }
    )


def encode_media_event(
    *,
    stream_sid: str,
    sequence_number: int,
    chunk: int,
    timestamp: int,
    payload: bytes,
    track: str = "inbound",
) -> str:
    """Twilio → app: one frame of call audio."""
    return _dumps(
        {
            "event": "media",
            "sequenceNumber": str(sequence_number),
            "media": {
                "track": track,
                "chunk": str(chunk),
                "timestamp": str(timestamp),
                "payload": _b64(payload),
            },
            "streamSid": stream_sid,
        }
    )


def encode_dtmf(*, stream_sid: str, sequence_number: int, digit: str) -> str:
    """Twilio → app: the caller pressed ``digit`` (track ``inbound_track``)."""
    return _dumps(
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": str(sequence_number),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def encode_mark_event(*, stream_sid: str, sequence_number: int, name: str) -> str:
    """Twilio → app: the echo of the app's mark ``name``."""
    return _dumps(
        {
            "event": "mark",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def encode_stop(*, stream_sid: str, sequence_number: int, account_sid: str, call_sid: str) -> str:
    """Twilio → app: the stream ended; Twilio closes the socket next."""
    return _dumps(
        {
            "event": "stop",
            "sequenceNumber": str(sequence_number),
            "stop": {"accountSid": account_sid, "callSid": call_sid},
            "streamSid": stream_sid,
        }
    )
