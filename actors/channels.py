"""The call's two memory channels, opened by ``run_call`` with named sizes.

``mulaw``: TwilioReader's batches to the Resampler.  ``events``: call events to the
TranscriptEmitter (TwilioReader and the provider leg send on clones; the channel closes
when the last one does).  Sizes are counted in messages: audio batches are ~100 ms each,
so ``AUDIO_CHANNEL_SIZE = 20`` holds ~2 s before TwilioReader's bounded edge buffer
takes over (``edge_buffer_ms``: Twilio itself is never made to wait).

Not every buffer of a call is a channel opened here: past the Resampler, audio goes into
the ``ReplayBuffer`` (``actors.replay``), which never blocks and drops by its own counted
rule; an in-process provider (``local``, ``whisper``, ``scripted``) opens its sessions'
event channels itself (``providers/``); a lone session (``actors.session_link.DirectLink``) reads whatever
channel its caller opened.
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
    mulaw_send: trio.MemorySendChannel[AudioBatch]
    mulaw_receive: trio.MemoryReceiveChannel[AudioBatch]
    events_send: trio.MemorySendChannel[CallEvent]
    events_receive: trio.MemoryReceiveChannel[CallEvent]


def open_call_channels() -> CallChannels:
    mulaw_send, mulaw_receive = trio.open_memory_channel[AudioBatch](AUDIO_CHANNEL_SIZE)
    events_send, events_receive = trio.open_memory_channel[CallEvent](EVENT_CHANNEL_SIZE)
    return CallChannels(mulaw_send, mulaw_receive, events_send, events_receive)
