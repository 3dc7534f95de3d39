"""Sans-I/O codec for Twilio Media Streams: Twilio's JSON text frames in, frozen events
out (``TwilioStreamDecoder``); and encoders for what either side sends.

No trio, no I/O, no logging, no clock: the socket lives in ``gateway/`` (``gateway.stream_socket``,
or Hypercorn's through ``gateway.stream_endpoint``), and ``actors.twilio_reader`` drives the decoder.
"""

from .encoders import (
    encode_clear,
    encode_connected,
    encode_dtmf,
    encode_mark,
    encode_mark_event,
    encode_media,
    encode_media_event,
    encode_start,
    encode_stop,
)
from .errors import (
    TwilioLimitError,
    TwilioOrderError,
    TwilioProtocolError,
    UnsupportedMediaFormatError,
)
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
from .protocol import SUPPORTED_MEDIA_FORMAT, DecoderStatistics, TwilioLimits, TwilioStreamDecoder

__all__ = [
    # events
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
    # errors
    "TwilioProtocolError",
    "TwilioOrderError",
    "UnsupportedMediaFormatError",
    "TwilioLimitError",
    # decoder
    "TwilioLimits",
    "DecoderStatistics",
    "TwilioStreamDecoder",
    "SUPPORTED_MEDIA_FORMAT",
    # app → Twilio
    "encode_media",
    "encode_mark",
    "encode_clear",
    # Twilio → app (simulator, benchmarks)
    "encode_connected",
    "encode_start",
    "encode_media_event",
    "encode_dtmf",
    "encode_mark_event",
    "encode_stop",
]
