"""One suite, every STT codec: what ``SttCodec`` promises, checked against each vendor's
``CodecCase`` (tests/conformance_cases_json.py, tests/conformance_cases_binary.py)."""

from __future__ import annotations

import base64
import importlib
import importlib.util
from collections.abc import Iterable

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.errors import ProviderError, ProviderProtocolError
from providers.events import (
    Finalized,
    FinalTranscript,
    PartialTranscript,
    ProviderClosed,
    ProviderEvent,
    ProviderFailed,
)
from providers.registry import BUILTIN_PROVIDERS, get_spec
from tests.conformance import CodecCase

CASE_MODULES = ("tests.conformance_cases_json", "tests.conformance_cases_binary")


def _load_cases() -> list[CodecCase]:
    cases: list[CodecCase] = []
    for name in CASE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that vendor family is not built yet
                continue
            raise
        cases.extend(module.CASES)
    return cases


CASES = _load_cases()
by_case = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])

#: Server messages no vendor sends; each must raise ProviderProtocolError.
GENERATED_MALFORMED: list[str | bytes] = [
    "{not json",
    "",
    "[1, 2]",
    "42",
    '"partial_transcript"',
    "null",
    "{}",
    b"\x00\x01\x02 a binary frame",
]

AUDIO = bytes(range(256)) * 8  # every byte value: 256 ms of "mu-law"


def _ready(case: CodecCase):
    codec = case.make_codec()
    events: list[ProviderEvent] = []
    for message in case.handshake:
        events += codec.receive(message)
    codec.data_to_send()
    return codec, events


def _audio_of(messages: Iterable[str | bytes]) -> bytes:
    """The audio a batch of wire messages carries: binary frames as is, JSON frames'
    base64 ``audio`` / ``audio_base_64`` fields decoded."""
    out = bytearray()
    for message in messages:
        if isinstance(message, bytes):
            out += message
            continue
        obj = orjson.loads(message)
        for key in ("audio", "audio_base_64"):
            if isinstance(obj.get(key), str):
                out += base64.b64decode(obj[key], validate=True)
    return bytes(out)


def _discriminator(case: CodecCase) -> str:
    obj = orjson.loads(case.partial_message)
    return next(key for key in ("message_type", "type") if key in obj)


def _spans_ordered(events: list[ProviderEvent]) -> bool:
    spans = [(e.start_ms, e.end_ms) for e in events if isinstance(e, PartialTranscript | FinalTranscript)]
    if any(s is None or e is None or s > e for s, e in spans):
        return False
    return all(a[0] <= b[0] for a, b in zip(spans, spans[1:]))


# --- the handshake and transcripts ----------------------------------------------------


@by_case
def test_handshake_yields_no_transcript_and_no_failure(case: CodecCase) -> None:
    _, events = _ready(case)
    assert not [e for e in events if not type(e).__name__ == "SessionStarted"]


@by_case
def test_partial_then_final_give_one_event_each_with_ordered_spans(case: CodecCase) -> None:
    codec, _ = _ready(case)
    codec.send_audio(AUDIO * 4)
    partial = codec.receive(case.partial_message)
    final = codec.receive(case.final_message)
    assert [type(e) for e in partial] == [PartialTranscript]
    assert [type(e) for e in final] == [FinalTranscript]
    assert partial[0].text.strip() and final[0].text.strip()
    assert _spans_ordered(partial + final)


@by_case
def test_unknown_message_type_is_ignored(case: CodecCase) -> None:
    codec, _ = _ready(case)
    key = _discriminator(case)
    assert codec.receive(orjson.dumps({key: "earpiece.conformance.unknown", "text": "x"}).decode()) == []
    assert codec.receive(orjson.dumps({key: "earpiece.conformance.unknown"}).decode()) == []


MALFORMED = [(case, message) for case in CASES for message in [*case.malformed, *GENERATED_MALFORMED]]


@pytest.mark.parametrize(("case", "message"), MALFORMED,
                         ids=[f"{c.name}-{i}" for i, (c, _) in enumerate(MALFORMED)])
def test_malformed_server_message_raises_protocol_error(case: CodecCase, message: str | bytes) -> None:
    codec, _ = _ready(case)
    codec.send_audio(AUDIO)
    with pytest.raises(ProviderProtocolError):
        codec.receive(message)


# --- the end sequence and the close -----------------------------------------------------


@by_case
def test_finalize_sends_the_end_sequence_and_the_reply_ends_with_finalized(case: CodecCase) -> None:
    codec, _ = _ready(case)
    codec.send_audio(AUDIO)
    codec.data_to_send()
    codec.receive(case.partial_message)
    local = codec.finalize() or []
    assert codec.data_to_send() or local == [Finalized()]
    events = list(local)
    for message in case.finalize_reply:
        events += codec.receive(message)
    assert events[-1] == Finalized()
    assert events.count(Finalized()) == 1
    assert not [e for e in events if isinstance(e, ProviderFailed)]
    assert codec.connection_closed(1000, "") == [Finalized(), ProviderClosed(1000, "")]


@by_case
def test_finalize_with_no_audio_sends_the_end_sequence_or_is_finalized_at_once(case: CodecCase) -> None:
    codec, _ = _ready(case)
    local = codec.finalize() or []
    data = codec.data_to_send()
    assert data or local == [Finalized()]


@by_case
def test_abnormal_close_mid_stream_is_provider_closed_1006(case: CodecCase) -> None:
    codec, _ = _ready(case)
    codec.send_audio(AUDIO)
    codec.receive(case.partial_message)
    events = codec.connection_closed(1006, "")
    assert events[-1] == ProviderClosed(1006, "")
    assert Finalized() not in events


@by_case
def test_close_during_finalize_before_the_reply_is_not_finalized(case: CodecCase) -> None:
    codec, _ = _ready(case)
    codec.send_audio(AUDIO)
    assert codec.finalize() in (None, [])
    events = codec.connection_closed(1006, "")
    assert events[-1] == ProviderClosed(1006, "")
    assert Finalized() not in events


# --- errors ----------------------------------------------------------------------------


@by_case
def test_fatal_error_message_is_provider_failed_with_a_fatal_error(case: CodecCase) -> None:
    codec, _ = _ready(case)
    events = codec.receive(case.fatal_error_message)
    failed = [e for e in events if isinstance(e, ProviderFailed)]
    assert len(failed) == 1
    assert isinstance(failed[0].error, ProviderError) and failed[0].error.fatal


@by_case
def test_retryable_error_message_is_provider_failed_and_not_fatal(case: CodecCase) -> None:
    codec, _ = _ready(case)
    events = codec.receive(case.retryable_error_message)
    failed = [e for e in events if isinstance(e, ProviderFailed)]
    assert len(failed) == 1
    assert isinstance(failed[0].error, ProviderError) and not failed[0].error.fatal


# --- audio -----------------------------------------------------------------------------


@by_case
def test_audio_is_carried_byte_exact_in_order_even_before_the_handshake(case: CodecCase) -> None:
    codec = case.make_codec()
    early, later = AUDIO[:800], [AUDIO, b"\x7f", AUDIO[:160] * 3]
    codec.send_audio(early)
    wire = codec.data_to_send()
    for message in case.handshake:
        codec.receive(message)
        wire += codec.data_to_send()
    for chunk in later:
        codec.send_audio(chunk)
        wire += codec.data_to_send()
    assert _audio_of(wire) == early + b"".join(later)


# --- robustness: nothing but ProviderProtocolError escapes receive ----------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _known_messages(case: CodecCase) -> list[dict]:
    messages = [*case.handshake, case.partial_message, case.final_message, *case.finalize_reply,
                case.fatal_error_message, case.retryable_error_message]
    return [orjson.loads(m) for m in messages if isinstance(m, str)]


@by_case
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_messages_raise_only_protocol_errors(case: CodecCase, data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(_known_messages(case)))
    message = dict(base)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(message) + ["text", "words", "error", "session"]))
        message[key] = data.draw(_json_values)
    codec, _ = _ready(case)
    codec.send_audio(AUDIO)
    try:
        events = codec.receive(orjson.dumps(message).decode())
    except ProviderProtocolError:
        return
    assert isinstance(events, list)


# --- configured providers never show their key -------------------------------------------

CANARY = "sk-canary-0123456789abcdefCANARY"
CLOUD = [name for name in BUILTIN_PROVIDERS if name not in ("whisper", "local", "scripted")]


@pytest.mark.parametrize("name", CLOUD)
def test_configured_provider_repr_never_shows_the_key(name: str) -> None:
    if importlib.util.find_spec(BUILTIN_PROVIDERS[name]) is None:
        pytest.skip(f"{name} is not built yet")
    spec = get_spec(name)
    env = {spec.key_env: CANARY, f"{name.upper()}_BASE_URL": "ws://127.0.0.1:9"}
    provider = spec.factory(env)
    assert CANARY not in repr(provider)
    url = getattr(provider, "url", "")
    assert CANARY not in (url if isinstance(url, str) else "")
