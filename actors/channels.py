"""Every channel of a call, opened in one place with a named size.

Sizes are counted in messages.  Audio batches are ~100 ms each, so
``AUDIO_CHANNEL_SIZE = 20`` holds ~2 s between two actors before backpressure.
"""

from __future__ import annotations

import attrs
import trio

from .messages import AudioBatch, CallEvent

__all__ = ["AUDIO_CHANNEL_SIZE", "EVENT_CHANNEL_SIZE", "CallChannels", "open_call_channels"]

AUDIO_CHANNEL_SIZE = 20
EVENT_CHANNEL_SIZE = 256


@attrs.frozen
class CallChannels:
    events_send: trio.MemorySendChannel[CallEvent]
    events_receive: trio.MemoryReceiveChannel[CallEvent]
    #: TwilioReader → Resampler; None when the provider takes Twilio's mu-law as it comes
    #: (the reader then writes into the ReplayBuffer itself)
    mulaw_send: trio.MemorySendChannel[AudioBatch] | None = None
    mulaw_receive: trio.MemoryReceiveChannel[AudioBatch] | None = None


def open_call_channels(*, mulaw: bool = True) -> CallChannels:
    events_send, events_receive = trio.open_memory_channel[CallEvent](EVENT_CHANNEL_SIZE)
    if not mulaw:
        return CallChannels(events_send, events_receive)
    mulaw_send, mulaw_receive = trio.open_memory_channel[AudioBatch](AUDIO_CHANNEL_SIZE)
    return CallChannels(events_send, events_receive, mulaw_send, mulaw_receive)
