"""Sans-I/O codec for Twilio Media Streams: Twilio's JSON text frames in, frozen events
out (``TwilioStreamDecoder``); and encoders for what either side sends.

No trio, no I/O, no logging, no clock: the socket lives in ``gateway/`` (``gateway.stream_socket``,
or Hypercorn's through ``gateway.stream_endpoint``), and ``actors.twilio_reader`` drives the decoder.
"""

from . import encoders, errors, events, protocol
from .encoders import *  # noqa: F403 - each module's __all__ is its public surface
from .errors import *  # noqa: F403
from .events import *  # noqa: F403
from .protocol import *  # noqa: F403

#: events, errors, the decoder, and the encoders for what either side sends
__all__ = [*events.__all__, *errors.__all__, *protocol.__all__, *encoders.__all__]
