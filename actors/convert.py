"""Call audio into the formats its providers take: one converter, one rule for where.

The call's audio is what Twilio sends, 8 kHz mu-law.  ``CallAudioConverter`` is the
only code that turns it into a provider's format; ``replay_format`` is the only rule
deciding where that happens, for a whole provider chain:

* every provider of the chain takes the same format: the **Resampler** converts once,
  with filter state that lives for the whole call, and the ReplayBuffer holds that
  format.  Sessions send it as they find it, so a replay after a reconnect re-sends
  the very bytes the earlier session was sent.  (For the usual chain of cloud vendors
  that format is the call's mu-law itself and nothing converts at all.)
* the providers take different formats: the ReplayBuffer keeps the call's **mu-law**
  (the smallest format any provider takes: one byte a sample at 8 kHz), the Resampler
  passes it through, and **each session** converts it for its provider
  (``session_converter``), with filter state that starts with that session's audio.

Pure: no trio, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from providers.base import MULAW_8K, AudioFormat, SttProvider

from .dsp import StreamResampler, mulaw_to_pcm16

__all__ = ["CallAudioConverter", "replay_format", "session_converter"]


def replay_format(chain: Iterable[SttProvider]) -> AudioFormat:
    """The format a call's ReplayBuffer holds (what its Resampler produces) for
    ``chain``: the one format every provider takes, or the call's mu-law when they
    take different ones."""
    formats = {provider.audio_format for provider in chain}
    return formats.pop() if len(formats) == 1 else MULAW_8K


def session_converter(held: AudioFormat, target: AudioFormat) -> CallAudioConverter | None:
    """What a session of a provider taking ``target`` converts the ReplayBuffer's
    ``held`` audio with: None when it sends it as is.  Raises ``ValueError`` when
    ``held`` is neither ``target`` nor the call's mu-law (``replay_format`` never
    chooses such a buffer)."""
    if held == target:
        return None
    if held != MULAW_8K:
        raise ValueError(f"a session cannot convert {held} audio to {target}: only the call's {MULAW_8K}")
    return CallAudioConverter(target)


class CallAudioConverter:
    """The call's 8 kHz mu-law into ``target`` (pcm16 at any rate), as a stream: decode
    with a lookup table, resample with one streaming soxr resampler
    (``StreamResampler``: state kept across chunks, never cleared mid-stream).  One
    instance per stream of audio: the call's (in the Resampler) or one session's (in its
    ``ReplayLink``).

    ``convert`` may return ``b""`` while the resampler holds back a few ms; ``flush``
    returns what it held and ends the stream.  Raises ``ValueError`` for a target that
    is not pcm16 (mu-law is the call's own format: nothing to convert).
    """

    __slots__ = ("target", "_resampler")

    def __init__(self, target: AudioFormat) -> None:
        if target.encoding != "pcm16":
            raise ValueError(f"cannot convert call audio ({MULAW_8K}) to {target}")
        self.target = target
        self._resampler = StreamResampler(MULAW_8K.sample_rate, target.sample_rate)

    def convert(self, mulaw: bytes) -> bytes:
        """Feed the call's mu-law; return whatever pcm16 at the target rate is ready."""
        return self._resampler.process(mulaw_to_pcm16(mulaw))

    def flush(self) -> bytes:
        """End the stream: the audio the resampler still held."""
        return self._resampler.flush()
