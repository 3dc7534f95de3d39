"""LocalSession: a recognizer process behind bounded trio channels.

    send_audio ─▶ stdin ─▶ worker process (Recognizer) ─▶ stdout ─▶ EventPump ─▶ [events] ─▶ receive
                   ▲                                                   │
                   └──── in-flight tokens [COMMAND_CREDITS] ◀── "done" ┘

Why a process and not a thread: PocketSphinx holds the GIL for the whole of every
call into it (0.5-1 s to load the model, ~40 ms per 100 ms batch, up to seconds for
``end_utt`` on a long utterance), so a worker *thread* would still freeze the trio
thread, and every other call, for that long.  ``bench/LOCAL_ACCURACY.md`` has the
measurement.

* Backpressure is end to end: ``send_audio`` takes an in-flight token (at most
  ``COMMAND_CREDITS`` batches are unanswered); the worker answers each command with
  ``done`` after its events; a reader that stops calling ``receive`` fills the event
  channel, the pump stops reading, the worker stops, and ``send_audio`` waits.
* Shutdown: on exit (normal, error or cancellation) the pump is cancelled and the
  worker is killed and reaped, shielded; it holds nothing worth a clean exit.  A
  cancelled call leaves no process, thread or decoder behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import attrs
import trio

from ..errors import ProviderConnectionError, ProviderError, ProviderProtocolError
from ..events import ProviderEvent, ProviderFailed, SessionStarted
from ..inprocess import next_event
from . import wire
from .settings import PROVIDER, LocalSettings

__all__ = ["LocalSession", "LocalSessionStatistics", "open_local_session", "COMMAND_CREDITS", "EVENT_BUFFER"]

#: Commands (~100 ms audio batches) the worker may have unanswered before
#: ``send_audio`` waits.
COMMAND_CREDITS: Final = 4

#: Events waiting for ``receive`` before the pump stops reading the worker.  One
#: batch yields at most a few (finals of utterances that ended in it, one partial).
EVENT_BUFFER: Final = 16

#: Close code ``receive`` reports after the recognizer failed (1011: internal error).

READ_BYTES: Final = 65536

# The directory holding the ``providers`` package, for the worker's import path.
_IMPORT_ROOT: Final = str(Path(__file__).resolve().parents[2])


@attrs.frozen
class LocalSessionStatistics:
    """A snapshot: the worker's pid and exit status (None while it runs), batches
    sent, and commands the worker has not answered yet."""

    pid: int
    exit_code: int | None
    batches_sent: int
    commands_in_flight: int
    events_buffered: int


class LocalSession:
    """What the call runtime talks to; see ``SttSession``.  Made by ``open_local_session``."""

    def __init__(self, session_id: str, process: trio.Process,
                 event_receive: trio.MemoryReceiveChannel[ProviderEvent],
                 token_send: trio.MemorySendChannel[None]) -> None:
        self.session_id = session_id
        self._process = process
        self._event_receive = event_receive
        self._token_send = token_send
        self._finalized = False
        self._batches_sent = 0
        self.failure: ProviderError | None = None  # set by the pump

    async def send_audio(self, audio: bytes) -> None:
        """Queue pcm16 (16 kHz mono, little-endian) for decoding; waits while the
        recognizer is behind.  Raises ``ProviderError`` once the recognizer failed or
        exited, ``ValueError`` for an odd byte count, ``RuntimeError`` after ``finalize``."""
        if len(audio) % 2:
            raise ValueError(f"pcm16 audio must have an even number of bytes, got {len(audio)}")
        if self._finalized:
            raise RuntimeError("send_audio() after finalize()")
        if not audio:
            await trio.lowlevel.checkpoint()
            return
        for offset in range(0, len(audio), wire.MAX_PAYLOAD):
            await self._command(wire.AUDIO, audio[offset:offset + wire.MAX_PAYLOAD])
        self._batches_sent += 1

    async def finalize(self) -> None:
        """Ask for the open utterance's final; ``Finalized`` follows it.  Idempotent."""
        if self._finalized:
            await trio.lowlevel.checkpoint()
            return
        self._finalized = True
        await self._command(wire.FLUSH)

    async def keepalive(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive(self) -> ProviderEvent:
        """The next event, in order; once the session has ended, ``ProviderClosed``
        every time (1000, or 1011 after a ``ProviderFailed``)."""
        return await next_event(self._event_receive, self.failure is not None, "recognizer")

    def statistics(self) -> LocalSessionStatistics:
        return LocalSessionStatistics(
            pid=self._process.pid,
            exit_code=self._process.returncode,
            batches_sent=self._batches_sent,
            commands_in_flight=self._token_send.statistics().current_buffer_used,
            events_buffered=self._event_receive.statistics().current_buffer_used,
        )

    async def _command(self, kind: bytes, payload: bytes = b"") -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            await self._token_send.send(None)  # waits while COMMAND_CREDITS are unanswered
            await stdin.send_all(wire.encode_command(kind, payload))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if self.failure is not None:
                raise self.failure from exc
            raise ProviderConnectionError(PROVIDER, "the recognizer process has exited") from exc


class EventPump:
    """Reads the worker's stdout until it ends or the pump is cancelled.

    Consumes: worker messages.  Produces: provider events on ``event_send`` (closed
    on return) and, per ``done``, one in-flight token taken off ``token_receive``
    (closed on return, so a waiting ``send_audio`` raises).  A worker that exits
    without reporting a failure becomes ``ProviderFailed(ProviderConnectionError)``.
    """

    def __init__(self, session: LocalSession, stdout: trio.abc.ReceiveStream, decoder: wire.EventDecoder) -> None:
        self._session = session
        self._stdout = stdout
        self._decoder = decoder

    async def run(self, event_send: trio.MemorySendChannel[ProviderEvent],
                  token_receive: trio.MemoryReceiveChannel[None]) -> None:
        async with event_send, token_receive:
            try:
                while data := await self._stdout.receive_some(READ_BYTES):
                    for event in self._decoder.feed(data):
                        await self._handle(event, event_send, token_receive)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # same as end of output
            except ProviderProtocolError as exc:
                await self._fail(exc, event_send)
                return
            if self._session.failure is None:
                await self._fail(ProviderConnectionError(PROVIDER, "the recognizer process exited unexpectedly"),
                                 event_send)

    async def _handle(self, event: wire.WorkerEvent, event_send: trio.MemorySendChannel[ProviderEvent],
                      token_receive: trio.MemoryReceiveChannel[None]) -> None:
        if isinstance(event, wire.Done):
            try:
                token_receive.receive_nowait()
            except trio.WouldBlock:
                raise ProviderProtocolError(PROVIDER, "worker answered a command it was not sent") from None
        elif isinstance(event, wire.Ready):
            raise ProviderProtocolError(PROVIDER, "worker reported ready twice")
        elif isinstance(event, ProviderFailed):
            await self._fail(event.error, event_send)
        else:
            await event_send.send(event)

    async def _fail(self, error: Exception, event_send: trio.MemorySendChannel[ProviderEvent]) -> None:
        assert isinstance(error, ProviderError)
        self._session.failure = error
        await event_send.send(ProviderFailed(error))


def worker_command(settings: LocalSettings) -> list[str]:
    return [sys.executable, "-m", "providers.local.worker", json.dumps(attrs.asdict(settings))]


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_IMPORT_ROOT, env.get("PYTHONPATH")) if p)
    return env


async def _wait_ready(process: trio.Process, decoder: wire.EventDecoder) -> None:
    """Read until the worker reports its models loaded; raise what it reports instead."""
    assert process.stdout is not None
    while data := await process.stdout.receive_some(READ_BYTES):
        for event in decoder.feed(data):
            if isinstance(event, wire.Ready):
                return
            if isinstance(event, ProviderFailed):
                raise event.error
            raise ProviderProtocolError(PROVIDER, f"worker sent {event!r} before it was ready")
    raise ProviderConnectionError(PROVIDER, "the recognizer process exited while loading its model")


@asynccontextmanager
async def open_local_session(settings: LocalSettings, session_id: str) -> AsyncIterator[LocalSession]:
    """Start a recognizer process, wait until its models are loaded (its first event
    is ``SessionStarted``), yield the session; on exit kill and reap the process.

    Raises ``ProviderConfigError`` when the models cannot be loaded and
    ``ProviderConnectionError`` when the process cannot be started.  Errors raised
    in the body leave through the session's nursery (as an exception group).
    """
    try:
        process = await trio.lowlevel.open_process(
            worker_command(settings), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_worker_env())
    except OSError as exc:
        raise ProviderConnectionError(PROVIDER, f"could not start the recognizer process: {exc}") from exc
    try:
        decoder = wire.EventDecoder()
        await _wait_ready(process, decoder)
        event_send, event_receive = trio.open_memory_channel[ProviderEvent](EVENT_BUFFER)
        token_send, token_receive = trio.open_memory_channel[None](COMMAND_CREDITS)
        event_send.send_nowait(SessionStarted(session_id))
        session = LocalSession(session_id, process, event_receive, token_send)
        assert process.stdout is not None
        pump = EventPump(session, process.stdout, decoder)
        async with event_receive, token_send, trio.open_nursery() as nursery:
            nursery.start_soon(pump.run, event_send, token_receive)
            yield session
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    await pipe.aclose()
            await process.wait()  # reaps it (pidfd on Linux: no thread)

