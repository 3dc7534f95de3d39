"""WhisperSession: one call's live transcription on the process's shared model.

    send_audio ──▶ Segmenter (VAD, on the caller's thread) ──▶ commits ∥ partial wanted
                                                                   │
    receive ◀── events ◀── Decoder task: DecodeQueue slot ─▶ worker thread ─▶ SharedModel

The decoder task (one per session) decodes one thing at a time: the oldest pending
commit first; else the commit an utterance will have if its pause lasts (decoded
while the endpointing waits out ``silence_ms``, and used when the utterance does end
there: the commit then needs no decode of its own); else, when a partial is wanted,
the open utterance as it is at that moment, shown through ``StablePrefix`` (only words
two decodes agree on).  A partial
that was wanted again before it ran, refused by the full queue, or overtaken by the
end of its utterance is skipped and counted (``partials_skipped``); a commit is never
skipped.  Audio waiting for its decodes (pending commits and the open utterance) is
bounded by ``max_pending_ms``: past it ``send_audio`` waits, and the call's replay
buffer holds (and, past its own bound, counts) what the caller says meanwhile.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import attrs
import numpy as np
import trio

from ..errors import ProviderConnectionError, ProviderError
from ..events import Finalized, FinalTranscript, PartialTranscript, ProviderEvent, ProviderFailed, \
    SessionStarted
from ..inprocess import next_event
from .model import SharedModel
from .queue import DecodeKind, DecodeQueue, DecodeRefused
from .segmenter import PartialDue, Paused, Segmenter, UtteranceEnded
from .settings import PROVIDER, WhisperSettings
from .stable import StablePrefix
from .vad import StreamingVad

__all__ = ["WhisperSession", "WhisperSessionStatistics", "open_whisper_session", "EVENT_BUFFER"]

log = logging.getLogger("earpiece.whisper")

#: Events waiting for ``receive`` before the decoder stops decoding.
EVENT_BUFFER: Final = 16
#: Close code ``receive`` reports after the decoder failed (1011: internal error).
#: At most one "skipping partial decodes" log line per this many seconds per process.
SKIP_LOG_INTERVAL: Final = 10.0
_last_skip_log = [float("-inf")]


@attrs.frozen
class WhisperSessionStatistics:
    """A snapshot of one session: decodes run and skipped, audio waiting for them.
    Every partial wanted is either decoded or skipped: ``partials_wanted ==
    partials_decoded + partials_skipped`` once the session is finalized."""

    commits_decoded: int
    commits_decoded_ahead: int
    partials_wanted: int
    partials_decoded: int
    partials_skipped: int
    pending_commits: int
    pending_ms: int
    fed_ms: int


class WhisperSession:
    """What the call runtime talks to; see ``SttSession``.  Made by ``open_whisper_session``."""

    def __init__(self, session_id: str, model: SharedModel, queue: DecodeQueue, settings: WhisperSettings,
                 event_send: trio.MemorySendChannel[ProviderEvent],
                 event_receive: trio.MemoryReceiveChannel[ProviderEvent]) -> None:
        self.session_id = session_id
        self._model = model
        self._queue = queue
        self._settings = settings
        self._segmenter = Segmenter(StreamingVad().probabilities, silence_ms=settings.silence_ms,
                                    max_utterance_ms=settings.max_utterance_ms, partial_ms=settings.partial_ms)
        self._event_send = event_send
        self._event_receive = event_receive
        self._commits: deque[UtteranceEnded] = deque()
        self._pause: Paused | None = None  # an utterance whose commit may be decoded ahead
        self._ahead: tuple[int, int, str] | None = None  # (utterance, end_ms, text) decoded ahead
        self._commit_ms = 0
        self._partial_wanted: int | None = None  # the utterance a partial is wanted for
        self._partial_wait: trio.CancelScope | None = None  # while a partial waits in the queue
        self._stable = StablePrefix()
        self._stable_for = -1
        self._finalized = False
        self._work = trio.Event()  # something for the decoder to do
        self._progress = trio.Event()  # a commit was decoded (pending audio went down)
        self._idle = trio.Event()  # the decoder waits for work
        self.failure: ProviderError | None = None
        self.commits_decoded = 0
        self.commits_decoded_ahead = 0  # of which decoded during the pause, before the end
        self.partials_wanted = 0
        self.partials_decoded = 0
        self.partials_skipped = 0

    # --- the call runtime's side ------------------------------------------------------

    async def send_audio(self, audio: bytes) -> None:
        """Take pcm16 (16 kHz mono, little-endian).  Waits while more than
        ``max_pending_ms`` of this call's audio waits for decodes.  Raises the
        ``ProviderError`` the decoder failed with, ``ValueError`` for an odd byte
        count, ``RuntimeError`` after ``finalize``."""
        if len(audio) % 2:
            raise ValueError(f"pcm16 audio must have an even number of bytes, got {len(audio)}")
        if self._finalized:
            raise RuntimeError("send_audio() after finalize()")
        if self.failure is not None:
            raise self.failure
        samples = np.frombuffer(audio, dtype="<i2").astype(np.float32) / 32768.0
        for event in self._segmenter.feed(samples):
            if isinstance(event, UtteranceEnded):
                self._add_commit(event)
            elif isinstance(event, Paused):
                self._pause = event
                self._work.set()
            else:
                self._want_partial(event)
        while self.pending_ms > self._settings.max_pending_ms and self._commits and self.failure is None:
            if self._progress.is_set():
                self._progress = trio.Event()
            await self._progress.wait()
        if self.failure is not None:
            raise self.failure
        await trio.lowlevel.checkpoint()

    async def finalize(self) -> None:
        """Commit what is open now; ``Finalized`` follows the last commit.  Idempotent."""
        if not self._finalized:
            self._finalized = True
            ended = self._segmenter.flush()
            if ended is not None:
                self._add_commit(ended)
            self._work.set()
        await trio.lowlevel.checkpoint()

    async def keepalive(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive(self) -> ProviderEvent:
        """The next event, in order; once the session has ended, ``ProviderClosed``
        every time (1000, or 1011 after a ``ProviderFailed``)."""
        return await next_event(self._event_receive, self.failure is not None, "decoder")

    async def wait_idle(self) -> None:
        """Return once the decoder has nothing left to do (no commit pending, no partial
        wanted): pacing audio by the decoder instead of the clock (tests, benchmarks)."""
        while not (self._idle.is_set() and not self._commits and self._partial_wanted is None
                   and self._pause is None):
            if self.failure is not None:
                return
            await self._idle.wait()
            await trio.lowlevel.checkpoint()

    @property
    def pending_ms(self) -> int:
        return self._commit_ms + self._segmenter.open_ms

    def statistics(self) -> WhisperSessionStatistics:
        return WhisperSessionStatistics(
            commits_decoded=self.commits_decoded, commits_decoded_ahead=self.commits_decoded_ahead,
            partials_wanted=self.partials_wanted,
            partials_decoded=self.partials_decoded,
            partials_skipped=self.partials_skipped, pending_commits=len(self._commits),
            pending_ms=self.pending_ms, fed_ms=self._segmenter.fed_ms)

    # --- bookkeeping ------------------------------------------------------------------

    def _add_commit(self, ended: UtteranceEnded) -> None:
        self._commits.append(ended)
        self._commit_ms += ended.end_ms - ended.start_ms
        if self._partial_wanted is not None and self._partial_wanted <= ended.utterance:
            self._skip_partial()  # its utterance is over: the commit says it all
        if self._partial_wait is not None:
            self._partial_wait.cancel()  # a commit waits: the partial in line gives way
        self._work.set()

    def _want_partial(self, due: PartialDue) -> None:
        self.partials_wanted += 1
        if self._partial_wanted is not None:
            self._skip_partial()  # the one wanted before has not run yet
        self._partial_wanted = due.utterance
        self._work.set()

    def _skip_partial(self) -> None:
        self._partial_wanted = None
        self._count_skip()

    def _count_skip(self) -> None:
        self.partials_skipped += 1
        self._queue.partial_skipped()
        now = trio.current_time()
        if now - _last_skip_log[0] >= SKIP_LOG_INTERVAL:
            _last_skip_log[0] = now
            stats = self._queue.statistics()
            # Thinning partials is the designed answer to a busy CPU; a full line is not.
            level = logging.WARNING if stats.waiting_partials >= self._queue.max_waiting_partials else logging.INFO
            log.log(level, "whisper: skipping partial decodes (%d running, %d commits and %d partials waiting; "
                    "%d skipped since start); commits are never skipped", stats.running, stats.waiting_commits,
                    stats.waiting_partials, stats.partials_skipped)

    # --- the decoder task -------------------------------------------------------------

    async def run_decoder(self) -> None:
        """Decode until finalized and every commit is out; then ``Finalized``.  A failed
        decode becomes ``ProviderFailed``.  Closes the event channel on return."""
        async with self._event_send:
            try:
                while True:
                    if self._commits:
                        await self._decode_commit()
                    elif self._pause is not None:
                        await self._decode_ahead()
                    elif self._partial_wanted is not None:
                        await self._decode_partial()
                    elif self._finalized:
                        await self._event_send.send(Finalized())
                        return
                    else:
                        self._idle.set()
                        await self._work.wait()
                        self._work, self._idle = trio.Event(), trio.Event()
            except ProviderError as exc:
                self.failure = exc
                self._progress.set()
                await self._event_send.send(ProviderFailed(exc))

    async def _decode(self, audio: np.ndarray, final: bool) -> str:
        try:
            return await trio.to_thread.run_sync(self._model.decode, audio, final)
        except (RuntimeError, ValueError, MemoryError) as exc:
            raise ProviderConnectionError(PROVIDER, f"the decoder failed: {exc}") from exc

    async def _decode_commit(self) -> None:
        ended = self._commits[0]
        if self._pause is not None and self._pause.utterance <= ended.utterance:
            self._pause = None  # not decoded ahead in time
        if self._ahead is not None and self._ahead[:2] == (ended.utterance, ended.end_ms):
            text = self._ahead[2]  # the pause lasted: this very audio was decoded during it
            self.commits_decoded_ahead += 1
            await trio.lowlevel.checkpoint()
        else:
            async with self._queue.slot(DecodeKind.COMMIT):
                text = await self._decode(ended.audio, True)
        self._ahead = None
        self._commits.popleft()
        self._commit_ms -= ended.end_ms - ended.start_ms
        self.commits_decoded += 1
        self._progress.set()
        if text:
            await self._event_send.send(FinalTranscript(text, ended.start_ms, ended.end_ms))

    async def _decode_ahead(self) -> None:
        """Decode the commit a pause will make, unless the speaker went on meanwhile."""
        pause, self._pause = self._pause, None
        assert pause is not None
        if not (self._segmenter.paused and self._segmenter.utterance == pause.utterance):
            await trio.lowlevel.checkpoint()
            return
        async with self._queue.slot(DecodeKind.COMMIT):
            text = await self._decode(pause.audio, True)
        self._ahead = (pause.utterance, pause.end_ms, text)

    async def _decode_partial(self) -> None:
        utterance, self._partial_wanted = self._partial_wanted, None
        text = None
        with trio.CancelScope() as wait:
            self._partial_wait = wait
            try:
                async with self._queue.slot(DecodeKind.PARTIAL):
                    self._partial_wait = None
                    if self._segmenter.utterance != utterance or not self._segmenter.is_open:
                        self._count_skip()  # its utterance ended while it waited
                        return
                    start_ms, audio = self._segmenter.start_ms, self._segmenter.current_audio()
                    end_ms = start_ms + audio.size // 16
                    text = await self._decode(audio, False)
            except DecodeRefused:
                pass
        self._partial_wait = None
        if text is None:  # refused by the full queue, or gave way to a commit of this call
            self._count_skip()
            return
        self.partials_decoded += 1
        if self._stable_for != utterance:
            self._stable, self._stable_for = StablePrefix(), utterance
        shown = self._stable.update(text)
        if shown:
            await self._event_send.send(PartialTranscript(shown, start_ms, end_ms))


@asynccontextmanager
async def open_whisper_session(model: SharedModel, queue: DecodeQueue, settings: WhisperSettings,
                               session_id: str) -> AsyncIterator[WhisperSession]:
    """A session on the shared ``model``; its first event is ``SessionStarted``.  On
    exit the decoder task is cancelled (a decode already running in a worker thread is
    waited for: CTranslate2 cannot be interrupted)."""
    event_send, event_receive = trio.open_memory_channel[ProviderEvent](EVENT_BUFFER)
    event_send.send_nowait(SessionStarted(session_id))
    session = WhisperSession(session_id, model, queue, settings, event_send, event_receive)
    async with event_receive, trio.open_nursery() as nursery:
        nursery.start_soon(session.run_decoder)
        yield session
        nursery.cancel_scope.cancel()
