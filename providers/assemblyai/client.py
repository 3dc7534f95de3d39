"""AssemblyAI provider: configuration from the environment, URL, auth, paced sessions.

``wss://streaming.assemblyai.com/v3/ws?speech_model=universal-streaming-english&
encoding=pcm_mulaw&sample_rate=8000&format_turns=true`` with ``Authorization: <KEY>``
(the raw key, no scheme) and the SDK's ``AssemblyAI-Version`` header.

| variable | default | query |
|---|---|---|
| ``ASSEMBLYAI_BASE_URL`` | ``wss://streaming.assemblyai.com`` | ``ws://`` accepted |
| ``ASSEMBLYAI_SPEECH_MODEL`` | ``universal-streaming-english`` | ``speech_model`` (required by AssemblyAI) |
| ``ASSEMBLYAI_ENCODING`` | ``pcm_mulaw`` (8 kHz, Twilio's audio as is) or ``pcm_s16le`` | ``encoding`` |
| ``ASSEMBLYAI_SAMPLE_RATE`` | 8000 for pcm_mulaw, 16000 for pcm_s16le | ``sample_rate`` |
| ``ASSEMBLYAI_FORMAT_TURNS`` | ``true`` (punctuated, cased finals) | ``format_turns`` |
| ``ASSEMBLYAI_END_OF_TURN_CONFIDENCE_THRESHOLD`` | vendor default (0.4) | ``end_of_turn_confidence_threshold`` |
| ``ASSEMBLYAI_MIN_TURN_SILENCE`` | vendor default (400 ms) | ``min_turn_silence`` |
| ``ASSEMBLYAI_MAX_TURN_SILENCE`` | vendor default (1280 ms) | ``max_turn_silence`` |
| ``ASSEMBLYAI_KEYTERMS`` | none; comma-separated | ``keyterms_prompt`` (a JSON list, as the SDK sends it) |
| ``ASSEMBLYAI_INACTIVITY_TIMEOUT`` | none (seconds, 5-3600) | ``inactivity_timeout`` |

AssemblyAI refuses audio sent faster than real time (close 3007).  A live Twilio call
is real time already, but a backlog (a simulated ``--fast`` call, audio replayed after
a reconnect) is not: the session paces ``send_audio`` with trio's clock so the audio
sent never runs more than ``max_lead_ms`` ahead of the time since its first byte.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from urllib.parse import urlencode, urlsplit

import attrs
import orjson
import trio

from .. import options as opt
from ..base import MULAW_8K, AudioFormat, SttSession
from ..errors import ProviderConfigError
from ..events import ProviderEvent
from ..websocket import open_websocket_session
from .protocol import PROVIDER, AssemblyAICodec

__all__ = ["AssemblyAIOptions", "AssemblyAIProvider", "PacedSession", "RealTimePacer", "create",
           "DEFAULT_BASE_URL"]

DEFAULT_BASE_URL = "wss://streaming.assemblyai.com"
PATH = "/v3/ws"
DEFAULT_MODEL = "universal-streaming-english"
API_VERSION = "2025-05-12"  # what SDK 1.8.2 sends
CHUNK_MS = 100  # AssemblyAI takes 50-1000 ms per frame; 100 ms is its recommendation
MAX_LEAD_MS = 500  # how far ahead of real time a backlog may be sent

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def _fail(detail: str) -> ProviderConfigError:
    return ProviderConfigError(PROVIDER, detail)


# ----------------------------------------------------------------------- pacing


class RealTimePacer:
    """Holds a send until the audio sent, this send included, is at most
    ``max_lead_ms`` ahead of the time elapsed since the first send (trio's clock)."""

    def __init__(self, audio_format: AudioFormat, max_lead_ms: float) -> None:
        self._bytes_per_ms = audio_format.bytes_per_ms
        self._lead_s = max_lead_ms / 1000
        self._start: float | None = None
        self._sent_s = 0.0

    async def wait(self, nbytes: int) -> None:
        now = trio.current_time()
        if self._start is None:
            self._start = now
        self._sent_s += nbytes / self._bytes_per_ms / 1000
        due = self._start + self._sent_s - self._lead_s
        if due > now:
            await trio.sleep_until(due)


class PacedSession:
    """An ``SttSession`` whose ``send_audio`` waits for ``pacer`` first."""

    def __init__(self, session: SttSession, pacer: RealTimePacer) -> None:
        self.inner = session
        self._pacer = pacer

    async def send_audio(self, audio: bytes) -> None:
        await self._pacer.wait(len(audio))
        await self.inner.send_audio(audio)

    async def finalize(self) -> None:
        await self.inner.finalize()

    async def keepalive(self) -> None:
        await self.inner.keepalive()

    async def receive(self) -> ProviderEvent:
        return await self.inner.receive()


# ----------------------------------------------------------------------- provider


@attrs.frozen
class AssemblyAIOptions:
    """What goes into the query string (``None``: leave the vendor's default)."""

    speech_model: str = DEFAULT_MODEL
    encoding: str = "pcm_mulaw"
    sample_rate: int = 8000
    format_turns: bool = True
    end_of_turn_confidence_threshold: float | None = None
    min_turn_silence: int | None = None
    max_turn_silence: int | None = None
    keyterms: tuple[str, ...] = ()
    inactivity_timeout: int | None = None

    @property
    def audio_format(self) -> AudioFormat:
        return MULAW_8K if self.encoding == "pcm_mulaw" else AudioFormat("pcm16", self.sample_rate)

    def query(self) -> list[tuple[str, str]]:
        pairs = [
            ("speech_model", self.speech_model),
            ("encoding", self.encoding),
            ("sample_rate", str(self.sample_rate)),
            ("format_turns", "true" if self.format_turns else "false"),
        ]
        if self.end_of_turn_confidence_threshold is not None:
            pairs.append(("end_of_turn_confidence_threshold", f"{self.end_of_turn_confidence_threshold:g}"))
        if self.min_turn_silence is not None:
            pairs.append(("min_turn_silence", str(self.min_turn_silence)))
        if self.max_turn_silence is not None:
            pairs.append(("max_turn_silence", str(self.max_turn_silence)))
        if self.keyterms:
            pairs.append(("keyterms_prompt", orjson.dumps(list(self.keyterms)).decode()))
        if self.inactivity_timeout is not None:
            pairs.append(("inactivity_timeout", str(self.inactivity_timeout)))
        return pairs


@attrs.define
class AssemblyAIProvider:
    """A configured AssemblyAI provider; one paced WebSocket session per call.
    ``max_lead_ms=None`` turns pacing off (for tests of the vendor's rule)."""

    api_key: str = attrs.field(repr=False)
    options: AssemblyAIOptions = attrs.field(factory=AssemblyAIOptions)
    base_url: str = DEFAULT_BASE_URL
    max_lead_ms: float | None = MAX_LEAD_MS
    name: str = PROVIDER
    chunk_ms: int = CHUNK_MS
    # No idle close unless inactivity_timeout is set (and then idling should end the
    # session), and Twilio streams continuously: no periodic KeepAlive.
    keepalive_interval: float | None = None

    @property
    def audio_format(self) -> AudioFormat:
        return self.options.audio_format

    @property
    def url(self) -> str:
        return f"{self.base_url}{PATH}?{urlencode(self.options.query())}"

    def headers(self) -> list[tuple[str, str]]:
        return [("Authorization", self.api_key), ("AssemblyAI-Version", API_VERSION)]

    def make_codec(self) -> AssemblyAICodec:
        return AssemblyAICodec(self.audio_format, format_turns=self.options.format_turns)

    @asynccontextmanager
    async def open_session(self) -> AsyncIterator[SttSession]:
        async with open_websocket_session(self.name, self.make_codec(), self.url, self.headers()) as session:
            if self.max_lead_ms is None:
                yield session
            else:
                yield PacedSession(session, RealTimePacer(self.audio_format, self.max_lead_ms))


# ----------------------------------------------------------------------- environment


def _raw(env: Mapping[str, str], key: str) -> str:
    return (env.get(key) or "").strip()


def _base_url(env: Mapping[str, str]) -> str:
    raw = _raw(env, "ASSEMBLYAI_BASE_URL") or DEFAULT_BASE_URL
    parts = urlsplit(raw)
    scheme = {"wss": "wss", "https": "wss", "ws": "ws", "http": "ws"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _fail(f"ASSEMBLYAI_BASE_URL must look like wss://host[:port], not {raw[:80]!r}")
    return f"{scheme}://{parts.netloc}"


def _api_key(env: Mapping[str, str]) -> str:
    value = _raw(env, "ASSEMBLYAI_API_KEY")
    if not value:
        raise _fail("ASSEMBLYAI_API_KEY is not set; export it or choose another provider")
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise _fail("ASSEMBLYAI_API_KEY contains spaces or control characters; set it to the key alone")
    return value



def _int(env: Mapping[str, str], key: str, default: int | None, lo: int, hi: int, unit: str) -> int | None:
    raw = _raw(env, key)
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit() and lo <= int(raw) <= hi):
        raise _fail(f"{key} must be a whole number of {unit} from {lo} to {hi}, not {raw[:40]!r}")
    return int(raw)


def _fraction(env: Mapping[str, str], key: str) -> float | None:
    raw = _raw(env, key)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise _fail(f"{key} must be a number from 0 to 1, not {raw[:40]!r}")
    return value


def _keyterms(env: Mapping[str, str]) -> tuple[str, ...]:
    terms = tuple(t.strip() for t in (env.get("ASSEMBLYAI_KEYTERMS") or "").split(",") if t.strip())
    for term in terms:
        if len(term) > 50 or not term.isprintable():
            raise _fail("ASSEMBLYAI_KEYTERMS: each comma-separated term must be printable and at most 50 characters")
    return terms


def options_from_env(env: Mapping[str, str]) -> AssemblyAIOptions:
    model = _raw(env, "ASSEMBLYAI_SPEECH_MODEL") or DEFAULT_MODEL
    if not _NAME.match(model):
        raise _fail(f"ASSEMBLYAI_SPEECH_MODEL must be a model name such as {DEFAULT_MODEL!r}, not {model[:40]!r}")
    encoding = _raw(env, "ASSEMBLYAI_ENCODING").lower() or "pcm_mulaw"
    if encoding not in ("pcm_mulaw", "pcm_s16le"):
        raise _fail(f"ASSEMBLYAI_ENCODING must be pcm_mulaw (Twilio's audio, no conversion) or pcm_s16le, "
                    f"not {encoding[:40]!r}")
    if encoding == "pcm_mulaw":
        rate = _int(env, "ASSEMBLYAI_SAMPLE_RATE", 8000, 8000, 8000, "Hz")
    else:
        rate = _int(env, "ASSEMBLYAI_SAMPLE_RATE", 16000, 8000, 48000, "Hz")
    assert rate is not None
    min_silence = _int(env, "ASSEMBLYAI_MIN_TURN_SILENCE", None, 0, 60_000, "ms")
    max_silence = _int(env, "ASSEMBLYAI_MAX_TURN_SILENCE", None, 0, 60_000, "ms")
    if min_silence is not None and max_silence is not None and min_silence > max_silence:
        raise _fail("ASSEMBLYAI_MIN_TURN_SILENCE must not exceed ASSEMBLYAI_MAX_TURN_SILENCE")
    return AssemblyAIOptions(
        speech_model=model,
        encoding=encoding,
        sample_rate=rate,
        format_turns=opt.boolean(PROVIDER, env, "ASSEMBLYAI_FORMAT_TURNS", True),
        end_of_turn_confidence_threshold=_fraction(env, "ASSEMBLYAI_END_OF_TURN_CONFIDENCE_THRESHOLD"),
        min_turn_silence=min_silence,
        max_turn_silence=max_silence,
        keyterms=_keyterms(env),
        inactivity_timeout=_int(env, "ASSEMBLYAI_INACTIVITY_TIMEOUT", None, 5, 3600, "seconds"),
    )


def create(env: Mapping[str, str]) -> AssemblyAIProvider:
    """The registry's factory: raises ``ProviderConfigError`` (one line, never the key)."""
    return AssemblyAIProvider(api_key=_api_key(env), options=options_from_env(env), base_url=_base_url(env))
