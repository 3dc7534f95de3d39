"""``local``: offline PocketSphinx behind the ``SttSession`` API.

The sample call shipped for ``earpiece demo`` goes through the phone leg (8 kHz
mu-law round trip, upsampled to 16 kHz by the gateway's resampler) and into a real
recognizer process in 100 ms batches, as a live call would.  PocketSphinx is
deterministic, so the transcript is the same on every machine; thresholds still
keep a margin over what bench/local_accuracy.py measured.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from actors.dsp import StreamResampler, mulaw_to_pcm16, wav_to_mulaw_8k
from providers.errors import ProviderConfigError, ProviderConnectionError, ProviderRetryableError
from providers.events import (
    Finalized,
    FinalTranscript,
    PartialTranscript,
    ProviderClosed,
    ProviderEvent,
    ProviderFailed,
    SessionStarted,
)
from providers.local import SPEC, LocalProvider, LocalSettings, create
from providers.local import wire
from providers.local.gate import SpeechEnded, SpeechGate, SpeechStarted
from providers.local.session import COMMAND_CREDITS, EVENT_BUFFER
from providers.registry import get_spec

SAMPLES = Path(__file__).resolve().parents[3] / "gateway" / "samples"
SAMPLE_WAV = SAMPLES / "sample_call.wav"
SAMPLE_TEXT = (SAMPLES / "sample_call.txt").read_text()

BATCH_BYTES = 3200  # 100 ms of 16 kHz pcm16: the gateway's batch
#: bench/LOCAL_ACCURACY.md measured 0.51 on the sample call.
MAX_SAMPLE_WER = 0.7
#: Words of the sample call PocketSphinx gets right (it is deterministic).
RELIABLE_WORDS = ("appointment", "tuesday", "delivery", "call", "back")
CALL_DEADLINE = 120  # seconds: a loaded 2-core CI box decodes at ~0.6 of real time


def telephone_audio(wav: Path) -> bytes:
    """``wav`` as the local provider receives it from the gateway."""
    resampler = StreamResampler(8000, 16000)
    pcm8k = mulaw_to_pcm16(wav_to_mulaw_8k(wav))
    return resampler.process(pcm8k) + resampler.flush()


def batches(pcm: bytes, size: int = BATCH_BYTES) -> list[bytes]:
    return [pcm[i:i + size] for i in range(0, len(pcm), size)]


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, hyp_word in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref_word != hyp_word))
    return row[-1] / len(ref)


def other_threads() -> set[threading.Thread]:
    """Live threads, minus trio's idle worker-cache threads (they run no job and
    exit on their own; ``open_process`` borrows one to fork)."""
    return {t for t in threading.enumerate() if not t.name.startswith("Trio thread ")}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def transcribe(provider: LocalProvider, audio: Sequence[bytes]) -> list[ProviderEvent]:
    """Send ``audio`` batch by batch, then finalize; every event up to ``Finalized``."""
    events: list[ProviderEvent] = []
    async with provider.open_session() as session, trio.open_nursery() as nursery:
        async def speak() -> None:
            for batch in audio:
                await session.send_audio(batch)
            await session.finalize()
        nursery.start_soon(speak)
        while not isinstance(event := await session.receive(), Finalized):
            events.append(event)
        events.append(event)
    return events


# --- the registry entry and settings -------------------------------------------------


def test_spec_is_offline_keyless_pcm16_16k_and_registered():
    assert get_spec("local") is SPEC
    assert (SPEC.name, SPEC.key_env, SPEC.offline) == ("local", None, True)
    assert (SPEC.audio_format.encoding, SPEC.audio_format.sample_rate) == ("pcm16", 16000)
    provider = SPEC.factory({})
    assert provider.audio_format == SPEC.audio_format
    assert (provider.name, provider.chunk_ms, provider.keepalive_interval) == ("local", None, None)


def test_settings_come_from_local_env_variables(tmp_path):
    lm = tmp_path / "domain.lm"
    lm.write_text("x")
    settings = LocalSettings.from_env({"LOCAL_SILENCE_MS": "900", "LOCAL_MAX_UTTERANCE_S": "30",
                                       "LOCAL_VAD_MODE": "Strict", "LOCAL_SEARCH": "fast", "LOCAL_LM": str(lm)})
    assert (settings.silence_ms, settings.max_utterance_ms, settings.vad_mode, settings.preset, settings.lm) == (
        900, 30_000, "strict", "fast", str(lm))
    assert LocalSettings.from_env({"LOCAL_SILENCE_MS": " "}) == LocalSettings()


@pytest.mark.parametrize(("env", "fix"), [
    ({"LOCAL_SILENCE_MS": "fast"}, "LOCAL_SILENCE_MS must be a whole number of ms from 200 to 5000, not 'fast'"),
    ({"LOCAL_SILENCE_MS": "50"}, "LOCAL_SILENCE_MS must be a whole number of ms from 200 to 5000, not '50'"),
    ({"LOCAL_MAX_UTTERANCE_S": "0"}, "LOCAL_MAX_UTTERANCE_S must be a whole number of seconds from 5 to 120"),
    ({"LOCAL_VAD_MODE": "loud"}, "LOCAL_VAD_MODE must be one of loose, medium_loose, medium_strict, strict"),
    ({"LOCAL_SEARCH": "turbo"}, "LOCAL_SEARCH must be one of accurate, fast, not 'turbo'"),
    ({"LOCAL_LM": "/no/such.lm"}, "LOCAL_LM must name an N-gram language model"),
    ({"LOCAL_DICT": "/no/such.dict"}, "LOCAL_DICT must name a pronunciation dictionary"),
])
def test_a_bad_setting_is_a_fatal_config_error_naming_the_fix(env, fix):
    with pytest.raises(ProviderConfigError) as caught:
        create(env)
    assert caught.value.fatal
    assert fix in str(caught.value)
    assert "\n" not in str(caught.value)


# --- pure parts: the speech gate and the pipe protocol --------------------------------


def gate_transitions(decisions: str, **shape: int) -> list[SpeechStarted | SpeechEnded]:
    gate = SpeechGate(**{"start_frames": 3, "start_window": 5, "end_window": 10, **shape})
    return [t for t in (gate.update(c == "1") for c in decisions) if t is not None]


@pytest.mark.parametrize(("decisions", "expected"), [
    ("0000000000", []),
    ("0011100000000000", [SpeechStarted(2), SpeechEnded(5)]),  # 3 frames (60 ms) open it
    ("0010100000", []),  # two blips in the start window are not speech
    ("0111" + "0000" + "11" + "0000000000", [SpeechStarted(1), SpeechEnded(10)]),  # a short pause keeps it open
    ("111" + "0" * 9 + "1" + "0" * 10, [SpeechStarted(0), SpeechEnded(3)]),  # one blip in a pause is ignored
    ("111" + "0" * 10 + "111" + "0" * 10, [SpeechStarted(0), SpeechEnded(3), SpeechStarted(13), SpeechEnded(16)]),
])
def test_speech_gate_opens_fast_and_closes_after_a_long_pause(decisions, expected):
    assert gate_transitions(decisions) == expected


def test_pipe_protocol_round_trips_every_worker_event_even_split_byte_by_byte():
    events = [wire.Ready(), PartialTranscript("book an", 0, 900), FinalTranscript("book an appointment", 0, 1400),
              Finalized(), wire.Done()]
    data = b"".join(wire.encode_event(e) for e in events) + wire.encode_failure(ProviderConfigError("local", "no model"))
    decoder = wire.EventDecoder()
    decoded = [e for i in range(len(data)) for e in decoder.feed(data[i:i + 1])]
    assert decoded[:-1] == events
    failed = decoded[-1]
    assert isinstance(failed, ProviderFailed) and isinstance(failed.error, ProviderConfigError)
    assert wire.decode_header(wire.encode_command(wire.AUDIO, b"\x01\x00")[:wire.HEADER_BYTES]) == (wire.AUDIO, 2)


# --- the sample call, end to end ------------------------------------------------------


@attrs.frozen
class SampleCall:
    events: list[ProviderEvent]
    duration_ms: int

    @property
    def finals(self) -> list[FinalTranscript]:
        return [e for e in self.events if isinstance(e, FinalTranscript)]

    @property
    def text(self) -> str:
        return " ".join(f.text for f in self.finals)


@pytest.fixture(scope="module")
def sample_call() -> SampleCall:
    """One decode of the whole sample call (~20 s of audio), shared by the tests below."""
    audio = telephone_audio(SAMPLE_WAV)

    async def run() -> list[ProviderEvent]:
        with trio.fail_after(CALL_DEADLINE):
            return await transcribe(create({}), batches(audio))

    return SampleCall(trio.run(run), len(audio) // 32)


@pytest.mark.slow
def test_sample_call_opens_with_session_started_and_ends_with_finalized(sample_call):
    assert isinstance(sample_call.events[0], SessionStarted)
    assert sample_call.events[-1] == Finalized()
    assert not any(isinstance(e, ProviderClosed | ProviderFailed) for e in sample_call.events)


@pytest.mark.slow
def test_sample_call_partials_come_before_the_first_final(sample_call):
    kinds = [type(e) for e in sample_call.events]
    first_final = kinds.index(FinalTranscript)
    assert PartialTranscript in kinds[:first_final]
    assert all(e.text for e in sample_call.events if isinstance(e, PartialTranscript))


@pytest.mark.slow
def test_sample_call_has_one_final_per_sentence_with_increasing_disjoint_spans(sample_call):
    finals = sample_call.finals
    assert len(finals) == len(SAMPLE_TEXT.strip().splitlines())  # ~1 s pauses end each sentence
    for final in finals:
        assert final.text and 0 <= final.start_ms < final.end_ms <= sample_call.duration_ms
    for before, after in zip(finals, finals[1:]):
        assert before.end_ms <= after.start_ms


@pytest.mark.slow
def test_sample_call_partials_span_their_utterance_so_far(sample_call):
    utterance_start = None
    for event in sample_call.events:
        if isinstance(event, PartialTranscript):
            utterance_start = event.start_ms if utterance_start is None else utterance_start
            assert event.start_ms == utterance_start and event.start_ms < event.end_ms <= sample_call.duration_ms
        elif isinstance(event, FinalTranscript):
            assert utterance_start in (None, event.start_ms)
            utterance_start = None


@pytest.mark.slow
def test_sample_call_word_error_rate_is_below_the_measured_threshold(sample_call):
    assert wer(SAMPLE_TEXT, sample_call.text) < MAX_SAMPLE_WER, sample_call.text


@pytest.mark.slow
def test_sample_call_transcript_has_the_words_pocketsphinx_gets_right(sample_call):
    heard = set(words(sample_call.text))
    assert set(RELIABLE_WORDS) <= heard, sample_call.text


# --- finalize, the trio thread, backpressure, cancellation, failures ---------------------


@pytest.mark.slow
async def test_finalize_mid_sentence_yields_that_sentence_final_then_finalized():
    first_sentence = telephone_audio(SAMPLE_WAV)[:2 * 32000]  # "Hello, I would like..."
    with trio.fail_after(CALL_DEADLINE):
        events = await transcribe(create({}), batches(first_sentence))
    finals = [e for e in events if isinstance(e, FinalTranscript)]
    assert events[-2:] == [finals[-1], Finalized()]
    assert len(finals) == 1
    assert finals[0].end_ms <= 2000 and "like" in words(finals[0].text), finals[0].text


@pytest.mark.slow
async def test_decoding_never_blocks_the_trio_thread():
    """A task that wakes every millisecond keeps running while the recognizer loads
    its model and decodes 3 s of speech sent as one batch (about a second of CPU: in
    this process PocketSphinx would hold the GIL for all of it)."""
    speech = telephone_audio(SAMPLE_WAV)[8 * 32000:11 * 32000]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.001)
            ticks += 1

    with trio.fail_after(CALL_DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            async with create({}).open_session() as session:
                ticks_while_loading = ticks
                await session.send_audio(speech)
                ticks = 0
                while not isinstance(await session.receive(), PartialTranscript | FinalTranscript):
                    pass
                ticks_while_decoding = ticks
            nursery.cancel_scope.cancel()
    assert ticks_while_loading >= 20
    assert ticks_while_decoding >= 50


@pytest.mark.slow
async def test_a_reader_that_stops_reading_stops_the_audio_and_nothing_is_lost(sample_call):
    """Nobody reads events: the event channel fills, the recognizer's answers stop,
    and ``send_audio`` waits with at most COMMAND_CREDITS batches unanswered.  Once
    read, the events are exactly those of the same audio read promptly."""
    audio = batches(telephone_audio(SAMPLE_WAV)[:4 * 32000])  # ends inside the first sentence
    sent = 0
    with trio.fail_after(CALL_DEADLINE):
        async with create({}).open_session() as session, trio.open_nursery() as nursery:
            async def speak() -> None:
                nonlocal sent
                for batch in audio:
                    await session.send_audio(batch)
                    sent += 1
                    assert session.statistics().commands_in_flight <= COMMAND_CREDITS
                await session.finalize()
            nursery.start_soon(speak)
            while (stats := session.statistics()).events_buffered < EVENT_BUFFER \
                    or stats.commands_in_flight < COMMAND_CREDITS:
                await trio.sleep(0.01)
            await trio.testing.wait_all_tasks_blocked()
            stalled_at = sent
            await trio.sleep(0.2)
            assert sent == stalled_at < len(audio)  # send_audio is waiting, not buffering
            events = []
            while not isinstance(event := await session.receive(), Finalized):
                events.append(event)
    assert sent == len(audio)
    *before_finalize, last = events
    assert isinstance(before_finalize[0], SessionStarted)
    assert before_finalize[1:] == sample_call.events[1:len(before_finalize)]
    assert isinstance(last, FinalTranscript)  # the first sentence, cut by finalize


async def test_cancelling_a_call_mid_sentence_leaves_no_process_and_no_thread():
    threads_before = other_threads()
    audio = batches(telephone_audio(SAMPLE_WAV)[:1 * 32000])
    with trio.fail_after(CALL_DEADLINE):
        with trio.CancelScope() as call:
            async with create({}).open_session() as session:
                pid = session.statistics().pid
                for batch in audio:
                    await session.send_audio(batch)
                call.cancel()
                await session.receive()
    assert call.cancelled_caught
    assert session.statistics().exit_code is not None
    assert not pid_alive(pid)
    assert other_threads() == threads_before


async def test_a_recognizer_process_that_dies_fails_the_session_with_a_retryable_error():
    with trio.fail_after(CALL_DEADLINE):
        async with create({}).open_session() as session:
            assert isinstance(await session.receive(), SessionStarted)
            os.kill(session.statistics().pid, signal.SIGKILL)
            failed = await session.receive()
            assert isinstance(failed, ProviderFailed)
            assert isinstance(failed.error, ProviderConnectionError) and not failed.error.fatal
            assert await session.receive() == ProviderClosed(1011, "recognizer failed")
            with pytest.raises(ProviderConnectionError):
                await session.send_audio(b"\x00\x00" * 1600)


async def test_a_model_that_cannot_load_fails_the_open_with_a_config_error(tmp_path):
    bad_lm = tmp_path / "bad.lm"
    bad_lm.write_text("this is not a language model\n")
    provider = create({"LOCAL_LM": str(bad_lm)})
    with trio.fail_after(CALL_DEADLINE), pytest.raises(ProviderConfigError, match="LOCAL_LM"):
        async with provider.open_session():
            pass  # pragma: no cover


async def test_audio_after_finalize_and_odd_byte_counts_are_caller_errors():
    with trio.fail_after(CALL_DEADLINE):
        async with create({}).open_session() as session:
            with pytest.raises(ValueError, match="even number of bytes"):
                await session.send_audio(b"\x00")
            await session.finalize()
            await session.finalize()  # idempotent
            with pytest.raises(RuntimeError, match="after finalize"):
                await session.send_audio(b"\x00\x00")
            assert isinstance(await session.receive(), SessionStarted)
            assert await session.receive() == Finalized()  # nothing was said


def test_worker_reports_its_settings_as_json_it_can_read_back():
    settings = LocalSettings(silence_ms=800, lm=None)
    assert LocalSettings(**json.loads(json.dumps(attrs.asdict(settings)))) == settings


def test_recognizer_failure_is_retryable():
    line = wire.encode_failure(RuntimeError("decoder exploded"))
    (failed,) = wire.EventDecoder().feed(line)
    assert isinstance(failed, ProviderFailed) and isinstance(failed.error, ProviderRetryableError)


@pytest.mark.slow
def test_recognizer_cuts_an_utterance_without_a_pause_at_max_utterance():
    from providers.local.recognizer import Recognizer  # in this process: fine for a test

    recognizer = Recognizer(LocalSettings(max_utterance_ms=1000))
    try:
        events = [e for batch in batches(telephone_audio(SAMPLE_WAV)[:3 * 32000]) for e in recognizer.feed(batch)]
        events += recognizer.flush()
    finally:
        recognizer.close()
    finals = [e for e in events if isinstance(e, FinalTranscript)]
    assert len(finals) >= 2
    for before, after in zip(finals, finals[1:]):
        assert before.end_ms == after.start_ms and after.end_ms - after.start_ms <= 1000
