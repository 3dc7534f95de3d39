"""SttSender's timers on the virtual clock: the keepalive while idle, the send deadline
while a session takes audio, and the moment either goes off just as its wait ends."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors.messages import AudioBatch
from actors.stats import CallStats
from actors.session_link import DirectLink
from actors.stt_sender import SttSender
from providers.errors import ProviderStalledError


class RecordingSession:
    """Records what it is sent, with ``trio.current_time()``; ``send_audio`` waits for
    ``accept`` when one is set (a provider that takes audio only when told)."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []
        self.keepalives: list[float] = []
        self.finalized: list[float] = []
        self.accept: trio.Event | None = None
        self.stall_keepalive = False

    async def send_audio(self, audio: bytes) -> None:
        await trio.lowlevel.checkpoint()
        if self.accept is not None:
            await self.accept.wait()
        self.sent.append((trio.current_time(), audio))

    async def keepalive(self) -> None:
        if self.stall_keepalive:
            await trio.sleep_forever()
        self.keepalives.append(trio.current_time())

    async def finalize(self) -> None:
        self.finalized.append(trio.current_time())


def batch(k: int) -> AudioBatch:
    return AudioBatch(k * 100, 100, bytes([k]) * 800)


async def play(send: trio.MemorySendChannel[AudioBatch], script: list[tuple[float, AudioBatch]], end: float) -> None:
    async with send:
        for at, item in script:
            await trio.sleep_until(at)
            await send.send(item)
        await trio.sleep_until(end)


async def run_sender(sender: SttSender, session: RecordingSession, script: list[tuple[float, AudioBatch]],
                     end: float, stats: CallStats | None = None) -> None:
    send, receive = trio.open_memory_channel[AudioBatch](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(play, send, script, end)
        await sender.run(DirectLink(session, receive, stats or CallStats()))


async def test_stt_sender_idle_sends_keepalive_each_interval(autojump_clock):
    session = RecordingSession()
    await run_sender(SttSender(1.0, send_timeout=5.0), session, [(0.0, batch(0))], end=3.5)
    assert session.keepalives == pytest.approx([1.0, 2.0, 3.0])
    assert session.finalized == pytest.approx([3.5])


async def test_stt_sender_audio_defers_the_keepalive(autojump_clock):
    session = RecordingSession()
    script = [(0.0, batch(0)), (0.6, batch(1)), (1.2, batch(2))]
    await run_sender(SttSender(1.0, send_timeout=5.0), session, script, end=2.5)
    assert [t for t, _ in session.sent] == pytest.approx([0.0, 0.6, 1.2])
    assert session.keepalives == pytest.approx([2.2])


async def test_stt_sender_without_keepalive_waits_through_silence_longer_than_its_send_timeout(autojump_clock):
    """Silence is not a stall, however long: no error, nothing sent, the next batch goes out."""
    stats, session = CallStats(), RecordingSession()
    script = [(0.0, batch(0)), (12.0, batch(1)), (12.1, batch(2))]
    await run_sender(SttSender(None, send_timeout=4.0), session, script, end=30.0, stats=stats)
    assert [t for t, _ in session.sent] == pytest.approx([0.0, 12.0, 12.1])
    assert session.keepalives == [] and session.finalized == pytest.approx([30.0])
    assert stats.forwarded_ms == 300


async def test_stt_sender_counts_each_batch_once_it_was_taken(autojump_clock):
    stats, session = CallStats(), RecordingSession()
    script = [(0.1 * k, batch(k)) for k in range(5)]
    await run_sender(SttSender(1.0, send_timeout=5.0), session, script, end=0.5, stats=stats)
    assert [audio for _, audio in session.sent] == [batch(k).payload for k in range(5)]
    assert stats.forwarded_ms == 500


@pytest.mark.parametrize("keepalive", [None, 1.0], ids=["no keepalive", "keepalive"])
async def test_stt_sender_raises_stalled_when_the_session_does_not_take_audio_in_time(autojump_clock, keepalive):
    """A stalled send is reported as one, never mistaken for idleness (no keepalive)."""
    session = RecordingSession()
    session.accept = trio.Event()
    send, receive = trio.open_memory_channel[AudioBatch](1)
    send.send_nowait(batch(0))
    with pytest.raises(ProviderStalledError, match="did not take audio for 4 s"):
        await SttSender(keepalive, send_timeout=4.0).run(DirectLink(session, receive, CallStats()))
    assert trio.current_time() == pytest.approx(4.0)
    assert session.keepalives == [] and session.sent == []


async def test_stt_sender_raises_stalled_when_a_keepalive_is_not_taken(autojump_clock):
    session = RecordingSession()
    session.stall_keepalive = True
    send, receive = trio.open_memory_channel[AudioBatch](0)
    with pytest.raises(ProviderStalledError, match="did not take a keepalive for 4 s"):
        await SttSender(1.0, send_timeout=4.0).run(DirectLink(session, receive, CallStats()))
    assert trio.current_time() == pytest.approx(5.0)
    send.close()


async def test_a_send_completing_as_its_deadline_passes_is_not_a_stall(mock_clock):
    """The session takes the audio in the very pass in which the deadline expires:
    the send succeeded, so nothing is raised and the next batches go out."""
    stats, session = CallStats(), RecordingSession()
    session.accept = trio.Event()
    sender = SttSender(1.0, send_timeout=4.0)
    send, receive = trio.open_memory_channel[AudioBatch](3)
    for k in range(3):
        send.send_nowait(batch(k))
    send.close()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run, DirectLink(session, receive, stats))
        await trio.testing.wait_all_tasks_blocked()  # the first send waits for accept
        mock_clock.jump(4.0)  # the deadline has passed ...
        session.accept.set()  # ... and the send completed: both seen in the same pass
    assert [audio for _, audio in session.sent] == [batch(k).payload for k in range(3)]
    assert stats.forwarded_ms == 300
    assert session.keepalives == [] and session.finalized == [4.0]


async def test_a_batch_arriving_as_the_keepalive_interval_ends_is_sent_without_a_keepalive(mock_clock):
    stats, session = CallStats(), RecordingSession()
    sender = SttSender(1.0, send_timeout=4.0)
    send, receive = trio.open_memory_channel[AudioBatch](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run, DirectLink(session, receive, stats))
        await trio.testing.wait_all_tasks_blocked()  # waiting for audio
        mock_clock.jump(1.0)  # the interval is over ...
        send.send_nowait(batch(0))  # ... and audio arrived: both seen in the same pass
        await trio.testing.wait_all_tasks_blocked()
        assert session.keepalives == []
        assert session.sent == [(1.0, batch(0).payload)]
        mock_clock.jump(1.0)
        await trio.testing.wait_all_tasks_blocked()
        assert session.keepalives == [2.0]  # the interval counts from the batch's arrival
        send.close()
    assert stats.forwarded_ms == 100 and session.finalized == [2.0]
