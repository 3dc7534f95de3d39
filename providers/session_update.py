"""The part two vendor codecs share: a JSON session configured by one ``session.update``
before any audio (Mistral Voxtral realtime, OpenAI Realtime transcription).

```
open ─▶ session.created ─▶ [we send session.update] ─▶ session.updated ─▶ audio appends
```

Every session field must be set before the first audio, so audio is held (in order, at
most ``max_held_ms``) until ``session.updated`` confirms ours; then it is released as
appends of at most ``max_append_bytes`` decoded bytes.  A session with no audio at all
is finalized at once.  What ends the audio (``_end``) and everything the server says
is the vendor's.
"""

from __future__ import annotations

from .base import AudioFormat, AudioSpanTracker, HeldAudio
from .codec import Outbox
from .events import Finalized, ProviderEvent, SessionStarted
from .jsonwire import b64

__all__ = ["SessionUpdateCodec"]


class SessionUpdateCodec(Outbox):
    """The commands of an ``SttCodec`` whose session takes ``update`` (JSON text) before
    audio.  ``append_type``: the ``type`` of an audio append message.  ``send_audio``
    raises ``ProviderStalledError`` when more than ``max_held_ms`` of audio waits for a
    session that is not configured yet.  Subclasses read the server's messages and call
    ``_created`` and ``_updated``; ``_end`` queues the end of the audio."""

    def __init__(self, provider: str, audio_format: AudioFormat, update: str, *, append_type: str,
                 max_append_bytes: int, max_held_ms: int) -> None:
        self.audio_format = audio_format
        self.tracker = AudioSpanTracker(audio_format)
        self._update = update
        self._append_head = '{"type":"' + append_type + '","audio":"'
        self._max_append = max_append_bytes
        super().__init__()
        self._phase = "connecting"  # → configuring (update sent) → streaming (updated)
        self._held = HeldAudio(provider, audio_format, max_held_ms)
        self._audio_seen = False
        self._finalizing = False
        self._finalized = False

    # --- commands -------------------------------------------------------------------

    def send_audio(self, audio: bytes) -> None:
        if self._finalizing:
            raise RuntimeError("audio after finalize")
        if not audio:
            return
        self._audio_seen = True
        if self._phase != "streaming":
            self._held.hold(audio)
            return
        self._append(audio)

    def finalize(self) -> list[ProviderEvent] | None:
        if self._finalizing:
            return None
        self._finalizing = True
        if not self._audio_seen:
            self._finalized = True
            return [Finalized()]
        if self._phase != "streaming":
            return None  # the end follows the held audio, once configured
        return self._end() or None

    def keepalive(self) -> None:
        """The vendor documents no keepalive; audio keeps the session alive."""

    # --- for the vendor's codec -----------------------------------------------------

    def _end(self) -> list[ProviderEvent]:
        """Queue the end of the audio; return the events that follows at once."""
        raise NotImplementedError

    def _created(self, session_id: str) -> list[ProviderEvent]:
        if self._phase == "connecting":
            self._outbox.append(self._update)
            self._phase = "configuring"
        return [SessionStarted(session_id)]

    def _updated(self) -> list[ProviderEvent]:
        if self._phase != "configuring":
            return []
        self._phase = "streaming"
        for audio in self._held.release():
            self._append(audio)
        return self._end() if self._finalizing else []

    def _append(self, audio: bytes) -> None:
        self.tracker.add(len(audio))
        view, size, head = memoryview(audio), self._max_append, self._append_head
        for start in range(0, len(audio), size):
            self._outbox.append(head + b64(view[start:start + size]) + '"}')
