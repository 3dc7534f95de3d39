"""Properties of the Twilio codec under arbitrary input: it returns an event or raises
``TwilioProtocolError`` — never anything else — and its fast path agrees with the
converter."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.twilio import (
    Connected,
    Dtmf,
    DuplicateDropped,
    Mark,
    Media,
    MediaFormat,
    Start,
    Stop,
    TwilioProtocolError,
    TwilioStreamDecoder,
    UnknownEvent,
    encode_connected,
    encode_dtmf,
    encode_mark_event,
    encode_media_event,
    encode_start,
    encode_stop,
)
from providers.twilio.converter import decode_message, structure_message

FUZZ = settings(max_examples=300, deadline=None)
EVENTS = (Connected, Start, Media, Dtmf, Mark, Stop, UnknownEvent, DuplicateDropped)

STREAM = "MZ22222222222222222222222222222222"
ACCOUNT = "AC00000000000000000000000000000001"
CALL = "CA11111111111111111111111111111111"

CONNECTED = encode_connected()
START = encode_start(stream_sid=STREAM, account_sid=ACCOUNT, call_sid=CALL,
                     custom_parameters={"From": "+15005550006", "session": "abc123"})
VALID = [
    CONNECTED,
    START,
    encode_media_event(stream_sid=STREAM, sequence_number=2, chunk=1, timestamp=20, payload=b"\xff" * 160),
    encode_dtmf(stream_sid=STREAM, sequence_number=3, digit="5"),
    encode_mark_event(stream_sid=STREAM, sequence_number=4, name="utt-7"),
    encode_stop(stream_sid=STREAM, sequence_number=5, account_sid=ACCOUNT, call_sid=CALL),
    '{"event":"clear","streamSid":"%s","sequenceNumber":"6"}' % STREAM,
]
VALID_OBJECTS = [orjson.loads(text) for text in VALID]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "0", "1", "-1", "1e3", "//8=", "/w==", "abc", "media", "start", STREAM])
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
event_names = st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "clear", "other"])


def fresh() -> TwilioStreamDecoder:
    return TwilioStreamDecoder()


def started() -> TwilioStreamDecoder:
    decoder = TwilioStreamDecoder()
    decoder.receive(CONNECTED)
    decoder.receive(START)
    return decoder


decoders = st.sampled_from([fresh, started])


def receive_or_protocol_error(decoder: TwilioStreamDecoder, text: str | bytes) -> object:
    """The property: an event comes back, or TwilioProtocolError is raised (any other
    exception fails the test)."""
    try:
        event = decoder.receive(text)
    except TwilioProtocolError as error:
        assert isinstance(error.detail, str)
        assert error.field is None or isinstance(error.field, str)
        return error
    assert isinstance(event, EVENTS)
    return event


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (dict keys / list indices) to a value inside ``value``."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, prefix + (index,))
    return found


def retyped(value: Any) -> list[Any]:
    """The same information in other JSON types."""
    return [str(value), [value], {"value": value}, None, 0, 1.5, True, ""]


@st.composite
def mutated_messages(draw: st.DrawFn) -> str:
    """A valid message with one key dropped, one value retyped, or one value replaced."""
    message = copy.deepcopy(draw(st.sampled_from(VALID_OBJECTS)))
    path = draw(st.sampled_from(paths(message)))
    parent = message
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    mutation = draw(st.sampled_from(["drop", "retype", "replace"]))
    if mutation == "drop":
        del parent[last]
    elif mutation == "retype":
        parent[last] = draw(st.sampled_from(retyped(parent[last])))
    else:
        parent[last] = draw(json_values)
    return json.dumps(message)


@FUZZ
@given(decoder=decoders, text=st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_text_returns_an_event_or_raises_protocol_error(decoder, text):
    receive_or_protocol_error(decoder(), text)


@FUZZ
@given(decoder=decoders, value=json_values)
def test_arbitrary_json_returns_an_event_or_raises_protocol_error(decoder, value):
    receive_or_protocol_error(decoder(), json.dumps(value))


@FUZZ
@given(decoder=decoders, name=event_names,
       fields=st.dictionaries(st.sampled_from(["sequenceNumber", "streamSid", "start", "media", "dtmf",
                                                "mark", "stop", "protocol", "version"]),
                              json_values, max_size=6))
def test_arbitrary_fields_under_a_known_event_name_return_an_event_or_raise(decoder, name, fields):
    receive_or_protocol_error(decoder(), json.dumps({"event": name, **fields}))


@FUZZ
@given(decoder=decoders, text=mutated_messages())
def test_mutated_valid_message_returns_an_event_or_raises_protocol_error(decoder, text):
    receive_or_protocol_error(decoder(), text)


@FUZZ
@given(texts=st.lists(st.sampled_from(VALID) | mutated_messages(), max_size=12))
def test_a_stream_of_mutated_messages_only_ever_raises_protocol_error(texts):
    decoder = TwilioStreamDecoder()
    accepted = 0
    for text in texts:
        if not isinstance(receive_or_protocol_error(decoder, text), TwilioProtocolError):
            accepted += 1
    assert decoder.statistics().messages == accepted


def outcome(decode: Any, *args: Any) -> object:
    try:
        return decode(*args)
    except TwilioProtocolError as error:
        return (type(error), error.field, error.detail)


@FUZZ
@given(text=mutated_messages())
def test_media_fast_path_agrees_with_the_converter_on_mutated_messages(text):
    assert outcome(decode_message, text) == outcome(structure_message, orjson.loads(text))


counters = st.integers(min_value=0, max_value=10**18 - 1)


@FUZZ
@given(sequence=counters, chunk=counters, timestamp=counters, payload=st.binary(max_size=400),
       track=st.text(max_size=12), stream_sid=st.text(max_size=40))
def test_media_round_trips_for_any_values(sequence, chunk, timestamp, payload, track, stream_sid):
    event = Media(sequence, stream_sid, track, chunk, timestamp, payload)
    text = encode_media_event(stream_sid=stream_sid, sequence_number=sequence, chunk=chunk,
                              timestamp=timestamp, payload=payload, track=track)
    assert decode_message(text) == event
    assert decode_message(text.encode()) == event


@FUZZ
@given(sequence=counters, sids=st.tuples(st.text(max_size=40), st.text(max_size=40), st.text(max_size=40)),
       tracks=st.lists(st.text(max_size=10), max_size=3).map(tuple),
       parameters=st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5),
       media_format=st.builds(MediaFormat, st.text(max_size=20), st.integers(0, 2**40), st.integers(0, 8)))
def test_start_round_trips_for_any_values(sequence, sids, tracks, parameters, media_format):
    stream_sid, account_sid, call_sid = sids
    event = Start(sequence, stream_sid, account_sid, call_sid, tracks, parameters, media_format)
    text = encode_start(stream_sid=stream_sid, account_sid=account_sid, call_sid=call_sid,
                        custom_parameters=parameters, tracks=tracks, media_format=media_format,
                        sequence_number=sequence)
    assert decode_message(text) == event
