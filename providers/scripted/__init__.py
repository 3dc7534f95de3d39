"""``scripted``: a deterministic, offline provider for tests and benchmarks.

It hears nothing: every ``partial_ms`` of session audio it sends a partial, and every
``commit_ms`` (and at ``finalize``) a committed transcript naming the span it covers on
the session's audio clock, e.g. ``"audio 0 to 2000"``.  Every byte it was sent is kept
(``session.received``) so tests can compare it with what the caller said.

Faults (``providers.scripted.faults``) are scripted per session: ``faults`` maps the
attempt number (every ``open_session``, refused ones included) to the faults of that
session, or is a function of it.  ``attempts`` records the trio time of every
``open_session``; ``on_open`` (async, gets the attempt number) runs before the
handshake is answered, for tests that force a race.  From the environment:
``SCRIPTED_FAULT_RATE`` (0..1), ``SCRIPTED_FAULT_SEED``, ``SCRIPTED_FAULT_KINDS``
(comma-separated, see ``random_faults``).  ``outage(seconds)`` takes the whole vendor
down (live sessions close with 1011, new ones get 503).  ``record=False`` (what
``create`` builds for a served gateway) keeps neither sessions nor their audio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

from ..base import MULAW_8K, AudioFormat, SttSession
from ..errors import (
    ProviderConfigError,
    ProviderFatalError,
    ProviderProtocolError,
    ProviderRetryableError,
    error_for_close_code,
    error_for_http_status,
)
from ..events import (
    Finalized,
    FinalTranscript,
    PartialTranscript,
    ProviderClosed,
    ProviderEvent,
    ProviderFailed,
    SessionStarted,
)
from ..registry import ProviderSpec
from .faults import (
    RECOVERABLE_KINDS,
    Close,
    ErrorMessage,
    Fault,
    FaultScript,
    Garbage,
    RefuseHandshake,
    SlowConsumer,
    Stall,
    random_faults,
)

__all__ = [
    "SPEC",
    "ScriptedProvider",
    "ScriptedSession",
    "span_text",
    "Close",
    "RefuseHandshake",
    "Garbage",
    "ErrorMessage",
    "Stall",
    "SlowConsumer",
    "Fault",
    "random_faults",
]

EVENT_BUFFER = 4096


def span_text(start_ms: int, end_ms: int) -> str:
    return f"audio {start_ms} to {end_ms}"


@attrs.frozen
class _GarbageReceived:
    message: str


class ScriptedSession:
    def __init__(self, provider: ScriptedProvider, index: int, faults: Sequence[Fault] = ()) -> None:
        self.index = index  # the attempt number
        self.name = provider.name
        self.received = bytearray()  # with provider.record; otherwise only counted
        self.received_bytes = 0
        self._provider = provider
        self.finalized = False
        self.stalled = False  # answers nothing any more
        self.deaf = False  # takes no audio any more
        self.closed: ProviderClosed | None = None
        self.opened_at = trio.current_time()
        self._fmt = provider.audio_format
        self._partial_ms = provider.partial_ms
        self._commit_ms = provider.commit_ms
        self._next_partial = provider.partial_ms
        self._next_commit = provider.commit_ms
        self._committed_ms = 0
        self._pending = [f for f in faults if not isinstance(f, RefuseHandshake | SlowConsumer)]
        slow = [f.rate for f in faults if isinstance(f, SlowConsumer)]
        self._rate = slow[0] if slow else None
        self._send, self._receive = trio.open_memory_channel[ProviderEvent | _GarbageReceived](EVENT_BUFFER)
        self._send.send_nowait(SessionStarted(f"scripted-{index}"))

    @property
    def received_ms(self) -> int:
        return int(self._fmt.duration_ms(self.received_bytes))

    async def send_audio(self, audio: bytes) -> None:
        if self.deaf:
            await trio.sleep_forever()
        if self.closed is not None:
            raise error_for_close_code(self.name, self.closed.code, self.closed.reason)
        if self.finalized:
            raise RuntimeError("audio after finalize")
        if self._rate is not None:
            await trio.sleep(self._fmt.duration_ms(len(audio)) / 1000 / self._rate)
        if self._provider.down():
            self._pending.insert(0, Close(1011, 0, "scripted outage"))
        if self._provider.record:
            self.received += audio
        self.received_bytes += len(audio)
        now = self.received_ms
        while now >= self._next_commit:
            self._commit(self._next_commit)
            self._next_commit += self._commit_ms
        if now >= self._next_partial:
            while self._next_partial <= now:
                self._next_partial += self._partial_ms
            if now > self._committed_ms:
                self._emit(PartialTranscript(span_text(self._committed_ms, now), self._committed_ms, now))
        self._play_faults(now)
        await trio.lowlevel.checkpoint()

    def _play_faults(self, now_ms: int) -> None:
        due = [f for f in self._pending if f.after_ms <= now_ms]  # type: ignore[union-attr]
        self._pending = [f for f in self._pending if f not in due]
        for fault in due:
            if isinstance(fault, Close):
                self.closed = ProviderClosed(fault.code, fault.reason)
                self._send.send_nowait(self.closed)
                self._send.close()
            elif isinstance(fault, Garbage):
                self._send.send_nowait(_GarbageReceived(fault.message))
            elif isinstance(fault, ErrorMessage):
                kind = ProviderFatalError if fault.fatal else ProviderRetryableError
                error = kind(self.name, f"{fault.vendor_type}: {fault.detail}", vendor_type=fault.vendor_type)
                self._emit(ProviderFailed(error))
            elif isinstance(fault, Stall):
                self.stalled = True
                self.deaf = fault.stop_reading

    def _emit(self, event: ProviderEvent) -> None:
        if not self.stalled and self.closed is None:
            self._send.send_nowait(event)

    def _commit(self, end_ms: int) -> None:
        self._emit(FinalTranscript(span_text(self._committed_ms, end_ms), self._committed_ms, end_ms))
        self._committed_ms = end_ms

    async def finalize(self) -> None:
        if self.deaf:
            await trio.sleep_forever()
        if self.closed is not None:
            raise error_for_close_code(self.name, self.closed.code, self.closed.reason)
        self.finalized = True
        if self.received_ms > self._committed_ms:
            self._commit(self.received_ms)
        self._emit(Finalized())
        await trio.lowlevel.checkpoint()

    async def keepalive(self) -> None:
        if self.deaf:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()

    async def receive(self) -> ProviderEvent:
        try:
            event = await self._receive.receive()
        except trio.EndOfChannel:
            return self.closed or ProviderClosed(1000)
        if isinstance(event, _GarbageReceived):
            raise ProviderProtocolError(self.name, f"message is not JSON: {event.message[:60]!r}")
        return event

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
    faults: FaultScript = attrs.field(factory=dict)
    on_open: Callable[[int], Awaitable[None]] | None = None
    #: keep every session and its audio (tests); False for long runs (soak, ``create``)
    record: bool = True
    sessions: list[ScriptedSession] = attrs.field(factory=list)  # accepted sessions, in order
    attempts: list[float] = attrs.field(factory=list)  # trio time of every open_session
    opened: int = 0  # open_session calls, refused ones included
    down_until: float | None = None  # see ``outage``

    def faults_of(self, attempt: int) -> Sequence[Fault]:
        if callable(self.faults):
            return self.faults(attempt)
        return self.faults.get(attempt, ())

    def outage(self, seconds: float) -> None:
        """The whole vendor goes down for ``seconds`` from now: live sessions close with
        1011 at their next audio, new ones are refused with 503."""
        self.down_until = trio.current_time() + seconds

    def down(self) -> bool:
        return self.down_until is not None and trio.current_time() < self.down_until

    @asynccontextmanager
    async def open_session(self) -> AsyncIterator[SttSession]:
        attempt = self.opened
        self.opened += 1
        if self.record:
            self.attempts.append(trio.current_time())
        if self.on_open is not None:
            await self.on_open(attempt)
        faults = self.faults_of(attempt)
        if self.down():
            faults = [RefuseHandshake(503)]
        for fault in faults:
            if isinstance(fault, RefuseHandshake):
                await trio.lowlevel.checkpoint()
                raise error_for_http_status(self.name, fault.status, "scripted refusal")
        session = ScriptedSession(self, attempt, faults)
        if self.record:
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


def _fault_script(env: Mapping[str, str]) -> FaultScript:
    raw_rate = env.get("SCRIPTED_FAULT_RATE") or "0"
    try:
        rate = float(raw_rate)
    except ValueError:
        rate = -1.0
    if not 0 <= rate <= 1:
        raise ProviderConfigError("scripted", f"SCRIPTED_FAULT_RATE must be a number from 0 to 1, not {raw_rate!r}")
    if not rate:
        return {}
    raw_seed = env.get("SCRIPTED_FAULT_SEED") or "0"
    if not raw_seed.isdigit():
        raise ProviderConfigError("scripted", f"SCRIPTED_FAULT_SEED must be a whole number, not {raw_seed!r}")
    kinds = [k.strip() for k in (env.get("SCRIPTED_FAULT_KINDS") or ",".join(RECOVERABLE_KINDS)).split(",")
             if k.strip()]
    try:
        return random_faults(rate, int(raw_seed), kinds)
    except ValueError as exc:
        raise ProviderConfigError("scripted", f"SCRIPTED_FAULT_KINDS: {exc}") from None


def create(env: Mapping[str, str]) -> ScriptedProvider:
    return ScriptedProvider(
        audio_format=_format(env.get("SCRIPTED_FORMAT")),
        partial_ms=_int(env, "SCRIPTED_PARTIAL_MS", 500),
        commit_ms=_int(env, "SCRIPTED_COMMIT_MS", 2000),
        faults=_fault_script(env),
        record=False,  # a served provider must not keep every call's audio
    )


SPEC = ProviderSpec(
    name="scripted",
    description="deterministic test provider: partial every 500 ms, commit every 2 s",
    audio_format=MULAW_8K,
    factory=create,
    offline=True,
)
