"""ReplayBuffer, as a table: a script of operations on one buffer, then exactly what it
holds (ms), what the call's counters say, and the audio a new session would be sent,
byte for byte.  Plus its compact storage: a deque of batches, without the objects."""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections import deque

import attrs
import pytest
import trio

from actors.messages import AudioBatch
from actors.replay import ReplayBuffer, _BatchQueue
from actors.stats import CallStats
from providers.base import MULAW_8K, AudioFormat

PCM16_16K = AudioFormat("pcm16", 16000)


def bytes_per_ms(fmt: AudioFormat) -> int:
    return fmt.sample_rate // 1000 * (1 if fmt.encoding == "mulaw" else 2)


def call_audio(fmt: AudioFormat, ms: int = 10_000) -> bytes:
    """The call's audio: every byte different from its neighbours, so a slice is its place."""
    return bytes((i * 7 + i // 251) % 256 for i in range(ms * bytes_per_ms(fmt)))


def span(fmt: AudioFormat, start: int, ms: int) -> AudioBatch:
    """The batch of the call's audio from ``start`` for ``ms``."""
    width = bytes_per_ms(fmt)
    return AudioBatch(start, ms, call_audio(fmt)[start * width:(start + ms) * width])


# Operations: ("append", start, ms) | ("send", n) next_batch + mark_sent n times |
# ("take",) next_batch only (in flight) | ("mark",) mark_sent of the batch in flight |
# ("commit", end_ms) | ("rewind", replayed_ms expected) | ("discard",)


@attrs.frozen
class Case:
    name: str
    ops: tuple[tuple, ...]
    held_ms: int
    unsent_ms: int
    replay_start_ms: int
    forwarded_ms: int
    overflow_ms: int = 0
    replayed_ms: int = 0
    #: (start, ms) of every batch a new session gets after ``rewind``, in order
    next_session: tuple[tuple[int, int], ...] = ()
    held_after_next_session: int | None = None  # held_ms once that session sent it all
    capacity_ms: int = 1000
    fmt: AudioFormat = MULAW_8K


A = "append"
CASES = [
    Case("batches go out in order and stay until committed",
         ((A, 0, 100), (A, 100, 100), (A, 200, 100), ("send", 3)),
         held_ms=300, unsent_ms=0, replay_start_ms=0, forwarded_ms=300,
         next_session=((0, 100), (100, 100), (200, 100)), held_after_next_session=300),
    Case("a commit at a batch edge frees the batches before it",
         ((A, 0, 100), (A, 100, 100), (A, 200, 100), ("send", 3), ("commit", 200)),
         held_ms=100, unsent_ms=0, replay_start_ms=200, forwarded_ms=300, next_session=((200, 100),)),
    Case("a commit mid-batch keeps the rest of it, to the sample",
         ((A, 0, 100), (A, 100, 100), (A, 200, 100), ("send", 3), ("commit", 150)),
         held_ms=150, unsent_ms=0, replay_start_ms=150, forwarded_ms=300, next_session=((150, 50), (200, 100))),
    Case("a commit mid-batch of pcm16 keeps whole samples",
         ((A, 0, 100), ("send", 1), ("commit", 30)),
         held_ms=70, unsent_ms=0, replay_start_ms=30, forwarded_ms=100, next_session=((30, 70),), fmt=PCM16_16K),
    Case("a commit never goes back",
         ((A, 0, 100), (A, 100, 100), ("send", 2), ("commit", 150), ("commit", 50)),
         held_ms=50, unsent_ms=0, replay_start_ms=150, forwarded_ms=200, next_session=((150, 50),)),
    Case("a commit past the sent audio leaves unsent audio alone until it is sent",
         ((A, 0, 100), (A, 100, 100), (A, 200, 100), ("send", 1), ("commit", 250)),
         held_ms=200, unsent_ms=200, replay_start_ms=100, forwarded_ms=100,
         next_session=((100, 100), (200, 100)), held_after_next_session=50),
    Case("rewind puts sent and in-flight audio back in front, in order",
         ((A, 0, 100), (A, 100, 100), (A, 200, 100), (A, 300, 100), ("send", 2), ("take",), ("rewind", 300)),
         held_ms=400, unsent_ms=400, replay_start_ms=0, forwarded_ms=200,
         next_session=((0, 100), (100, 100), (200, 100), (300, 100))),
    Case("replayed audio counts as replayed, not forwarded twice",
         ((A, 0, 100), (A, 100, 100), ("send", 2), ("commit", 50), ("rewind", 150), ("send", 2)),
         held_ms=150, unsent_ms=0, replay_start_ms=50, forwarded_ms=200, replayed_ms=150,
         next_session=((50, 50), (100, 100))),
    Case("a gap in the call's audio stays a gap",
         ((A, 0, 100), (A, 600, 100), ("send", 1)),
         held_ms=200, unsent_ms=100, replay_start_ms=0, forwarded_ms=100, next_session=((0, 100), (600, 100))),
    Case("overflow drops sent audio first, uncounted",
         ((A, 0, 100), ("send", 1), (A, 100, 100), (A, 200, 100), (A, 300, 100)),
         held_ms=300, unsent_ms=300, replay_start_ms=100, forwarded_ms=100, capacity_ms=300,
         next_session=((100, 100), (200, 100), (300, 100))),
    Case("then the oldest unsent audio, counted",
         ((A, 0, 100), ("send", 1), (A, 100, 100), (A, 200, 100), (A, 300, 100), (A, 400, 100)),
         held_ms=300, unsent_ms=300, replay_start_ms=200, forwarded_ms=100, overflow_ms=100, capacity_ms=300,
         next_session=((200, 100), (300, 100), (400, 100))),
    Case("overflow with a batch in flight drops the unsent batch after it",
         ((A, 0, 100), (A, 100, 100), (A, 200, 100), ("take",), (A, 300, 100), ("mark",)),
         held_ms=300, unsent_ms=200, replay_start_ms=0, forwarded_ms=100, overflow_ms=100, capacity_ms=300,
         next_session=((0, 100), (200, 100), (300, 100))),
    Case("overflow never drops the batch just taken in",
         ((A, 0, 100), (A, 100, 200)),
         held_ms=200, unsent_ms=200, replay_start_ms=100, forwarded_ms=0, overflow_ms=100, capacity_ms=100,
         next_session=((100, 200),)),
    Case("overflow of audio a session had already: not lost",
         ((A, 0, 100), ("send", 1), ("rewind", 100), (A, 100, 100), (A, 200, 100), (A, 300, 100)),
         held_ms=300, unsent_ms=300, replay_start_ms=100, forwarded_ms=100, capacity_ms=300,
         next_session=((100, 100), (200, 100), (300, 100))),
    Case("discard drops everything held but the batch in flight, and all audio to come",
         ((A, 0, 100), (A, 100, 100), ("take",), ("discard",), (A, 200, 100)),
         held_ms=100, unsent_ms=100, replay_start_ms=0, forwarded_ms=0),
    Case("the batch in flight at a discard still counts once accepted",
         ((A, 0, 100), (A, 100, 100), ("take",), ("discard",), ("mark",)),
         held_ms=0, unsent_ms=0, replay_start_ms=100, forwarded_ms=100),
    Case("nothing held: the next session starts where the call's audio was forwarded to",
         ((A, 0, 100), ("send", 1), ("commit", 100)),
         held_ms=0, unsent_ms=0, replay_start_ms=100, forwarded_ms=100),
]


async def play(case: Case) -> tuple[ReplayBuffer, CallStats]:
    stats = CallStats()
    buffer = ReplayBuffer(case.capacity_ms, stats, case.fmt)
    in_flight: AudioBatch | None = None
    for op, *args in case.ops:
        if op == A:
            buffer.append(span(case.fmt, *args))
        elif op == "send":
            for _ in range(args[0]):
                buffer.mark_sent(await buffer.next_batch())
        elif op == "take":
            in_flight = await buffer.next_batch()
        elif op == "mark":
            assert in_flight is not None
            buffer.mark_sent(in_flight)
            in_flight = None
        elif op == "commit":
            buffer.commit(args[0])
        elif op == "rewind":
            assert buffer.rewind() == args[0]
            in_flight = None
        elif op == "discard":
            buffer.discard()
        else:  # pragma: no cover
            raise AssertionError(op)
    return buffer, stats


def expected_payload(fmt: AudioFormat, start: int, ms: int) -> bytes:
    return span(fmt, start, ms).payload


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_replay_buffer(case: Case) -> None:
    buffer, stats = await play(case)
    assert (buffer.held_ms, buffer.unsent_ms, buffer.replay_start_ms()) == (
        case.held_ms, case.unsent_ms, case.replay_start_ms)
    assert (stats.forwarded_ms, stats.replay_overflow_ms, stats.replayed_ms) == (
        case.forwarded_ms, case.overflow_ms, case.replayed_ms)
    if "discard" in [op[0] for op in case.ops]:
        if buffer.unsent_ms == 0:
            with pytest.raises(trio.EndOfChannel):
                await buffer.next_batch()
        return
    # what a new session gets: byte for byte the call's audio of each span
    buffer.rewind()
    got = []
    while buffer.unsent_ms:
        got.append(batch := await buffer.next_batch())
        buffer.mark_sent(batch)
    assert [(b.start_ms, b.duration_ms) for b in got] == list(case.next_session)
    for b in got:
        assert b.payload == expected_payload(case.fmt, b.start_ms, b.duration_ms), (b.start_ms, b.duration_ms)
    if case.held_after_next_session is not None:
        assert buffer.held_ms == case.held_after_next_session


async def test_a_session_gets_the_very_bytes_appended_and_a_fresh_batch_each_time():
    """No copy of a payload on the way through; the ``AudioBatch`` is rebuilt on the way out."""
    buffer = ReplayBuffer(1000, CallStats(), MULAW_8K)
    appended = span(MULAW_8K, 0, 100)
    buffer.append(appended)
    out = await buffer.next_batch()
    assert out == appended and out.payload is appended.payload
    buffer.mark_sent(out)
    buffer.rewind()
    assert (await buffer.next_batch()).payload is appended.payload


async def test_mark_sent_of_a_batch_not_in_flight_is_refused():
    buffer = ReplayBuffer(1000, CallStats(), MULAW_8K)
    buffer.append(span(MULAW_8K, 0, 100))
    batch = await buffer.next_batch()
    with pytest.raises(RuntimeError):
        await buffer.next_batch()
    with pytest.raises(RuntimeError):
        buffer.mark_sent(span(MULAW_8K, 0, 100))  # equal, but not the one handed out
    buffer.mark_sent(batch)


# --- the compact storage -----------------------------------------------------------------------


def test_batch_queue_behaves_like_a_deque_of_batches():
    """Every operation the buffer uses, 2000 of them at random (seeded), against a deque."""
    rng = random.Random(7)
    model: deque[AudioBatch] = deque()
    queue = _BatchQueue()
    clock = 0
    for step in range(2000):
        op = rng.choice(["append", "append", "append", "popleft", "popleft", "appendleft", "extendleft",
                         "clear" if step % 500 == 499 else "append"])
        if op == "append":
            batch = AudioBatch(clock, rng.randint(0, 200), rng.randbytes(rng.randint(0, 40)))
            clock += 100
            model.append(batch)
            queue.append(batch)
        elif op == "popleft":
            if model:
                assert queue.popleft() == model.popleft()
            else:
                with pytest.raises(IndexError):
                    queue.popleft()
        elif op == "appendleft":
            batch = AudioBatch(-step, 50, b"x" * (step % 7))
            model.appendleft(batch)
            queue.appendleft(batch)
        elif op == "extendleft":
            batches = [AudioBatch(-step - i, 10, bytes([i])) for i in range(rng.randint(0, 3))]
            model.extendleft(batches)
            queue.extendleft(iter(batches))
        else:
            model.clear()
            queue.clear()
        assert len(queue) == len(model) and bool(queue) == bool(model)
        if model:
            assert queue[0] == model[0] and queue[-1] == model[-1]
    assert list(queue) == list(model)


def test_held_audio_keeps_no_object_but_its_payload_per_batch():
    """30 s of audio held: the payloads, plus a few bytes a batch (no AudioBatch, no int)."""
    stats = CallStats()
    buffer = ReplayBuffer(30_000, stats, MULAW_8K)
    payloads = [bytes([n % 256]) * 800 for n in range(300)]
    gc.collect()
    batches_before = sum(isinstance(o, AudioBatch) for o in gc.get_objects())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n, payload in enumerate(payloads):
            buffer.append(AudioBatch(10_000 + n * 100, 100, payload))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    gc.collect()
    assert sum(isinstance(o, AudioBatch) for o in gc.get_objects()) == batches_before
    assert buffer.held_ms == 30_000
    assert held <= 300 * 24 + 2048  # spans (16 B) and deque slots (8 B) a batch, and the containers
