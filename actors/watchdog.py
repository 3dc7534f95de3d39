"""SessionMonitor: is a provider session answering, and has it proved healthy?

A provider can fail without closing anything: it accepts audio and says nothing
(pipecat#5735), or it stops reading and a send blocks (pipecat#5796).  The second is
caught where the send happens (SttSender's ``send_timeout``); the first is caught here:

    stalled  ⇔  speech was sent that got no answer (no event of any kind)
                for ``stall_timeout`` seconds of audio *and* of trio time

Both, so a replay burst (lots of audio in no time) is not a stall before the vendor had
time to answer, and a provider consuming slower than real time is not one before it was
sent that much speech.  Once all audio was sent (the caller hung up), time alone counts:
the end sequence must be answered within ``stall_timeout``.  And from the moment the
caller hangs up (``hung_up``), the call has only its drain deadline left: a session that
makes no progress at all (no event, no batch taken) for ``hurry_timeout`` is stalled
then, so the rest of the drain can go to a new session.  Only speech counts (the level
gate is ``actors.speech.is_speech``): a muted caller with a vendor that says nothing in
silence is not a stall (nor does it wear out the retry budget, livekit#7208).

Healthy: the session accepted ``healthy_ms`` of audio while answering (at most half of
``healthy_ms`` of speech unanswered at that point).  Sticky for the session.
"""

from __future__ import annotations

import math
from types import TracebackType

import trio

from providers.errors import ProviderStalledError

__all__ = ["SessionMonitor"]


class SessionMonitor:
    """One session's liveness.  The session's ``ReplayLink`` reports each batch it sends
    (``sending``), each the session took (``accepted``) and each event (``answered``);
    the session's work runs inside ``watching()``, which cancels it and raises
    ``ProviderStalledError`` when the session stalls.  ``healthy`` becomes True once the session proved itself.

    The watchdog is a cancel scope around the session, not a task: its deadline is only
    ever set to the moment the session *will* be stalled if nothing changes (enough
    unanswered speech sent, or the audio over, or the caller hung up), so a session
    that answers in time never arms a timer, and a call has no task of it.
    """

    def __init__(self, provider: str, stall_timeout: float, healthy_ms: int,
                 hurry_timeout: float | None = None) -> None:
        self.provider = provider
        self.stall_timeout = stall_timeout
        self.healthy_ms = healthy_ms
        self.hurry_timeout = hurry_timeout
        self.accepted_ms = 0
        self.unanswered_ms = 0  # speech sent since the last event
        self.events = 0
        self.healthy = False
        self._unanswered_since: float | None = None  # trio time of the first such send
        self._audio_ended = False
        self._progress_at: float | None = None  # after hung_up: the last event or batch taken
        self._scope: trio.CancelScope | None = None

    def sending(self, duration_ms: int, speech: bool) -> None:
        """A batch is about to be sent (an answer may come before the send returns)."""
        if speech:
            if self._unanswered_since is None:
                self._unanswered_since = trio.current_time()
            self.unanswered_ms += duration_ms
            self._rearm()

    def audio_ended(self) -> None:
        """All audio was sent; the end sequence follows and awaits an answer.  From now
        on the watchdog counts time only (no more speech can come)."""
        self._audio_ended = True
        if self._unanswered_since is None:
            self._unanswered_since = trio.current_time()
        self._rearm()

    def accepted(self, duration_ms: int) -> None:
        """The session took the batch."""
        self.accepted_ms += duration_ms
        self._check_healthy()
        self._progressed()

    def hung_up(self) -> None:
        """The caller hung up: from now on the session must keep making progress."""
        if self.hurry_timeout is not None and self._progress_at is None:
            self._progress_at = trio.current_time()
            self._rearm()

    def _progressed(self) -> None:
        if self._progress_at is not None:
            self._progress_at = trio.current_time()
            self._rearm()

    def answered(self) -> None:
        self.events += 1
        self.unanswered_ms = 0
        self._unanswered_since = None
        self._check_healthy()
        self._rearm()
        self._progressed()

    def _check_healthy(self) -> None:
        if not self.healthy and self.accepted_ms >= self.healthy_ms and self.unanswered_ms * 2 <= self.healthy_ms:
            self.healthy = True

    def stalled(self) -> bool:
        return self._silent() or self._idle_after_hang_up()

    def _silent(self) -> bool:
        since = self._unanswered_since  # the clock is read last: most sends stop short of it
        return (since is not None and (self.unanswered_ms >= self.stall_timeout * 1000 or self._audio_ended)
                and trio.current_time() >= since + self.stall_timeout)

    def _idle_after_hang_up(self) -> bool:
        return (self._progress_at is not None and self.hurry_timeout is not None
                and trio.current_time() >= self._progress_at + self.hurry_timeout)

    def _deadline(self) -> float:
        """When the session is stalled unless something changes first: reaching it
        always means ``stalled()``.  Speech short of ``stall_timeout`` arms nothing: the
        send that completes it re-arms (``sending``)."""
        deadline = math.inf
        since = self._unanswered_since
        if since is not None and (self.unanswered_ms >= self.stall_timeout * 1000 or self._audio_ended):
            deadline = since + self.stall_timeout
        if self._progress_at is not None and self.hurry_timeout is not None:
            deadline = min(deadline, self._progress_at + self.hurry_timeout)
        return deadline

    def _rearm(self) -> None:
        scope = self._scope
        if scope is None:
            return
        if self.stalled():
            scope.cancel()
            return
        deadline = self._deadline()
        if deadline != scope.deadline:  # most speech sends leave it unarmed: setting it costs as a move
            scope.deadline = deadline

    def watching(self) -> SessionMonitor:
        """Run the session's work in ``with monitor.watching():``: once the session
        stalls, the block is cancelled and leaving it raises ``ProviderStalledError`` (a
        block that ends before that raises nothing).  The monitor is the context
        manager itself (no generator frame per session); not reentrant."""
        return self

    def __enter__(self) -> None:
        scope = self._scope = trio.CancelScope(deadline=self._deadline())
        scope.__enter__()
        if self.stalled():
            scope.cancel()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        scope, self._scope = self._scope, None
        assert scope is not None
        handled = scope.__exit__(exc_type, exc, traceback)
        if scope.cancelled_caught:
            raise self._stall_error() from None
        return handled

    def _stall_error(self) -> ProviderStalledError:
        if self._idle_after_hang_up():
            return ProviderStalledError(
                self.provider, f"no progress for {self.hurry_timeout:g} s after the caller hung up")
        what = "the end of the audio" if self._audio_ended else f"{self.unanswered_ms / 1000:g} s of speech"
        return ProviderStalledError(self.provider, f"no answer to {what} (watchdog: {self.stall_timeout:g} s)")
