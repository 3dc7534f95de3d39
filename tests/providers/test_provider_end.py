"""How a provider session ends when something cuts it short, on each vendor's fake.

Whatever ends a session (the call's drain deadline, its owner's cancellation), the
vendor gets its end-of-stream message if it has not had it and a close frame with
1000, never a bare TCP close (1006); the audio that never went out stays counted in
``dropped_ms``.  Virtual time (autojump) over real loopback sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import orjson
import pytest
import trio

from actors.call import run_call
from actors.config import CallConfig
from providers.assemblyai import create as assemblyai
from providers.base import SttProvider
from providers.deepgram import create as deepgram
from providers.elevenlabs import create as elevenlabs
from providers.mistral import create as mistral
from providers.openai import create as openai
from tests.fakes.assemblyai_server import AssemblyAIFake
from tests.fakes.deepgram_server import DeepgramFake
from tests.fakes.elevenlabs_server import FakeElevenLabs
from tests.fakes.elevenlabs_server import TEST_KEY as ELEVENLABS_KEY
from tests.fakes.mistral_server import TEST_KEY as MISTRAL_KEY
from tests.fakes.mistral_server import FakeMistral
from tests.fakes.openai_server import TEST_KEY as OPENAI_KEY
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.script import Fault, Stall
from tests.fakes.ws_server import serve_fake
from tests.helpers import ListSink, play, task_count, tone, twilio_script

KEY = "test-key"
LIMIT = 60  # virtual seconds: a bound on each test, never an assertion on speed
DRAIN = 2.0
END_TIMEOUT = 1.0


def _json(received: list[str | bytes]) -> list[dict]:
    return [orjson.loads(m) for m in received if isinstance(m, str)]


@attrs.frozen
class Vendor:
    """One vendor's fake, set never to answer the end of the stream, and how to read
    what each of its connections was sent."""

    name: str
    fake: Callable[[], Any]
    provider: Callable[[str], SttProvider]
    connections: Callable[[Any], list[Any]]
    ends: Callable[[Any], list[str]]  # the end-of-stream messages a connection got, in order
    expected_end: list[str]

    def __str__(self) -> str:
        return self.name


def _controls(session: Any) -> list[str]:
    return [c for c in session.controls if c != "KeepAlive"]


def _commits(log: Any) -> list[str]:
    return ["commit" for m in _json(log.received) if m.get("commit") is True]


def _typed(*types: str) -> Callable[[Any], list[str]]:
    def ends(log: Any) -> list[str]:
        return [m["type"] for m in _json(log.received) if m.get("type") in types]
    return ends


VENDORS = [
    Vendor("assemblyai", lambda: AssemblyAIFake(api_key=KEY, answer_end=False),
           lambda base: assemblyai({"ASSEMBLYAI_API_KEY": KEY, "ASSEMBLYAI_BASE_URL": base}),
           lambda f: f.sessions, _controls, ["Terminate"]),
    Vendor("deepgram", lambda: DeepgramFake(api_key=KEY, answer_end=False),
           lambda base: deepgram({"DEEPGRAM_API_KEY": KEY, "DEEPGRAM_BASE_URL": base}),
           lambda f: f.sessions, _controls, ["Finalize", "CloseStream"]),
    Vendor("deepgram-flux", lambda: DeepgramFake(api_key=KEY, answer_end=False),
           lambda base: deepgram({"DEEPGRAM_API_KEY": KEY, "DEEPGRAM_BASE_URL": base,
                                  "DEEPGRAM_MODEL": "flux-general-en"}),
           lambda f: f.sessions, _controls, ["ForceEndTurn", "CloseStream"]),
    Vendor("elevenlabs", lambda: FakeElevenLabs(faults=[Fault(Stall(), at_end=True)]),
           lambda base: elevenlabs({"ELEVENLABS_API_KEY": ELEVENLABS_KEY, "ELEVENLABS_BASE_URL": base}),
           lambda f: f.connections, _commits, ["commit"]),
    Vendor("mistral", lambda: FakeMistral(faults=[Fault(Stall(), at_end=True)]),
           lambda base: mistral({"MISTRAL_API_KEY": MISTRAL_KEY, "MISTRAL_BASE_URL": base}),
           lambda f: f.connections, _typed("input_audio.flush", "input_audio.end"),
           ["input_audio.flush", "input_audio.end"]),
    Vendor("openai", lambda: FakeOpenAI(faults=[Fault(Stall(), at_end=True)]),
           lambda base: openai({"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": base}),
           lambda f: f.connections, _typed("input_audio_buffer.commit"), ["input_audio_buffer.commit"]),
]


async def _call(provider: SttProvider, audio: bytes, *, realtime: bool, drain: float = DRAIN
                ) -> tuple[ListSink, float, float]:
    """One call through ``run_call``: returns the sink, the hang-up time and the end time."""
    sink = ListSink()
    send, receive = trio.open_memory_channel[str](0)
    hung_up = trio.Event()
    hung_up_at = 0.0

    async def twilio() -> None:
        nonlocal hung_up_at
        await play(send, twilio_script(audio), realtime=realtime)
        hung_up_at = trio.current_time()
        hung_up.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(twilio)
        await run_call(receive, provider, [sink], config=CallConfig(drain_timeout=drain, backoff_jitter=0))
        ended_at = trio.current_time()
        await hung_up.wait()
    return sink, hung_up_at, ended_at


# --- the drain deadline cuts the session ---------------------------------------------------


@pytest.mark.parametrize("answer_end", [False, True], ids=["terminate-unanswered", "terminate-answered"])
async def test_a_paced_backlog_cut_by_the_drain_still_gets_terminate_and_a_close_frame(autojump_clock, answer_end):
    """The reported case: AssemblyAI paces a backlog to real time, the drain deadline
    (2 s) comes first.  AssemblyAI still gets ``Terminate`` and a close with 1000, and
    the audio it never got is exactly the call's ``dropped_ms``."""
    fake = AssemblyAIFake(api_key=KEY, answer_end=answer_end)
    audio = tone(6000, seed=3)
    before = task_count()
    with trio.fail_after(LIMIT):
        async with serve_fake(fake.handler) as base:
            provider = assemblyai({"ASSEMBLYAI_API_KEY": KEY, "ASSEMBLYAI_BASE_URL": base})
            sink, hung_up_at, ended_at = await _call(provider, audio, realtime=False)
    assert task_count() == before

    [session] = fake.sessions
    assert session.controls == ["Terminate"]
    assert session.close_code == 1000
    received_ms = session.received_ms
    assert 0 < received_ms < 6000
    assert bytes(session.audio) == audio[:len(session.audio)]  # in order, nothing twice

    ended = sink.events[-1]
    assert ended["type"] == "call_ended" and ended["reason"] == "stop"
    assert "final transcript not received within 2 s" in ended["detail"]
    assert ended["forwarded_ms"] == received_ms
    assert ended["dropped_ms"] == 6000 - received_ms
    assert ended_at - hung_up_at <= DRAIN + END_TIMEOUT
    # every turn the vendor ended before the cut reached the call, once, formatted; the
    # one answering Terminate comes after the cut, when the call is over (whether the
    # vendor got to send it before our close frame reached it or not)
    finals = [m["transcript"] for m in session.sent[:session.sent_before_terminate]
              if m["type"] == "Turn" and m["end_of_turn"] and m["turn_is_formatted"]]
    assert sink.committed() == finals != []
    assert "provider_error" not in sink.types()


@pytest.mark.parametrize("vendor", VENDORS, ids=str)
async def test_a_vendor_still_finishing_at_the_drain_deadline_gets_a_close_frame(autojump_clock, vendor):
    """Every vendor: the end-of-stream went out, the final never came back.  Half the
    drain on, the stall watchdog replaces the session (as before); the drain deadline
    then cuts the second one.  Each closes with a close handshake (1000), not a dropped
    TCP connection (1006), and the call ends as before."""
    fake = vendor.fake()
    audio = tone(1500, seed=4)
    before = task_count()
    with trio.fail_after(LIMIT):
        async with serve_fake(fake.handler) as base:
            sink, hung_up_at, ended_at = await _call(vendor.provider(base), audio, realtime=True)
    assert task_count() == before

    connections = vendor.connections(fake)
    assert len(connections) == 2
    for connection in connections:
        assert vendor.ends(connection) == vendor.expected_end
        assert connection.close_code == 1000
    notices = [t for t in sink.types() if t.startswith("provider_")]
    assert notices == ["provider_error", "provider_reconnected"] and sink.types()[-1] == "call_ended"
    ended = sink.events[-1]
    assert ended["reason"] == "stop" and "final transcript not received within 2 s" in ended["detail"]
    assert (ended["forwarded_ms"], ended["dropped_ms"]) == (1500, 0)
    assert DRAIN <= ended_at - hung_up_at <= DRAIN + END_TIMEOUT


# --- the session's owner cancels it before it finalized --------------------------------------


@pytest.mark.parametrize("vendor", VENDORS, ids=str)
async def test_a_session_cancelled_before_finalize_still_ends_the_stream_and_closes_1000(autojump_clock, vendor):
    """No ``finalize`` ever ran: leaving the session still sends the vendor's end of
    stream and a close frame, within the end timeout."""
    fake = vendor.fake()
    with trio.fail_after(LIMIT):
        async with serve_fake(fake.handler) as base:
            provider = vendor.provider(base)
            batch = tone(100, seed=5)
            with trio.CancelScope() as scope:
                async with provider.open_session() as session:
                    async with trio.open_nursery() as nursery:
                        async def drain_events() -> None:
                            while True:
                                await session.receive()
                        nursery.start_soon(drain_events)
                        for _ in range(15):  # 1.5 s of call audio, at Twilio's pace
                            await session.send_audio(_as_provider_audio(provider, batch))
                            await trio.sleep(0.1)
                        cut_at = trio.current_time()
                        scope.cancel()
            left_at = trio.current_time()
    assert scope.cancelled_caught
    [connection] = vendor.connections(fake)
    assert vendor.ends(connection) == vendor.expected_end
    assert connection.close_code == 1000
    assert left_at - cut_at <= END_TIMEOUT


def _as_provider_audio(provider: SttProvider, mulaw: bytes) -> bytes:
    """``mulaw`` (100 ms at 8 kHz) in the provider's format: its length is what counts."""
    fmt = provider.audio_format
    if fmt.encoding == "mulaw" and fmt.sample_rate == 8000:
        return mulaw
    return b"\x01\x00" * (fmt.sample_rate // 10)
