"""Every STT codec under arbitrary server input: ``receive`` returns provider events or
raises ``ProviderProtocolError`` — never anything else — in any state (fresh, streaming,
finalizing) and across sequences of messages; ``connection_closed`` never raises.

The codecs are discovered: every class with the ``SttCodec`` methods in the modules of
each ``providers/<vendor>/`` package that has a ``protocol.py`` (Twilio's codec has its
own fuzz test, ``tests/providers/twilio/test_twilio_codec_fuzz.py``).  Vendors still being written simply
are not there yet; a module that exists but does not import fails loudly.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import providers
from providers.base import MULAW_8K, SttCodec
from providers.errors import ProviderProtocolError
from providers.events import ProviderEvent

CODEC_METHODS = ("send_audio", "finalize", "keepalive", "data_to_send", "receive", "connection_closed")
EVENT_TYPES = get_args(ProviderEvent)
PROVIDERS_DIR = Path(providers.__file__).parent
NOT_CODEC_MODULES = {"__init__", "client"}
#: Constructor options worth fuzzing too, by codec class name (skipped if not accepted).
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "ElevenLabsCodec": [{"include_timestamps": False}],
    "AssemblyAICodec": [{"format_turns": True}],
}
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _codec_classes() -> list[tuple[str, type]]:
    found: list[tuple[str, type]] = []
    for protocol in sorted(PROVIDERS_DIR.glob("*/protocol.py")):
        vendor = protocol.parent.name
        if vendor == "twilio":
            continue
        for path in sorted(protocol.parent.glob("*.py")):
            if path.stem in NOT_CODEC_MODULES:
                continue
            module = importlib.import_module(f"providers.{vendor}.{path.stem}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == module.__name__ and all(callable(getattr(cls, m, None)) for m in CODEC_METHODS):
                    found.append((vendor, cls))
    return found


def _factories() -> dict[str, tuple[type, Callable[[], SttCodec]]]:
    registry: dict[str, tuple[type, Callable[[], SttCodec]]] = {}
    for vendor, cls in _codec_classes():
        registry[f"{vendor}.{cls.__name__}"] = (cls, lambda cls=cls: cls(MULAW_8K))
        for options in VARIANTS.get(cls.__name__, []):
            label = ",".join(f"{k}={v}" for k, v in options.items())
            registry[f"{vendor}.{cls.__name__}({label})"] = (cls, lambda cls=cls, o=options: cls(MULAW_8K, **o))
    return registry


CODECS = _factories()
VENDORS_WITH_PROTOCOL = sorted(p.parent.name for p in PROVIDERS_DIR.glob("*/protocol.py") if p.parent.name != "twilio")
by_codec = pytest.mark.parametrize("name", sorted(CODECS))


def _make(name: str) -> SttCodec:
    try:
        return CODECS[name][1]()
    except TypeError as exc:
        pytest.skip(f"{name}: constructor does not take these options ({exc})")


@functools.cache
def _vocabulary(cls: type) -> list[str]:
    """The string literals of the codec's module: message types, field names, values."""
    source = inspect.getsource(inspect.getmodule(cls))  # type: ignore[arg-type]
    words = set(re.findall(r"[\"']([A-Za-z_][\w.\-]{0,39})[\"']", source))
    return sorted(words) or ["type"]


@functools.cache
def _seeds(cls: type) -> list[str | bytes]:
    """Real server messages for ``cls`` from the conformance cases, when they exist."""
    seeds: list[str | bytes] = []
    for module_name in ("tests.conformance_cases_json", "tests.conformance_cases_binary"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        for case in module.CASES:
            if type(case.make_codec()) is cls:
                seeds += [*case.handshake, case.partial_message, case.final_message, *case.finalize_reply,
                          case.fatal_error_message, case.retryable_error_message, *case.malformed]
    return seeds


json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=16)
)


def _documents(vocabulary: list[str]) -> st.SearchStrategy[Any]:
    words = st.sampled_from(vocabulary)
    leaves = json_scalars | words
    return st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(words | st.text(max_size=8), children,
                                                                           max_size=6),
        max_leaves=20,
    )


@functools.cache
def _words(cls: type) -> st.SearchStrategy[Any]:
    return _documents(_vocabulary(cls))


def _mutations(seed: Any, data: st.DataObject, documents: st.SearchStrategy[Any]) -> Any:
    """``seed`` (parsed JSON) with one value somewhere replaced, or one key dropped."""
    document = copy.deepcopy(seed)
    containers: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, (dict, list)) and node:
            containers.append(node)
            for child in node.values() if isinstance(node, dict) else node:
                walk(child)

    walk(document)
    if not containers:
        return data.draw(documents)
    target = data.draw(st.sampled_from(containers))
    key = data.draw(st.sampled_from(sorted(target) if isinstance(target, dict) else list(range(len(target)))))
    if isinstance(target, dict) and data.draw(st.booleans()):
        del target[key]
    else:
        target[key] = data.draw(documents)
    return document


def _message(data: st.DataObject, cls: type) -> str | bytes:
    vocabulary = _vocabulary(cls)
    seeds = _seeds(cls)
    words = _words(cls)
    kind = data.draw(st.sampled_from(["text", "bytes", "json", "json-bytes", "mutated", "cut"]))
    if kind == "text":
        return data.draw(st.text(max_size=200))
    if kind == "bytes":
        return data.draw(st.binary(max_size=200))
    if kind in ("mutated", "cut") and seeds:
        seed = data.draw(st.sampled_from(seeds))
        if kind == "cut":
            return seed[: data.draw(st.integers(min_value=0, max_value=len(seed)))]
        try:
            parsed = json.loads(seed)
        except (ValueError, UnicodeDecodeError):
            raw = bytearray(seed.encode() if isinstance(seed, str) else seed)
            if raw:
                raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
            return bytes(raw)
        return json.dumps(_mutations(parsed, data, words), allow_nan=True)
    document = json.dumps(data.draw(words), allow_nan=True)
    return document.encode() if kind == "json-bytes" else document


def _in_state(codec: SttCodec, state: str) -> SttCodec:
    if state in ("streaming", "finalizing"):
        codec.send_audio(bytes(range(256)) * 4)
    if state == "finalizing":
        codec.finalize()
    codec.data_to_send()
    return codec


def _check_events(events: Any) -> None:
    assert isinstance(events, list)
    assert all(isinstance(event, EVENT_TYPES) for event in events), events


def test_every_vendor_package_with_a_protocol_module_has_a_codec():
    vendors = {name.split(".")[0] for name in CODECS}
    assert vendors == set(VENDORS_WITH_PROTOCOL)


@pytest.mark.skipif(not CODECS, reason="no provider codec is built yet")
@by_codec
@pytest.mark.parametrize("state", ["fresh", "streaming", "finalizing"])
@FUZZ
@given(data=st.data())
def test_receive_raises_only_provider_protocol_errors(name: str, state: str, data: st.DataObject) -> None:
    cls = CODECS[name][0]
    codec = _in_state(_make(name), state)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        message = _message(data, cls)
        try:
            events = codec.receive(message)
        except ProviderProtocolError:
            return  # the session ends here, as the shell ends it
        _check_events(events)
        sent = codec.data_to_send()
        assert isinstance(sent, list) and all(isinstance(m, (str, bytes)) for m in sent)


@pytest.mark.skipif(not CODECS, reason="no provider codec is built yet")
@by_codec
@FUZZ
@given(code=st.integers(min_value=0, max_value=70000), reason=st.text(max_size=200),
       state=st.sampled_from(["fresh", "streaming", "finalizing"]))
def test_connection_closed_never_raises(name: str, code: int, reason: str, state: str) -> None:
    codec = _in_state(_make(name), state)
    _check_events(codec.connection_closed(code, reason))
