"""Word error rate of the ``local`` provider (PocketSphinx) on telephone audio.

    .venv/bin/python bench/local_accuracy.py            # the table in bench/LOCAL_ACCURACY.md
    .venv/bin/python bench/local_accuracy.py --verbose  # plus every hypothesis
    .venv/bin/python bench/local_accuracy.py --measure-cmn   # derive TELEPHONE_CMNINIT
    .venv/bin/python bench/local_accuracy.py --gil-check     # why a process, not a thread

Corpus: the shipped sample call (gateway/samples/sample_call.wav) and held-out
sentences it was *not* tuned on, synthesized here with espeak-ng and flite (both
from Debian).  Every file goes through the phone leg the gateway sees: resampled
to 8 kHz, G.711 mu-law encoded and decoded (``actors.dsp``), then either fed at
8 kHz or upsampled to 16 kHz with the gateway's soxr resampler.  Streaming rows run
the provider's own ``Recognizer`` in 100 ms batches, exactly as a live call does.

WER = (substitutions + deletions + insertions) / reference words, on lowercased
words with punctuation removed, summed over a group of files.  CPU is the decode
time (process CPU, model loading excluded) per second of audio.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import attrs
import numpy as np
import pocketsphinx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.dsp import StreamResampler, mulaw_to_pcm16, wav_to_mulaw_8k  # noqa: E402
from providers.local.recognizer import Recognizer  # noqa: E402
from providers.local.settings import LocalSettings  # noqa: E402

SAMPLE_WAV = ROOT / "gateway" / "samples" / "sample_call.wav"
SAMPLE_TXT = ROOT / "gateway" / "samples" / "sample_call.txt"
BATCH_MS = 100  # what the gateway sends the provider

HELD_OUT_TEXTS = (
    "I am calling about my bill. I was charged twice this month. Please send me a new statement.",
    "The package arrived yesterday but the box was damaged. I would like a refund or a replacement.",
    "What time do you open on Saturday? Is there parking near the front door?",
)

#: (label, group, command before the text, output flag); the text and the file are appended.
VOICES = (
    ("espeak-ng en-us+klatt5 -s 150", "espeak", ["espeak-ng", "-v", "en-us+klatt5", "-s", "150"], "-w"),
    ("espeak-ng en-us -s 150", "espeak", ["espeak-ng", "-v", "en-us", "-s", "150"], "-w"),
    ("flite rms", "flite", ["flite", "-voice", "rms", "-t"], "-o"),
    ("flite slt", "flite", ["flite", "-voice", "slt", "-t"], "-o"),
    ("flite awb", "flite", ["flite", "-voice", "awb", "-t"], "-o"),
)


# ---------------------------------------------------------------------------- WER


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance over words (one row of the table at a time)."""
    row = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        diagonal, row[0] = row[0], i
        for j, hyp_word in enumerate(hypothesis, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref_word != hyp_word))
    return row[-1]


def wer(reference: str, hypothesis: str) -> float:
    ref = words(reference)
    return edit_distance(ref, words(hypothesis)) / max(1, len(ref))


# ------------------------------------------------------------------------- corpus


@attrs.frozen
class Item:
    name: str
    group: str  # "sample", "espeak", "flite"
    wav: str
    text: str


def synthesize(workdir: Path) -> list[Item]:
    items = [Item("sample call", "sample", str(SAMPLE_WAV), SAMPLE_TXT.read_text())]
    for t, text in enumerate(HELD_OUT_TEXTS, 1):
        for label, group, command, out_flag in VOICES:
            wav = workdir / f"{group}-{len(items)}.wav"
            argv = [*command, text, out_flag, str(wav)] if group == "flite" else [*command, out_flag, str(wav), text]
            subprocess.run(argv, check=True, capture_output=True)
            items.append(Item(f"text {t}, {label}", group, str(wav), text))
    return items


def phone_leg(wav: str) -> bytes:
    """The caller's audio as the gateway decodes it: 8 kHz pcm16 after mu-law."""
    return mulaw_to_pcm16(wav_to_mulaw_8k(wav))


def upsample(pcm8k: bytes) -> bytes:
    resampler = StreamResampler(8000, 16000)  # the gateway's resampler
    return resampler.process(pcm8k) + resampler.flush()


# ------------------------------------------------------------------------ configs


@attrs.frozen
class Config:
    name: str
    run: Callable[[bytes], str]  # 8 kHz pcm16 -> hypothesis text
    default: bool = False


def streaming(settings: LocalSettings, overrides: Mapping[str, object] | None = None) -> Callable[[bytes], str]:
    """The provider's path: 16 kHz, the Recognizer fed 100 ms batches, then flushed."""
    def run(pcm8k: bytes) -> str:
        pcm = upsample(pcm8k)
        recognizer = Recognizer(settings, overrides)
        batch = 16000 * 2 * BATCH_MS // 1000
        finals = []
        started = time.process_time()
        for offset in range(0, len(pcm), batch):
            finals += [e.text for e in recognizer.feed(pcm[offset:offset + batch]) if type(e).__name__ == "FinalTranscript"]
        finals += [e.text for e in recognizer.flush()]
        _CPU[0] += time.process_time() - started
        recognizer.close()
        return " ".join(finals)
    return run


def whole_file(rate: int, **options: object) -> Callable[[bytes], str]:
    """One utterance per file with batch CMN: not possible live, a reference point."""
    def run(pcm8k: bytes) -> str:
        pcm = pcm8k if rate == 8000 else upsample(pcm8k)
        decoder = pocketsphinx.Decoder(samprate=rate, loglevel="FATAL", **options)
        started = time.process_time()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        _CPU[0] += time.process_time() - started
        hypothesis = decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""
    return run


def feat_params(workdir: Path, name: str, **changes: str) -> dict[str, object]:
    """The bundled model's feature parameters with some changed, as ``featparams``.

    The model's feat.params overrides keyword arguments for the keys it sets
    (upperf, remove_noise, cmn, ...), so a changed copy is written to a file."""
    params = Path(pocketsphinx.get_model_path("en-us/en-us/feat.params")).read_text()
    for key, value in changes.items():
        params = re.sub(rf"-{key} \S+", f"-{key} {value}", params)
    path = workdir / f"{name}.feat.params"
    if not path.exists():  # written once by main(), before the workers read it
        path.write_text(params)
    return {"featparams": str(path)}


def configs(workdir: Path) -> list[Config]:
    tel = LocalSettings()
    return [
        Config("8 kHz, filter bank cut to 3.5 kHz, whole file",
               whole_file(8000, nfft=256, **feat_params(workdir, "8k", upperf="3500"))),
        Config("16 kHz, whole file, batch CMN (not live; reference)", whole_file(16000)),
        Config("16 kHz live, model's default cmninit (40,3,-1)",
               streaming(attrs.evolve(tel, cmninit="40,3,-1"))),
        Config("16 kHz live, telephone cmninit", streaming(tel), default=True),
        Config("  + bestpath=no", streaming(tel, {"bestpath": False})),
        Config("  + wider beams (1e-60, wbeam 1e-40)", streaming(tel, {"beam": 1e-60, "pbeam": 1e-60, "wbeam": 1e-40})),
        Config("  + remove_noise=no", streaming(tel, feat_params(workdir, "noisy", remove_noise="no"))),
        Config("  + LOCAL_SEARCH=fast", streaming(attrs.evolve(tel, preset="fast"))),
    ]


# --------------------------------------------------------------------------- runs

_CPU = [0.0]  # decode CPU seconds in this worker process
_WORKDIR: Path | None = None


def _init_worker(workdir: str) -> None:
    global _WORKDIR
    _WORKDIR = Path(workdir)


def _job(args: tuple[int, Item]) -> tuple[int, str, float, float]:
    index, item = args
    assert _WORKDIR is not None
    config = configs(_WORKDIR)[index]
    pcm8k = phone_leg(item.wav)
    _CPU[0] = 0.0
    hypothesis = config.run(pcm8k)
    return index, hypothesis, _CPU[0], len(pcm8k) / 16000


def measure_cmn(items: list[Item]) -> str:
    """Mean cepstrum of the held-out telephone audio (not the sample call)."""
    means = []
    for item in items:
        if item.group == "sample":
            continue
        decoder = pocketsphinx.Decoder(samprate=16000, loglevel="FATAL")
        decoder.start_utt()
        decoder.process_raw(upsample(phone_leg(item.wav)), full_utt=True)
        decoder.end_utt()
        means.append([float(v) for v in decoder.get_cmn().split(",")])
    return ",".join(f"{v:.0f}" for v in np.mean(means, axis=0))


def gil_check() -> None:
    """Why the recognizer runs in a process: the longest the main thread waits for the
    GIL while a *thread* loads PocketSphinx and decodes the sample call."""
    import threading

    pcm = upsample(phone_leg(str(SAMPLE_WAV)))
    steps: list[tuple[str, Callable[[], object]]] = []
    holder: list[Recognizer] = []
    batch = 16000 * 2 * BATCH_MS // 1000
    steps.append(("load the model (Recognizer())", lambda: holder.append(Recognizer(LocalSettings()))))
    steps.append(("decode the call in 100 ms batches", lambda: [holder[0].feed(pcm[i:i + batch])
                                                                 for i in range(0, len(pcm), batch)]))
    for label, step in steps:
        done = threading.Event()
        worker = threading.Thread(target=lambda: (step(), done.set()))
        gaps, last = [], time.perf_counter()
        worker.start()
        while not done.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
        worker.join()
        print(f"{label}: main thread woke {len(gaps)} times, longest wait {max(gaps) * 1000:.0f} ms")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--verbose", action="store_true", help="print every hypothesis")
    parser.add_argument("--measure-cmn", action="store_true", help="print the telephone cmninit and exit")
    parser.add_argument("--gil-check", action="store_true", help="measure PocketSphinx holding the GIL and exit")
    args = parser.parse_args(argv)
    if args.gil_check:
        gil_check()
        return
    with tempfile.TemporaryDirectory(prefix="local-accuracy-") as tmp:
        workdir = Path(tmp)
        items = synthesize(workdir)
        if args.measure_cmn:
            print(measure_cmn(items))
            return
        table = configs(workdir)
        jobs = [(i, item) for i in range(len(table)) for item in items]
        results: dict[tuple[int, str], tuple[str, float, float]] = {}
        with ProcessPoolExecutor(args.jobs, initializer=_init_worker, initargs=(tmp,)) as pool:
            for (index, item), (_, hypothesis, cpu, seconds) in zip(jobs, pool.map(_job, jobs)):
                results[index, item.name] = (hypothesis, cpu, seconds)
                if args.verbose:
                    print(f"[{table[index].name.strip()}] {item.name}: {wer(item.text, hypothesis):.2f}  {hypothesis}",
                          flush=True)
    groups = {"sample call": ["sample"], "held-out espeak-ng": ["espeak"], "held-out flite": ["flite"],
              "all held-out": ["espeak", "flite"]}
    print("| pipeline / config | " + " | ".join(groups) + " | CPU s per audio s |")
    print("|---|" + "---:|" * (len(groups) + 1))
    for index, config in enumerate(table):
        cells = []
        for members in groups.values():
            chosen = [item for item in items if item.group in members]
            edits = sum(edit_distance(words(it.text), words(results[index, it.name][0])) for it in chosen)
            cells.append(f"{edits / sum(len(words(it.text)) for it in chosen):.2f}")
        cpu = sum(results[index, it.name][1] for it in items) / sum(results[index, it.name][2] for it in items)
        name = config.name.replace("  + ", "&nbsp;&nbsp;+ ") + (" **(default)**" if config.default else "")
        print(f"| {name} | " + " | ".join(cells) + f" | {cpu:.2f} |")
    words_total = {g: sum(len(words(it.text)) for it in items if it.group in m) for g, m in groups.items()}
    print(f"\nreference words: {words_total}; files: {len(items)}")


if __name__ == "__main__":
    main()
