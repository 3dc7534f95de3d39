"""The provider leg of a call: one STT session at a time, supervised."""

from __future__ import annotations

import logging

import trio

from providers.base import SttProvider
from providers.errors import ProviderError

from .messages import AudioBatch, CallEvent, ProviderNotice
from .stats import CallStats
from .stt_receiver import SttReceiver
from .stt_sender import SttSender

__all__ = ["ProviderLeg"]

log = logging.getLogger("earpiece.provider")


class ProviderLeg:
    """Runs SttSender + SttReceiver in an inner nursery around one provider session.

    Consumes: ``audio_receive`` (provider-format batches); closes it when done.
    Produces: transcripts and ``provider_*`` notices on ``events_send``.

    A provider failure never ends the call: the failure is reported as a
    ``provider_error`` event, and the rest of the call's audio is consumed and
    counted as not forwarded (``dropped_ms``), so Twilio is never slowed down.
    """

    def __init__(self, provider: SttProvider, stats: CallStats, call_label: str = "") -> None:
        self._provider = provider
        self._stats = stats
        self._call_label = call_label

    async def run(
        self,
        audio_receive: trio.MemoryReceiveChannel[AudioBatch],
        events_send: trio.MemorySendChannel[CallEvent],
    ) -> None:
        provider = self._provider
        async with audio_receive, events_send:
            failure: ProviderError | None = None
            try:
                async with provider.open_session() as session, trio.open_nursery() as nursery:
                    sender = SttSender(self._stats, provider.keepalive_interval)
                    receiver = SttReceiver(provider.name)
                    nursery.start_soon(sender.run, session, audio_receive)
                    nursery.start_soon(receiver.run, session, events_send)
            except* ProviderError as group:
                failure = _first(group)
            if failure is None:
                return
            log.warning("%s provider %s failed: %s", self._call_label, provider.name, failure.detail)
            await events_send.send(ProviderNotice("provider_error", provider.name, failure.detail,
                                                  {"fatal": failure.fatal}))
            async for _ in audio_receive:  # keep Twilio flowing; counted as dropped
                pass


def _first(group: BaseExceptionGroup) -> ProviderError:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group
