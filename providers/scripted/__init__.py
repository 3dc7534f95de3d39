"""``scripted``: a deterministic, offline provider for tests and benchmarks.

It hears nothing: every ``partial_ms`` of session audio it sends a partial, and every
``commit_ms`` (and at ``finalize``) a committed transcript naming the span it covers on
the session's audio clock, e.g. ``"audio 0 to 2000"``.  Every byte it was sent is kept
(``session.received``) so tests can compare it with what the caller said.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs
import trio

from ..base import MULAW_8K, AudioFormat, SttSession
from ..errors import ProviderConfigError
from ..events import (
    Finalized,
    FinalTranscript,
    PartialTranscript,
    ProviderClosed,
    ProviderEvent,
    SessionStarted,
)
from ..registry import ProviderSpec

__all__ = ["SPEC", "ScriptedProvider", "ScriptedSession", "span_text"]

EVENT_BUFFER = 4096


def span_text(start_ms: int, end_ms: int) -> str:
    return f"audio {start_ms} to {end_ms}"


class ScriptedSession:
    def __init__(self, provider: ScriptedProvider, index: int) -> None:
        self.index = index
        self.received = bytearray()
        self.finalized = False
        self._fmt = provider.audio_format
        self._partial_ms = provider.partial_ms
        self._commit_ms = provider.commit_ms
        self._next_partial = provider.partial_ms
        self._next_commit = provider.commit_ms
        self._committed_ms = 0
        self._send, self._receive = trio.open_memory_channel[ProviderEvent](EVENT_BUFFER)
        self._send.send_nowait(SessionStarted(f"scripted-{index}"))

    @property
    def received_ms(self) -> int:
        return int(self._fmt.duration_ms(len(self.received)))

    async def send_audio(self, audio: bytes) -> None:
        if self.finalized:
            raise RuntimeError("audio after finalize")
        self.received += audio
        now = self.received_ms
        while now >= self._next_commit:
            self._commit(self._next_commit)
            self._next_commit += self._commit_ms
        if now >= self._next_partial:
            while self._next_partial <= now:
                self._next_partial += self._partial_ms
            if now > self._committed_ms:
                self._send.send_nowait(
                    PartialTranscript(span_text(self._committed_ms, now), self._committed_ms, now))
        await trio.lowlevel.checkpoint()

    def _commit(self, end_ms: int) -> None:
        self._send.send_nowait(FinalTranscript(span_text(self._committed_ms, end_ms), self._committed_ms, end_ms))
        self._committed_ms = end_ms

    async def finalize(self) -> None:
        self.finalized = True
        if self.received_ms > self._committed_ms:
            self._commit(self.received_ms)
        self._send.send_nowait(Finalized())
        await trio.lowlevel.checkpoint()

    async def keepalive(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive(self) -> ProviderEvent:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            return ProviderClosed(1000)

    def close(self) -> None:
        self._send.close()


@attrs.define
class ScriptedProvider:
    name: str = "scripted"
    audio_format: AudioFormat = MULAW_8K
    partial_ms: int = 500
    commit_ms: int = 2000
    chunk_ms: int | None = None
    keepalive_interval: float | None = None
    sessions: list[ScriptedSession] = attrs.field(factory=list)

    @asynccontextmanager
    async def open_session(self) -> AsyncIterator[SttSession]:
        session = ScriptedSession(self, len(self.sessions))
        self.sessions.append(session)
        try:
            yield session
        finally:
            session.close()


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ProviderConfigError("scripted", f"{key} must be a whole number of ms, not {raw!r}") from None
    if value <= 0:
        raise ProviderConfigError("scripted", f"{key} must be positive, not {value}")
    return value


def _format(raw: str | None) -> AudioFormat:
    if not raw or raw == "mulaw":
        return MULAW_8K
    if raw.startswith("pcm16:"):
        rate = raw.removeprefix("pcm16:")
        if rate.isdigit() and 8000 <= int(rate) <= 48000:
            return AudioFormat("pcm16", int(rate))
    raise ProviderConfigError("scripted", f"SCRIPTED_FORMAT must be 'mulaw' or 'pcm16:RATE', not {raw!r}")


def create(env: Mapping[str, str]) -> ScriptedProvider:
    return ScriptedProvider(
        audio_format=_format(env.get("SCRIPTED_FORMAT")),
        partial_ms=_int(env, "SCRIPTED_PARTIAL_MS", 500),
        commit_ms=_int(env, "SCRIPTED_COMMIT_MS", 2000),
    )


SPEC = ProviderSpec(
    name="scripted",
    description="deterministic test provider: partial every 500 ms, commit every 2 s",
    audio_format=MULAW_8K,
    factory=create,
    offline=True,
)
