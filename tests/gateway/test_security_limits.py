"""Limits a peer cannot talk its way past: call duration and media idle time (virtual
time, exact), the message/payload/parameter bounds as settings, and how each is
configured (flag, ``EARPIECE_*`` variable, default)."""

from __future__ import annotations

import pytest
import trio

from actors.call import run_call
from actors.config import CallConfig
from gateway.app import Gateway
from gateway.config import ConfigError, Settings
from gateway.serve import hypercorn_config
from providers.scripted import ScriptedProvider
from providers.twilio import TwilioLimits, encode_dtmf, encode_media_event, encode_stop
from tests.helpers import ACCOUNT_SID, ListSink, call_ids, tone, twilio_script

IDLE = 30.0


async def _feed(send: trio.MemorySendChannel[str], script, *, then_dtmf_after: float | None = None,
                marks: dict[str, float]) -> None:
    """Play ``script`` at Twilio's pace, note when the last media went out, optionally send a
    dtmf some seconds later, then keep the socket open and silent (never close)."""
    for message, is_media in script:
        await send.send(message)
        if is_media:
            marks["last_media"] = trio.current_time()
            await trio.sleep(0.02)
    if then_dtmf_after is not None:
        await trio.sleep(then_dtmf_after)
        await send.send(encode_dtmf(stream_sid=call_ids(1)[1], sequence_number=10_000, digit="7"))
        marks["dtmf"] = trio.current_time()
    await trio.sleep_forever()


async def _run_silent_after(script, config: CallConfig, **feed_options):
    provider, sink = ScriptedProvider(), ListSink()
    send, receive = trio.open_memory_channel[str](0)
    marks: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _feed(send, script, marks=marks, **feed_options))
        started = trio.current_time()
        outcome = await run_call(receive, provider, [sink], config=config)
        ended = trio.current_time()
        nursery.cancel_scope.cancel()
    return outcome, provider, sink, marks, started, ended


async def test_media_idle_timeout_ends_the_call_exactly_after_the_last_media(autojump_clock):
    audio = tone(1000)
    script = twilio_script(audio, stop=False)
    outcome, provider, sink, marks, _, ended = await _run_silent_after(script, CallConfig(), then_dtmf_after=10)
    assert ended - marks["last_media"] == pytest.approx(IDLE)  # the dtmf at +10 s did not count as media
    assert marks["dtmf"] < ended
    assert (outcome.reason, outcome.close_code) == ("error", 1008)
    assert outcome.detail == "no media from Twilio for 30 s (media_idle_timeout)"
    assert bytes(provider.sessions[0].received) == audio  # drained like a hang-up
    assert sink.committed() == ["audio 0 to 1000"]
    last = sink.events[-1]
    assert (last["type"], last["reason"], last["detail"]) == ("call_ended", "error", outcome.detail)
    assert (last["audio_ms"], last["forwarded_ms"], last["dropped_ms"]) == (1000, 1000, 0)
    assert [e["digit"] for e in sink.events if e["type"] == "dtmf"] == ["7"]


async def test_media_idle_timeout_is_configurable(autojump_clock):
    script = twilio_script(tone(200), stop=False)
    outcome, *_, marks, _, ended = await _run_silent_after(script, CallConfig(media_idle_timeout=2.5))
    assert ended - marks["last_media"] == pytest.approx(2.5)
    assert outcome.detail == "no media from Twilio for 2.5 s (media_idle_timeout)"


async def test_max_call_duration_ends_a_streaming_call_and_keeps_what_was_said(autojump_clock):
    audio = tone(10_000)
    config = CallConfig(max_call_duration=5.0)
    outcome, provider, sink, _, started, ended = await _run_silent_after(twilio_script(audio), config)
    assert ended - started == pytest.approx(5.0)
    assert (outcome.reason, outcome.close_code) == ("error", 1008)
    assert outcome.detail == "the call reached max_call_duration (5 s)"
    received = bytes(provider.sessions[0].received)
    assert received == audio[: len(received)] and 4980 * 8 <= len(received) <= 5020 * 8
    last = sink.events[-1]
    assert last["reason"] == "error" and "max_call_duration" in last["detail"]
    assert last["audio_ms"] == last["forwarded_ms"] == len(received) // 8 and last["dropped_ms"] == 0
    assert sink.committed()[-1].endswith(f"to {len(received) // 8}")


async def test_a_socket_that_never_starts_is_closed_after_the_idle_timeout(autojump_clock):
    script = list(twilio_script(tone(100)))[:1]  # connected, then nothing
    outcome, provider, sink, _, started, ended = await _run_silent_after(iter(script), CallConfig())
    assert ended - started == pytest.approx(IDLE)
    assert outcome.reason == "no-call"
    assert outcome.detail == "no start from Twilio within 30 s (media_idle_timeout)"
    assert provider.sessions == [] and sink.events == []


async def test_steady_media_is_never_idle(autojump_clock):
    audio = tone(3000)
    outcome, provider, *_ = await _run_silent_after(twilio_script(audio), CallConfig(media_idle_timeout=0.5))
    assert outcome.reason == "stop"
    assert bytes(provider.sessions[0].received) == audio


async def test_media_that_fills_a_batch_slowly_is_never_taken_for_idle(autojump_clock):
    """1 ms payloads take 2 s to fill a 100 ms batch, longer than a 0.5 s idle timeout:
    the reader's per-batch deadline fires early and reading resumes, losing nothing."""
    audio = tone(150)  # 150 media of 8 bytes, one per 20 ms: 3 s on the wire
    script = [(message, True) if is_media else (message, False) for message, is_media in twilio_script(b"")]
    call_sid, stream_sid = call_ids(1)
    frames = [(encode_media_event(stream_sid=stream_sid, sequence_number=2 + i, chunk=1 + i, timestamp=i,
                                  payload=audio[8 * i:8 * i + 8]), True) for i in range(150)]
    stop = (encode_stop(stream_sid=stream_sid, sequence_number=152, account_sid=ACCOUNT_SID, call_sid=call_sid),
            False)
    outcome, provider, sink, *_ = await _run_silent_after(iter([*script[:2], *frames, stop]),
                                                          CallConfig(media_idle_timeout=0.5))
    assert outcome.reason == "stop"
    assert bytes(provider.sessions[0].received) == audio
    assert sink.events[-1]["forwarded_ms"] == 150


# ------------------------------------------------------------------------ configuration

LIMIT_FLAGS = [
    # (setting, flag value, expected, default)
    ("max_message_bytes", "4096", 4096, 65536),
    ("max_payload_bytes", "1600", 1600, 8000),
    ("max_custom_parameters", "3", 3, 64),
    ("max_custom_parameter_chars", "499", 499, 1000),
    ("max_call_duration", "60", 60.0, 14400.0),
    ("media_idle_timeout", "2.5", 2.5, 30.0),
]


@pytest.mark.parametrize(("name", "raw", "expected", "default"), LIMIT_FLAGS, ids=[r[0] for r in LIMIT_FLAGS])
def test_each_limit_has_a_default_a_flag_and_a_variable(name, raw, expected, default):
    assert getattr(Settings.from_sources({}, {}), name) == default
    assert getattr(Settings.from_sources({name: raw}, {}), name) == expected
    assert getattr(Settings.from_sources({}, {f"EARPIECE_{name.upper()}": raw}), name) == expected
    assert getattr(Settings.from_sources({name: raw}, {f"EARPIECE_{name.upper()}": "7"}), name) == expected


@pytest.mark.parametrize("name", [r[0] for r in LIMIT_FLAGS])
@pytest.mark.parametrize("raw", ["0", "-1", "lots", "nan", "inf"])
def test_a_bad_limit_is_one_config_error_naming_the_flag(name, raw):
    with pytest.raises(ConfigError) as error:
        Settings.from_sources({name: raw}, {})
    assert f"--{name.replace('_', '-')}" in str(error.value)


def test_settings_reach_the_call_runtime_and_hypercorn():
    settings = Settings(provider="scripted", max_message_bytes=4096, max_payload_bytes=1600,
                        max_custom_parameters=3, max_custom_parameter_chars=499,
                        max_call_duration=60.0, media_idle_timeout=2.5)
    gateway = Gateway(settings, ScriptedProvider(), [])
    config = gateway.call_config
    assert config.twilio_limits == TwilioLimits(max_payload_bytes=1600, max_custom_parameters=3,
                                                max_custom_parameter_chars=499, max_message_chars=4096)
    assert (config.max_call_duration, config.media_idle_timeout) == (60.0, 2.5)
    assert hypercorn_config("127.0.0.1", 0, max_message_bytes=4096).websocket_max_message_size == 4096
    assert hypercorn_config("127.0.0.1", 0).websocket_max_message_size == 64 * 1024


def test_the_twilio_auth_token_comes_from_the_environment_only():
    assert Settings.from_sources({}, {"TWILIO_AUTH_TOKEN": "tok-abc-123456"}).twilio_auth_token == "tok-abc-123456"
    assert Settings.from_sources({}, {}).twilio_auth_token is None
    assert "tok-abc-123456" not in repr(Settings.from_sources({}, {"TWILIO_AUTH_TOKEN": "tok-abc-123456"}))


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ({"public_url": "https://user:pw@gw.example.test"}, "without user:password@"),
        ({"public_url": "https://gw.example.test/?x=1"}, "without user:password@, query"),
        ({"certfile": "cert.pem"}, "--certfile and --keyfile go together"),
        ({"keyfile": "key.pem"}, "--certfile and --keyfile go together"),
    ],
)
def test_bad_public_url_or_half_a_tls_pair_is_a_config_error(flags, says):
    with pytest.raises(ConfigError) as error:
        Settings.from_sources(flags, {})
    assert says in str(error.value) and "pw" not in str(error.value)
