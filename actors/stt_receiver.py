"""SttReceiver: provider events into call transcripts."""

from __future__ import annotations

import trio

from providers.errors import error_for_close_code
from providers.events import Finalized, FinalTranscript, PartialTranscript, ProviderClosed, ProviderFailed

from .messages import CallEvent, Transcript
from .session_link import SessionLink

__all__ = ["SttReceiver"]


class SttReceiver:
    """Consumes one session's events (``link.next_event``); produces ``Transcript``s on
    ``events_send``, each at the span ``link.place`` gives it on the call's clock
    (dropped when an earlier session of the call already committed that audio; empty
    texts too).  Returns on ``Finalized``.

    Raises: the ``ProviderError`` a vendor reported (``ProviderFailed``), or the typed
    error for a connection that closed before finalizing (``ProviderClosed``).
    """

    async def run(self, link: SessionLink, events_send: trio.MemorySendChannel[CallEvent]) -> None:
        while True:
            event = await link.next_event()
            if isinstance(event, PartialTranscript | FinalTranscript):
                if not event.text.strip():
                    continue
                span = link.place(event)
                if span is None:
                    continue  # an earlier session already committed this audio
                kind = "committed" if isinstance(event, FinalTranscript) else "partial"
                await events_send.send(Transcript(kind, event.text, link.provider, *span))
            elif isinstance(event, Finalized):
                return
            elif isinstance(event, ProviderFailed):
                raise event.error
            elif isinstance(event, ProviderClosed):
                raise error_for_close_code(link.provider, event.code, event.reason)
