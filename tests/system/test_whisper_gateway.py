"""``whisper`` behind the real gateway: the first command a user runs, and a busy CPU.

``earpiece demo`` (whisper is the default provider) must print the sample call's
sentences nearly word for word; calls streamed at real-time pace through a real
Hypercorn gateway on 127.0.0.1, more than one decode worker keeps up with, must get
every sentence committed, with partials thinned out and the audio accounted for.
"""

from __future__ import annotations

import re

import attrs
import pytest
import trio

from actors.dsp import wav_to_mulaw_8k
from gateway.simulator import simulate_call
from providers.whisper import DecodeQueue, WhisperProvider
from tests.conftest import running_gateway
from tests.helpers import ListSink
from tests.gateway.test_cli import run
from tests.providers.local.test_local import SAMPLE_TEXT, SAMPLE_WAV, wer, words
from tests.providers.whisper.test_whisper import CALL_DEADLINE, MAX_SAMPLE_WER


@pytest.mark.slow
def test_earpiece_demo_prints_the_sample_call_nearly_word_for_word():
    result = run("demo", "--fast", timeout=CALL_DEADLINE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"\[CA[0-9a-f]{32}\] Twilio stream started", lines[0])
    assert re.fullmatch(r"\[CA[0-9a-f]{32}\] Twilio stream stopped", lines[-1])
    committed = [line.removeprefix("COMMITTED: ") for line in lines if line.startswith("COMMITTED: ")]
    assert len(committed) == len(SAMPLE_TEXT.strip().splitlines())
    assert wer(SAMPLE_TEXT, " ".join(committed)) <= MAX_SAMPLE_WER, committed
    assert "Traceback" not in result.stderr


@pytest.mark.slow
async def test_more_real_time_calls_than_one_worker_decodes_commit_every_sentence(whisper):
    """Three calls at once, each the sample call's first two sentences (7.2 s) at
    Twilio's pace, on one decode worker that is asked for a partial every 300 ms of
    each call's speech (more than it can decode on any machine): commits all arrive
    (two per call, in order),
    partials thin out, and no audio is lost (``dropped_ms`` 0, all of it forwarded).
    The gateway's default drain: whisper declares how long its answers may take, so
    commits waiting in line on a busy shared VM are waited for, never taken for a dead
    session (no reconnect, no replay).  (Three calls, not more: the drain still bounds
    the line.)"""
    one_worker = WhisperProvider(attrs.evolve(whisper.settings, partial_ms=300), whisper.model, DecodeQueue(1))
    mulaw = wav_to_mulaw_8k(SAMPLE_WAV)[:7200 * 8]
    sink = ListSink()
    with trio.fail_after(CALL_DEADLINE):
        async with running_gateway(one_worker, [sink]) as gw:
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(lambda: simulate_call(gw.ws_url, mulaw))
            await gw.idle()
    calls = {e["call_sid"] for e in sink.events}
    assert len(calls) == 3
    partials = 0
    for call in calls:
        events = sink.of_call(call)
        commits = [e for e in events if e["type"] == "transcript" and e["kind"] == "committed"]
        assert [words(c["text"])[:2] for c in commits] == [["hello", "i"], ["my", "name"]], commits
        assert commits[0]["audio_end_ms"] <= commits[1]["audio_start_ms"]
        assert all(c["provider"] == "whisper" for c in commits)
        partials += sum(1 for e in events if e["type"] == "transcript" and e["kind"] == "partial")
        (ended,) = [e for e in events if e["type"] == "call_ended"]
        assert (ended["reason"], ended["audio_ms"], ended["forwarded_ms"], ended["dropped_ms"]) == \
            ("stop", 7200, 7200, 0)
        assert not any(e["type"].startswith("provider_") for e in events), events
    stats = one_worker.queue.statistics()
    assert stats.commits_run >= 6  # never skipped (decodes ahead of a pause run as commits too)
    assert stats.partials_skipped > 0 and partials <= stats.partials_run  # thinned out; shown only when decoded


