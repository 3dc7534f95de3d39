"""``local`` settings: environment in, a frozen ``LocalSettings`` out.

Every bad value is a ``ProviderConfigError`` whose message is the one-line fix, e.g.
``LOCAL_SILENCE_MS must be a whole number of ms from 200 to 5000, not 'fast'``.
The decoder parameters chosen by ``bench/local_accuracy.py`` live here, so the bench
and the provider always run the same recognizer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from .. import options as env_options
from ..errors import ProviderConfigError

__all__ = [
    "PROVIDER",
    "SAMPLE_RATE",
    "FRAME_MS",
    "TELEPHONE_CMNINIT",
    "DECODER_PRESETS",
    "VAD_MODES",
    "LocalSettings",
]

PROVIDER: Final = "local"

#: The rate the recognizer is fed.  PocketSphinx's bundled model is a 16 kHz model;
#: telephone audio upsampled to 16 kHz scores far better than 8 kHz fed to it with a
#: narrowed filter bank (bench/LOCAL_ACCURACY.md).
SAMPLE_RATE: Final = 16000

#: Voice-activity frame: pocketsphinx's VAD takes 10, 20 or 30 ms; 20 ms divides the
#: gateway's 100 ms batches and Twilio's 20 ms frames.
FRAME_MS: Final = 20

#: Initial cepstral mean for the live CMN, measured on telephone-band speech
#: (mu-law 8 kHz upsampled to 16 kHz: nothing above 4 kHz).  The model's default
#: ("40,3,-1") describes full-band speech; with it the first second or two of every
#: call is misrecognised while the live mean catches up.  Measured with
#: ``bench/local_accuracy.py --measure-cmn`` on its held-out sentences (five voices).
TELEPHONE_CMNINIT: Final = "48,29,-30,49,-20,3,13,-29,15,-14,5,10,-13"

#: Named search settings (pocketsphinx ``Config`` keywords), chosen by the bench.
DECODER_PRESETS: Final[Mapping[str, Mapping[str, object]]] = MappingProxyType({
    # Full three-pass search (tree, flat, lattice best path): the most accurate.
    "accurate": MappingProxyType({}),
    # Narrower beams and a cap on active HMMs: about a third of the CPU, 9 points more WER.
    "fast": MappingProxyType({"beam": 1e-40, "wbeam": 1e-24, "pbeam": 1e-40, "maxhmmpf": 5000}),
})

#: ``LOCAL_VAD_MODE`` values -> pocketsphinx ``Vad`` aggressiveness (0-3).
VAD_MODES: Final[Mapping[str, int]] = MappingProxyType(
    {"loose": 0, "medium_loose": 1, "medium_strict": 2, "strict": 3}
)


DEFAULT_SILENCE_MS: Final = 600
DEFAULT_MAX_UTTERANCE_S: Final = 20
DEFAULT_VAD_MODE: Final = "loose"
DEFAULT_PRESET: Final = "accurate"


@attrs.frozen
class LocalSettings:
    """How one ``local`` provider decodes.

    ``silence_ms``: silence that ends an utterance (a final is emitted then).
    ``start_ms``: speech, within a 200 ms window, that opens an utterance (short
    enough for a "yes").  ``max_utterance_ms``: an utterance with no pause is cut
    there, so memory and latency stay bounded on noise or music.
    ``lm``/``dictionary``: a domain language model and pronunciation dictionary
    (paths; ``None``: the bundled US-English ones).
    """

    silence_ms: int = DEFAULT_SILENCE_MS
    start_ms: int = 120
    max_utterance_ms: int = DEFAULT_MAX_UTTERANCE_S * 1000
    vad_mode: str = DEFAULT_VAD_MODE
    preset: str = DEFAULT_PRESET
    cmninit: str = TELEPHONE_CMNINIT
    lm: str | None = None
    dictionary: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LocalSettings:
        """Read ``LOCAL_*`` settings; unset or empty means the default."""
        return cls(
            silence_ms=_integer(env, "LOCAL_SILENCE_MS", 200, 5000, DEFAULT_SILENCE_MS, "a whole number of ms"),
            max_utterance_ms=1000 * _integer(env, "LOCAL_MAX_UTTERANCE_S", 5, 120, DEFAULT_MAX_UTTERANCE_S,
                                             "a whole number of seconds"),
            vad_mode=_choice(env, "LOCAL_VAD_MODE", VAD_MODES, DEFAULT_VAD_MODE),
            preset=_choice(env, "LOCAL_SEARCH", DECODER_PRESETS, DEFAULT_PRESET),
            lm=_path(env, "LOCAL_LM", "an N-gram language model (.lm or .lm.bin)"),
            dictionary=_path(env, "LOCAL_DICT", "a pronunciation dictionary (.dict)"),
        )

    def decoder_options(self) -> dict[str, object]:
        """Keyword arguments for ``pocketsphinx.Config`` / ``Decoder``."""
        options: dict[str, object] = {
            "samprate": SAMPLE_RATE,
            "cmninit": self.cmninit,
            "loglevel": "FATAL",  # pocketsphinx logs to stderr by default
            **DECODER_PRESETS[self.preset],
        }
        if self.lm is not None:
            options["lm"] = self.lm
        if self.dictionary is not None:
            options["dict"] = self.dictionary
        return options


_raw = env_options.text


def _integer(env: Mapping[str, str], key: str, low: int, high: int, default: int, what: str) -> int:
    value = env_options.integer(PROVIDER, env, key, low, high, default, what=what)
    assert value is not None  # a default was given
    return value


def _choice(env: Mapping[str, str], key: str, choices: Mapping[str, object], default: str) -> str:
    raw = _raw(env, key)
    if raw is None:
        return default
    if raw.lower() not in choices:
        raise ProviderConfigError(PROVIDER, f"{key} must be one of {', '.join(choices)}, not {raw[:40]!r}")
    return raw.lower()


def _path(env: Mapping[str, str], key: str, what: str) -> str | None:
    raw = _raw(env, key)
    if raw is None:
        return None
    if not os.path.isfile(raw):
        raise ProviderConfigError(PROVIDER, f"{key} must name {what} that exists, not {raw[:80]!r}")
    return raw
