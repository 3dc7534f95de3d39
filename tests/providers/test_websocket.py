"""WebSocketSession's send side on a lockstep stream: a fake server that reads only when
told, so "the provider stopped reading" is exact, on the virtual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import wsproto
import wsproto.events

from actors.messages import AudioBatch
from actors.stats import CallStats
from actors.session_link import DirectLink
from actors.stt_sender import SttSender
from providers.errors import ProviderStalledError
from providers.events import ProviderEvent
from providers.websocket import WebSocketSession
from providers.wsclient import WatchedStream
from providers.wsconnection import client_handshake


class EchoCodec:
    """Each ``send_audio`` becomes the messages ``<audio>.1`` … ``<audio>.<parts>``; each
    server message is answered with ``reply:<message>`` (a reply the codec owes)."""

    def __init__(self, parts: int = 1) -> None:
        self.parts = parts
        self._outbox: list[str | bytes] = []

    def send_audio(self, audio: bytes) -> None:
        self._outbox += [f"{audio.decode()}.{k}" for k in range(1, self.parts + 1)]

    def finalize(self) -> list[ProviderEvent] | None:
        return None

    def keepalive(self) -> None:
        self._outbox.append("keepalive")

    def data_to_send(self) -> list[str | bytes]:
        out, self._outbox = self._outbox, []
        return out

    def receive(self, message: str | bytes) -> list[ProviderEvent]:
        self._outbox.append(f"reply:{message!s}")
        return []

    def connection_closed(self, code: int, reason: str) -> list[ProviderEvent]:
        return []


class ReadingServer:
    """The server end: accepts the handshake, then reads only once ``reading`` is set."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.received: list[str] = []
        self.reading = trio.Event()
        self._ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)

    async def run(self) -> None:
        accepted = False
        while not accepted:
            self._ws.receive_data(await self.stream.receive_some())
            for event in self._ws.events():
                if isinstance(event, wsproto.events.Request):
                    await self.stream.send_all(self._ws.send(wsproto.events.AcceptConnection()))
                    accepted = True
        while True:
            await self.reading.wait()
            self._ws.receive_data(await self.stream.receive_some())
            self.received += [e.data for e in self._ws.events() if isinstance(e, wsproto.events.TextMessage)]

    async def say(self, text: str) -> None:
        await self.stream.send_all(self._ws.send(wsproto.events.TextMessage(data=text)))


@asynccontextmanager
async def open_session(codec: EchoCodec, send_timeout: float = 5.0) -> AsyncIterator[tuple[WebSocketSession, ReadingServer]]:
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    server = ReadingServer(server_stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        ws = await client_handshake(WatchedStream(client_stream), "127.0.0.1", "/", max_message_bytes=1 << 20)
        yield WebSocketSession("fake", codec, ws, send_timeout), server
        nursery.cancel_scope.cancel()


async def test_a_session_on_its_own_raises_stalled_after_its_send_timeout(autojump_clock):
    """Nobody else bounds the send: the session's own deadline catches the stalled peer."""
    async with open_session(EchoCodec(), send_timeout=3.0) as (session, server):
        start = trio.current_time()
        with pytest.raises(ProviderStalledError, match="did not take audio for 3 s"):
            await session.send_audio(b"a")
        assert trio.current_time() - start == pytest.approx(3.0)
        assert server.received == []


async def test_a_caller_deadline_later_than_the_session_s_leaves_the_session_s_in_force(autojump_clock):
    async with open_session(EchoCodec(), send_timeout=3.0) as (session, _):
        start = trio.current_time()
        with trio.fail_after(10), pytest.raises(ProviderStalledError, match="did not take audio for 3 s"):
            await session.send_audio(b"a")
        assert trio.current_time() - start == pytest.approx(3.0)


async def test_a_caller_deadline_sooner_than_the_session_s_is_the_one_that_fires(autojump_clock):
    async with open_session(EchoCodec(), send_timeout=5.0) as (session, _):
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(2):
                await session.send_audio(b"a")
        assert trio.current_time() - start == pytest.approx(2.0)


async def test_stt_sender_reports_a_peer_that_stopped_reading_once_at_its_send_timeout(autojump_clock):
    """SttSender's deadline is the only one: the stall comes from it, at its send_timeout."""
    async with open_session(EchoCodec(), send_timeout=5.0) as (session, _):
        send, receive = trio.open_memory_channel[AudioBatch](1)
        send.send_nowait(AudioBatch(0, 100, b"a"))
        start = trio.current_time()
        with pytest.raises(ProviderStalledError, match="did not take audio for 4 s"):
            await SttSender(send_timeout=4.0).run(DirectLink(session, receive, CallStats(), provider="fake"))
        assert trio.current_time() - start == pytest.approx(4.0)


async def test_a_reply_flushed_while_audio_is_being_sent_waits_for_all_of_that_audio(autojump_clock):
    """The receive side's codec reply never lands between two messages of one send."""
    async with open_session(EchoCodec(parts=3)) as (session, server), trio.open_nursery() as nursery:
        nursery.start_soon(session.send_audio, b"a")
        await trio.testing.wait_all_tasks_blocked()  # blocked writing a.1
        nursery.start_soon(session.receive)
        await server.say("hello")
        await trio.testing.wait_all_tasks_blocked()  # the reply is waiting for the lock
        server.reading.set()
        await trio.testing.wait_all_tasks_blocked()
        assert server.received == ["a.1", "a.2", "a.3", "reply:hello"]
        assert session.messages_sent == 4
        nursery.cancel_scope.cancel()


async def test_uncontended_sends_go_out_in_order(autojump_clock):
    async with open_session(EchoCodec(parts=2)) as (session, server):
        server.reading.set()
        for audio in (b"a", b"b", b"c"):
            await session.send_audio(audio)
        await trio.testing.wait_all_tasks_blocked()
        assert server.received == ["a.1", "a.2", "b.1", "b.2", "c.1", "c.2"]
        assert (session.messages_sent, session.bytes_sent) == (6, 18)


class HoldingCodec(EchoCodec):
    """Holds all audio back (as Mistral's and OpenAI's do before ``session.updated``)."""

    def data_to_send(self) -> list[str | bytes]:
        return []


async def test_a_send_the_codec_holds_back_is_still_a_checkpoint(autojump_clock):
    """Else a sender replaying a backlog would never let the receive side run."""
    async with open_session(HoldingCodec()) as (session, _):
        with trio.testing.assert_checkpoints():
            await session.send_audio(b"a")
        with trio.testing.assert_checkpoints():
            await session.send_audio(b"b")
