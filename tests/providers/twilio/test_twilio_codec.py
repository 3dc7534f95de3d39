"""Specification of the Twilio Media Streams codec (providers/twilio), as tables.

Wire examples are those of the protocol reference (§1, §2), with the SIDs written out.
"""

from __future__ import annotations

import base64

import attrs
import orjson
import pytest

from providers.twilio import (
    MULAW_8K_MONO,
    Connected,
    DecoderStatistics,
    Dtmf,
    DuplicateDropped,
    Mark,
    Media,
    MediaFormat,
    Start,
    Stop,
    TwilioLimitError,
    TwilioLimits,
    TwilioOrderError,
    TwilioProtocolError,
    TwilioStreamDecoder,
    UnknownEvent,
    UnsupportedMediaFormatError,
    encode_clear,
    encode_connected,
    encode_dtmf,
    encode_mark,
    encode_mark_event,
    encode_media,
    encode_media_event,
    encode_start,
    encode_stop,
)
from providers.twilio.converter import decode_message, structure_message

ACCOUNT = "AC00000000000000000000000000000001"
CALL = "CA11111111111111111111111111111111"
STREAM = "MZ22222222222222222222222222222222"
OTHER_STREAM = "MZ33333333333333333333333333333333"
SILENCE_B64 = "/" * 213 + "w=="
SILENCE = b"\xff" * 160

# ---------------------------------------------------------------- reference examples

CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
START = """{"event": "start", "sequenceNumber": "1",
 "start": {"accountSid": "AC00000000000000000000000000000001",
           "streamSid": "MZ22222222222222222222222222222222",
           "callSid": "CA11111111111111111111111111111111",
           "tracks": ["inbound"],
           "customParameters": {"From": "+15005550006", "session": "abc123"},
           "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
 "streamSid": "MZ22222222222222222222222222222222"}"""
MEDIA = """{"event": "media", "sequenceNumber": "2",
 "media": {"track": "inbound", "chunk": "1", "timestamp": "20",
           "payload": "%s"},
 "streamSid": "MZ22222222222222222222222222222222"}""" % SILENCE_B64
DTMF = """{"event": "dtmf", "streamSid": "MZ22222222222222222222222222222222", "sequenceNumber": "3",
 "dtmf": {"track": "inbound_track", "digit": "5"}}"""
MARK = """{"event": "mark", "sequenceNumber": "4", "streamSid": "MZ22222222222222222222222222222222",
 "mark": {"name": "utt-7"}}"""
STOP = """{"event": "stop", "sequenceNumber": "5",
 "stop": {"accountSid": "AC00000000000000000000000000000001", "callSid": "CA11111111111111111111111111111111"},
 "streamSid": "MZ22222222222222222222222222222222"}"""

START_EVENT = Start(
    sequence_number=1,
    stream_sid=STREAM,
    account_sid=ACCOUNT,
    call_sid=CALL,
    tracks=("inbound",),
    custom_parameters={"From": "+15005550006", "session": "abc123"},
    media_format=MediaFormat("audio/x-mulaw", 8000, 1),
)

REFERENCE_STREAM = [
    (CONNECTED, Connected(protocol="Call", version="1.0.0")),
    (START, START_EVENT),
    (MEDIA, Media(sequence_number=2, stream_sid=STREAM, track="inbound", chunk=1, timestamp=20, payload=SILENCE)),
    (DTMF, Dtmf(sequence_number=3, stream_sid=STREAM, track="inbound_track", digit="5")),
    (MARK, Mark(sequence_number=4, stream_sid=STREAM, name="utt-7")),
    (STOP, Stop(sequence_number=5, stream_sid=STREAM, account_sid=ACCOUNT, call_sid=CALL)),
]


def media(seq: int, *, chunk: int | None = None, timestamp: int | None = None,
          payload: bytes = SILENCE, stream_sid: str = STREAM) -> str:
    chunk = seq - 1 if chunk is None else chunk
    timestamp = 20 * chunk if timestamp is None else timestamp
    return encode_media_event(stream_sid=stream_sid, sequence_number=seq, chunk=chunk,
                              timestamp=timestamp, payload=payload)


def started(limits: TwilioLimits | None = None) -> TwilioStreamDecoder:
    """A decoder that has accepted the reference ``connected`` and ``start``."""
    decoder = TwilioStreamDecoder(limits)
    decoder.receive(CONNECTED)
    decoder.receive(START)
    return decoder


def stopped() -> TwilioStreamDecoder:
    decoder = started()
    decoder.receive(encode_stop(stream_sid=STREAM, sequence_number=2, account_sid=ACCOUNT, call_sid=CALL))
    return decoder


def with_start(**changes: object) -> str:
    """The reference ``start`` with fields of ``start`` replaced (a value of ... deletes)."""
    message = orjson.loads(START)
    for key, value in changes.items():
        if value is ...:
            del message["start"][key]
        else:
            message["start"][key] = value
    return orjson.dumps(message).decode()


def with_media(**changes: object) -> str:
    """The reference ``media`` with fields of ``media`` replaced (a value of ... deletes)."""
    message = orjson.loads(MEDIA)
    for key, value in changes.items():
        if value is ...:
            del message["media"][key]
        else:
            message["media"][key] = value
    return orjson.dumps(message).decode()


# ---------------------------------------------------------------- decoding, whole


@pytest.mark.parametrize(("text", "event"), REFERENCE_STREAM,
                         ids=["connected", "start", "media", "dtmf", "mark", "stop"])
def test_decode_message_turns_each_reference_example_into_its_event(text, event):
    assert decode_message(text) == event
    assert decode_message(text.encode()) == event


def test_decoder_turns_the_reference_stream_into_events_in_order():
    decoder = TwilioStreamDecoder()
    assert not decoder.started and not decoder.stopped and decoder.start is None
    assert [decoder.receive(text) for text, _ in REFERENCE_STREAM] == [e for _, e in REFERENCE_STREAM]
    assert decoder.started and decoder.stopped and decoder.start == START_EVENT
    assert decoder.statistics() == DecoderStatistics(
        messages=6, media_frames=1, media_bytes=160, dtmf=1, marks=1)


def test_silence_frame_decodes_to_160_mulaw_ff_bytes():
    event = decode_message(MEDIA)
    assert isinstance(event, Media) and event.payload == b"\xff" * 160


def test_decoder_accepts_bytes_as_well_as_str():
    decoder = TwilioStreamDecoder()
    assert [decoder.receive(text.encode()) for text, _ in REFERENCE_STREAM] == [e for _, e in REFERENCE_STREAM]


def test_decoder_accepts_a_stream_that_opens_with_start():
    decoder = TwilioStreamDecoder()
    assert decoder.receive(START) == START_EVENT
    assert decoder.receive(MEDIA) == REFERENCE_STREAM[2][1]


def test_unknown_fields_are_ignored():
    message = orjson.loads(MEDIA)
    message["extra"] = {"anything": [1, 2]}
    message["media"]["new"] = 1
    assert decode_message(orjson.dumps(message)) == REFERENCE_STREAM[2][1]


@pytest.mark.parametrize(("text", "expected"), [
    (with_start(customParameters={}), {}),
    (with_start(tracks=["inbound", "outbound"]), ("inbound", "outbound")),
    (with_start(tracks=[]), ()),
])
def test_start_fields_decode_as_given(text, expected):
    event = decode_message(text)
    assert expected in (event.custom_parameters, event.tracks)


def test_media_counters_are_not_checked_for_order():
    """chunk/timestamp are parsed only: a first timestamp > 0, jumps and repeats pass."""
    decoder = started()
    got = [decoder.receive(media(2, chunk=1, timestamp=102)),
           decoder.receive(media(3, chunk=7, timestamp=102)),
           decoder.receive(media(4, chunk=2, timestamp=40))]
    assert [(e.chunk, e.timestamp) for e in got] == [(1, 102), (7, 102), (2, 40)]
    assert decoder.statistics().sequence_gaps == 0


def test_media_tracks_and_payload_lengths_vary():
    decoder = started()
    event = decoder.receive(encode_media_event(stream_sid=STREAM, sequence_number=2, chunk=1,
                                               timestamp=0, payload=b"", track="outbound"))
    assert event == Media(2, STREAM, "outbound", 1, 0, b"")


# ---------------------------------------------------------------- order rules

ORDER_ERRORS = [
    # (decoder before, offending message)
    ("fresh", MEDIA),
    ("fresh", DTMF),
    ("fresh", MARK),
    ("fresh", STOP),
    ("connected", MEDIA),
    ("connected", STOP),
    ("connected", CONNECTED),
    ("started", START),
    ("started", CONNECTED),
    ("stopped", MEDIA),
    ("stopped", START),
    ("stopped", CONNECTED),
    ("stopped", STOP),
    ("stopped", '{"event": "later", "sequenceNumber": "9"}'),
    ("stopped", '{"event": "later"}'),
]


def decoder_in(state: str) -> TwilioStreamDecoder:
    if state == "fresh":
        return TwilioStreamDecoder()
    if state == "connected":
        decoder = TwilioStreamDecoder()
        decoder.receive(CONNECTED)
        return decoder
    return {"started": started, "stopped": stopped}[state]()


@pytest.mark.parametrize(("state", "text"), ORDER_ERRORS)
def test_messages_out_of_order_raise_order_error(state, text):
    decoder = decoder_in(state)
    before = decoder.statistics()
    with pytest.raises(TwilioOrderError) as info:
        decoder.receive(text)
    assert info.value.field == "event"
    assert decoder.statistics() == before


# ---------------------------------------------------------------- sequence numbers


def test_sequence_gap_is_counted_and_the_message_returned():
    decoder = started()
    assert decoder.receive(media(2)).sequence_number == 2
    assert decoder.receive(media(5)).sequence_number == 5  # 3 and 4 missing
    assert decoder.receive(media(6)).sequence_number == 6
    assert decoder.receive(media(9)).sequence_number == 9  # 7 and 8 missing
    stats = decoder.statistics()
    assert (stats.sequence_gaps, stats.missing_messages, stats.media_frames) == (2, 4, 4)


@pytest.mark.parametrize(("sequence", "name", "text"), [
    (3, "media", media(3)),
    (2, "media", media(2)),
    (1, "media", media(1)),
    (3, "dtmf", encode_dtmf(stream_sid=STREAM, sequence_number=3, digit="1")),
    (3, "mark", encode_mark_event(stream_sid=STREAM, sequence_number=3, name="m")),
    (3, "stop", encode_stop(stream_sid=STREAM, sequence_number=3, account_sid=ACCOUNT, call_sid=CALL)),
    (2, "brand_new", '{"event": "brand_new", "sequenceNumber": "2"}'),
])
def test_repeated_or_backward_sequence_is_dropped_and_counted(sequence, name, text):
    decoder = started()
    decoder.receive(media(2))
    decoder.receive(media(3))
    before = decoder.statistics()
    assert decoder.receive(text) == DuplicateDropped(sequence_number=sequence, event=name)
    assert decoder.statistics() == attrs.evolve(before, messages=before.messages + 1, duplicates=1)
    assert not decoder.stopped
    assert decoder.receive(media(4)).sequence_number == 4  # the stream goes on


def test_start_sequence_number_anchors_the_sequence():
    decoder = TwilioStreamDecoder()
    decoder.receive(with_start().replace('"sequenceNumber":"1"', '"sequenceNumber":"10"'))
    assert decoder.receive(media(11)).sequence_number == 11
    assert decoder.statistics().sequence_gaps == 0


# ---------------------------------------------------------------- unknown events


def test_unknown_event_is_returned_and_counted_and_takes_part_in_sequencing():
    decoder = started()
    assert decoder.receive('{"event": "whisper", "sequenceNumber": "2", "streamSid": "x"}') == \
        UnknownEvent(event="whisper", sequence_number=2)
    assert decoder.receive('{"event": "whisper"}') == UnknownEvent(event="whisper", sequence_number=None)
    assert decoder.receive('{"event": "whisper", "sequenceNumber": "5"}') == UnknownEvent("whisper", 5)
    assert decoder.receive(media(6)).sequence_number == 6
    stats = decoder.statistics()
    assert (stats.unknown_events, stats.sequence_gaps, stats.missing_messages) == (3, 1, 2)


def test_unknown_event_before_start_is_tolerated():
    decoder = TwilioStreamDecoder()
    assert decoder.receive('{"event": "hello", "sequenceNumber": "7"}') == UnknownEvent("hello", 7)
    assert decoder.receive(CONNECTED) == Connected("Call", "1.0.0")
    assert decoder.receive(START) == START_EVENT
    assert decoder.statistics().unknown_events == 1


# ---------------------------------------------------------------- malformed input

MALFORMED = [
    # (decoder state, text, error type, field)
    ("fresh", "", TwilioProtocolError, None),
    ("fresh", "{", TwilioProtocolError, None),
    ("fresh", "not json", TwilioProtocolError, None),
    ("fresh", b"\xff\xfe", TwilioProtocolError, None),
    ("fresh", "[]", TwilioProtocolError, None),
    ("fresh", '[{"event": "connected"}]', TwilioProtocolError, None),
    ("fresh", "42", TwilioProtocolError, None),
    ("fresh", '"media"', TwilioProtocolError, None),
    ("fresh", "null", TwilioProtocolError, None),
    ("fresh", "{}", TwilioProtocolError, "event"),
    ("fresh", '{"event": 1}', TwilioProtocolError, "event"),
    ("fresh", '{"event": null}', TwilioProtocolError, "event"),
    ("fresh", '{"event": "connected", "protocol": "Call"}', TwilioProtocolError, "version"),
    ("fresh", '{"event": "connected", "protocol": 1, "version": "1.0.0"}', TwilioProtocolError, "protocol"),
    ("fresh", '{"event": "unknown", "sequenceNumber": "x"}', TwilioProtocolError, "sequenceNumber"),
    # start
    ("fresh", with_start(mediaFormat=...), TwilioProtocolError, "start.mediaFormat"),
    ("fresh", with_start(mediaFormat=[]), TwilioProtocolError, "start.mediaFormat"),
    ("fresh", with_start(mediaFormat={"encoding": "audio/x-mulaw", "channels": 1}),
     TwilioProtocolError, "start.mediaFormat.sampleRate"),
    ("fresh", with_start(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": 1}),
     TwilioProtocolError, "start.mediaFormat.sampleRate"),
    ("fresh", with_start(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": True}),
     TwilioProtocolError, "start.mediaFormat.channels"),
    ("fresh", with_start(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 8000.0, "channels": 1}),
     TwilioProtocolError, "start.mediaFormat.sampleRate"),
    ("fresh", with_start(customParameters=["From", "+1"]), TwilioProtocolError, "start.customParameters"),
    ("fresh", with_start(customParameters="From=+1"), TwilioProtocolError, "start.customParameters"),
    ("fresh", with_start(customParameters={"session": 123}), TwilioProtocolError, "start.customParameters.session"),
    ("fresh", with_start(customParameters={"session": None}), TwilioProtocolError, "start.customParameters.session"),
    ("fresh", with_start(tracks="inbound"), TwilioProtocolError, "start.tracks"),
    ("fresh", with_start(tracks=["inbound", 1]), TwilioProtocolError, "start.tracks[1]"),
    ("fresh", with_start(callSid=...), TwilioProtocolError, "start.callSid"),
    ("fresh", with_start(accountSid=7), TwilioProtocolError, "start.accountSid"),
    ("fresh", with_start(streamSid=OTHER_STREAM), TwilioProtocolError, "start.streamSid"),
    ("fresh", START.replace('"sequenceNumber": "1"', '"sequenceNumber": 1'), TwilioProtocolError, "sequenceNumber"),
    ("fresh", '{"event": "start", "sequenceNumber": "1", "start": null, "streamSid": "MZ"}',
     TwilioProtocolError, "start"),
    # unsupported media format
    ("fresh", with_start(mediaFormat={"encoding": "audio/l16", "sampleRate": 8000, "channels": 1}),
     UnsupportedMediaFormatError, "start.mediaFormat.encoding"),
    ("fresh", with_start(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1}),
     UnsupportedMediaFormatError, "start.mediaFormat.sampleRate"),
    ("fresh", with_start(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2}),
     UnsupportedMediaFormatError, "start.mediaFormat.channels"),
    # media
    ("started", with_media(payload=...), TwilioProtocolError, "media.payload"),
    ("started", with_media(payload=None), TwilioProtocolError, "media.payload"),
    ("started", with_media(payload=123), TwilioProtocolError, "media.payload"),
    ("started", with_media(payload=["//8="]), TwilioProtocolError, "media.payload"),
    ("started", with_media(payload="not base64!"), TwilioProtocolError, "media.payload"),
    ("started", with_media(payload="abc"), TwilioProtocolError, "media.payload"),
    ("started", with_media(payload="ab=c"), TwilioProtocolError, "media.payload"),
    ("started", with_media(payload="//8=\n"), TwilioProtocolError, "media.payload"),
    ("started", with_media(payload="//8=//8="), TwilioProtocolError, "media.payload"),
    ("started", with_media(payload="\u00ff\u00ff\u00ff\u00ff"), TwilioProtocolError, "media.payload"),
    ("started", with_media(chunk=1), TwilioProtocolError, "media.chunk"),
    ("started", with_media(chunk="-1"), TwilioProtocolError, "media.chunk"),
    ("started", with_media(timestamp="20.5"), TwilioProtocolError, "media.timestamp"),
    ("started", with_media(timestamp=" 20"), TwilioProtocolError, "media.timestamp"),
    ("started", with_media(timestamp="\u0662\u0660"), TwilioProtocolError, "media.timestamp"),
    ("started", with_media(timestamp="9" * 19), TwilioProtocolError, "media.timestamp"),
    ("started", with_media(track=None), TwilioProtocolError, "media.track"),
    ("started", MEDIA.replace('"sequenceNumber": "2"', '"sequenceNumber": "two"'), TwilioProtocolError,
     "sequenceNumber"),
    ("started", MEDIA.replace('"sequenceNumber": "2"', '"sequenceNumber": ""'), TwilioProtocolError,
     "sequenceNumber"),
    ("started", MEDIA.replace('"sequenceNumber": "2"', '"sequenceNumber": "+2"'), TwilioProtocolError,
     "sequenceNumber"),
    ("started", MEDIA.replace('"sequenceNumber": "2",', ""), TwilioProtocolError, "sequenceNumber"),
    ("started", '{"event": "media", "sequenceNumber": "2", "media": "//8=", "streamSid": "%s"}' % STREAM,
     TwilioProtocolError, "media"),
    ("started", '{"event": "media", "sequenceNumber": "2", "streamSid": "%s"}' % STREAM,
     TwilioProtocolError, "media"),
    ("started", MEDIA.replace(STREAM, OTHER_STREAM), TwilioProtocolError, "streamSid"),
    ("started", MEDIA.replace(f'"streamSid": "{STREAM}"', '"streamSid": 5'), TwilioProtocolError, "streamSid"),
    # dtmf, mark, stop
    ("started", DTMF.replace(STREAM, OTHER_STREAM), TwilioProtocolError, "streamSid"),
    ("started", DTMF.replace('"digit": "5"', '"digit": 5'), TwilioProtocolError, "dtmf.digit"),
    ("started", MARK.replace('"name": "utt-7"', '"label": "utt-7"'), TwilioProtocolError, "mark.name"),
    ("started", MARK.replace('{"name": "utt-7"}', '"utt-7"'), TwilioProtocolError, "mark"),
    ("started", STOP.replace(STREAM, OTHER_STREAM), TwilioProtocolError, "streamSid"),
    ("started", STOP.replace('"callSid"', '"callsid"'), TwilioProtocolError, "stop.callSid"),
]


@pytest.mark.parametrize(("state", "text", "error", "field"), MALFORMED)
def test_malformed_message_raises_protocol_error_naming_the_field(state, text, error, field):
    decoder = decoder_in(state)
    before = decoder.statistics()
    with pytest.raises(TwilioProtocolError) as info:
        decoder.receive(text)
    assert type(info.value) is error
    assert info.value.field == field
    assert str(info.value) == (f"{field}: {info.value.detail}" if field else info.value.detail)
    assert decoder.statistics() == before
    assert decoder.started == (state == "started")


@pytest.mark.parametrize(("text", "message"), [
    (with_media(payload="abc"), "media.payload: invalid base64"),
    (with_media(payload=...), "media.payload: missing required field"),
    ("[]", "expected a JSON object, got array"),
    (with_start(customParameters={"session": 1}),
     "start.customParameters.session: expected a string, got number 1"),
])
def test_error_messages_say_field_and_problem_in_plain_words(text, message):
    with pytest.raises(TwilioProtocolError) as info:
        decode_message(text)
    assert str(info.value) == message


def test_unsupported_media_format_error_names_what_arrived_and_what_is_supported():
    text = with_start(mediaFormat={"encoding": "audio/l16", "sampleRate": 16000, "channels": 2})
    with pytest.raises(UnsupportedMediaFormatError) as info:
        TwilioStreamDecoder().receive(text)
    assert str(info.value) == (
        "start.mediaFormat.encoding: unsupported media format audio/l16, 16000 Hz, 2 channels; "
        "supported: audio/x-mulaw, 8000 Hz, 1 channel"
    )


def test_decoder_goes_on_after_a_rejected_message():
    decoder = started()
    with pytest.raises(TwilioProtocolError):
        decoder.receive(with_media(payload="abc"))
    assert decoder.receive(MEDIA) == REFERENCE_STREAM[2][1]
    assert decoder.statistics().sequence_gaps == 0


# ---------------------------------------------------------------- limits

LIMITS = TwilioLimits(max_payload_bytes=160, max_custom_parameters=2,
                      max_custom_parameter_chars=20, max_message_chars=1000)


@pytest.mark.parametrize(("state", "text", "limit", "value", "field"), [
    ("started", media(2, payload=b"\x00" * 161), "max_payload_bytes", 161, "media.payload"),
    ("fresh", with_start(customParameters={"a": "1", "b": "2", "c": "3"}), "max_custom_parameters", 3,
     "start.customParameters"),
    ("fresh", with_start(customParameters={"a": "1", "name": "x" * 17}), "max_custom_parameter_chars", 21,
     "start.customParameters.name"),
    ("started", media(2, payload=b"\x00" * 800), "max_message_chars", len(media(2, payload=b"\x00" * 800)),
     None),
    ("fresh", " " * 1001, "max_message_chars", 1001, None),
    ("fresh", b" " * 1001, "max_message_chars", 1001, None),
])
def test_exceeding_a_limit_raises_limit_error_naming_limit_and_value(state, text, limit, value, field):
    decoder = TwilioStreamDecoder(LIMITS)
    if state == "started":
        decoder.receive(START)
    with pytest.raises(TwilioLimitError) as info:
        decoder.receive(text)
    error = info.value
    assert (error.limit, error.value, error.field) == (limit, value, field)
    assert limit in str(error) and str(value) in str(error)


@pytest.mark.parametrize("text", [
    media(2, payload=b"\x00" * 160),
    with_start(customParameters={"a": "1", "name": "x" * 16}),
])
def test_values_at_a_limit_are_accepted(text):
    decoder = TwilioStreamDecoder(LIMITS)
    if '"media"' in text:
        decoder.receive(START)
    decoder.receive(text)


def test_default_limits():
    assert TwilioLimits() == TwilioLimits(max_payload_bytes=8000, max_custom_parameters=64,
                                          max_custom_parameter_chars=1000, max_message_chars=65536)
    decoder = started()
    assert decoder.receive(media(2, payload=b"\x01" * 8000)).payload == b"\x01" * 8000
    with pytest.raises(TwilioLimitError):
        decoder.receive(media(3, payload=b"\x01" * 8001))


# ---------------------------------------------------------------- encoders

ENCODED = [
    (encode_media(STREAM, SILENCE),
     '{"event":"media","streamSid":"%s","media":{"payload":"%s"}}' % (STREAM, SILENCE_B64)),
    (encode_mark(STREAM, "utt-7"), '{"event":"mark","streamSid":"%s","mark":{"name":"utt-7"}}' % STREAM),
    (encode_clear(STREAM), '{"event":"clear","streamSid":"%s"}' % STREAM),
    (encode_connected(), '{"event":"connected","protocol":"Call","version":"1.0.0"}'),
    (encode_start(stream_sid=STREAM, account_sid=ACCOUNT, call_sid=CALL,
                  custom_parameters={"From": "+15005550006", "session": "abc123"}),
     '{"event":"start","sequenceNumber":"1","start":{"accountSid":"%s","streamSid":"%s","callSid":"%s",'
     '"tracks":["inbound"],"customParameters":{"From":"+15005550006","session":"abc123"},'
     '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"%s"}'
     % (ACCOUNT, STREAM, CALL, STREAM)),
    (encode_media_event(stream_sid=STREAM, sequence_number=2, chunk=1, timestamp=20, payload=SILENCE),
     '{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"20",'
     '"payload":"%s"},"streamSid":"%s"}' % (SILENCE_B64, STREAM)),
    (encode_dtmf(stream_sid=STREAM, sequence_number=57, digit="5"),
     '{"event":"dtmf","streamSid":"%s","sequenceNumber":"57","dtmf":{"track":"inbound_track","digit":"5"}}'
     % STREAM),
    (encode_mark_event(stream_sid=STREAM, sequence_number=212, name="utt-7"),
     '{"event":"mark","sequenceNumber":"212","streamSid":"%s","mark":{"name":"utt-7"}}' % STREAM),
    (encode_stop(stream_sid=STREAM, sequence_number=352, account_sid=ACCOUNT, call_sid=CALL),
     '{"event":"stop","sequenceNumber":"352","stop":{"accountSid":"%s","callSid":"%s"},"streamSid":"%s"}'
     % (ACCOUNT, CALL, STREAM)),
]


@pytest.mark.parametrize(("encoded", "expected"), ENCODED)
def test_encoders_produce_the_documented_json_exactly(encoded, expected):
    assert type(encoded) is str
    assert encoded == expected


@pytest.mark.parametrize(("encoded", "reference"), [
    (encode_connected(), CONNECTED),
    (encode_start(stream_sid=STREAM, account_sid=ACCOUNT, call_sid=CALL,
                  custom_parameters={"From": "+15005550006", "session": "abc123"}), START),
    (encode_media_event(stream_sid=STREAM, sequence_number=2, chunk=1, timestamp=20, payload=SILENCE), MEDIA),
    (encode_dtmf(stream_sid=STREAM, sequence_number=3, digit="5"), DTMF),
    (encode_mark_event(stream_sid=STREAM, sequence_number=4, name="utt-7"), MARK),
    (encode_stop(stream_sid=STREAM, sequence_number=5, account_sid=ACCOUNT, call_sid=CALL), STOP),
])
def test_twilio_side_encoders_match_the_reference_examples_key_for_key(encoded, reference):
    assert list(orjson.loads(encoded).items()) == list(orjson.loads(reference).items())


ROUND_TRIP = [
    Connected("Call", "0.2.0"),
    START_EVENT,
    Start(1, STREAM, ACCOUNT, CALL, ("inbound", "outbound"), {}, MediaFormat("audio/l16", 16000, 2)),
    Media(2, STREAM, "inbound", 1, 102, SILENCE),
    Media(3, STREAM, "outbound", 2, 0, bytes(range(256))),
    Media(4, STREAM, "inbound", 3, 60, b""),
    Dtmf(5, STREAM, "inbound_track", "#"),
    Mark(6, STREAM, "utt-7 \u00e9\u2603"),
    Stop(7, STREAM, ACCOUNT, CALL),
]


def encode(event: object) -> str:
    match event:
        case Connected():
            return encode_connected(protocol=event.protocol, version=event.version)
        case Start():
            return encode_start(stream_sid=event.stream_sid, account_sid=event.account_sid,
                                call_sid=event.call_sid, custom_parameters=event.custom_parameters,
                                tracks=event.tracks, media_format=event.media_format,
                                sequence_number=event.sequence_number)
        case Media():
            return encode_media_event(stream_sid=event.stream_sid, sequence_number=event.sequence_number,
                                      chunk=event.chunk, timestamp=event.timestamp, payload=event.payload,
                                      track=event.track)
        case Dtmf():
            return encode_dtmf(stream_sid=event.stream_sid, sequence_number=event.sequence_number,
                               digit=event.digit)
        case Mark():
            return encode_mark_event(stream_sid=event.stream_sid, sequence_number=event.sequence_number,
                                     name=event.name)
        case Stop():
            return encode_stop(stream_sid=event.stream_sid, sequence_number=event.sequence_number,
                               account_sid=event.account_sid, call_sid=event.call_sid)
    raise AssertionError(event)


@pytest.mark.parametrize("event", ROUND_TRIP)
def test_decoding_an_encoded_event_gives_it_back(event):
    assert decode_message(encode(event)) == event


def test_decoder_round_trips_a_whole_encoded_stream():
    events = [e for e in ROUND_TRIP if not (isinstance(e, Start) and e.media_format != MULAW_8K_MONO)]
    decoder = TwilioStreamDecoder()
    assert [decoder.receive(encode(e)) for e in events] == events


def test_app_side_encoders_decode_as_twilio_would_read_them():
    assert base64.b64decode(orjson.loads(encode_media(STREAM, b"\x00\x7f"))["media"]["payload"]) == b"\x00\x7f"


# ---------------------------------------------------------------- fast path == converter

AGREEMENT = [
    MEDIA,
    media(2, payload=b""),
    media(99999, chunk=123456789012345678, timestamp=0),
    with_media(chunk="0007"),
    with_media(payload=...),
    with_media(payload=None),
    with_media(payload=1),
    with_media(payload="abc"),
    with_media(payload="//8=\n"),
    with_media(payload="\u00e9\u00e9\u00e9\u00e9"),
    with_media(track=1),
    with_media(track=...),
    with_media(chunk=...),
    with_media(chunk="1.0"),
    with_media(chunk="\u00b2"),
    with_media(timestamp=20),
    with_media(timestamp="9" * 18),
    with_media(timestamp="9" * 19),
    MEDIA.replace('"sequenceNumber": "2",', ""),
    MEDIA.replace('"sequenceNumber": "2"', '"sequenceNumber": null'),
    MEDIA.replace(f'"streamSid": "{STREAM}"', '"streamSid": ["x"]'),
    MEDIA.replace(f', "streamSid": "{STREAM}"', ""),
    '{"event": "media"}',
    '{"event": "media", "sequenceNumber": "2", "streamSid": "MZ", "media": []}',
    '{"event": "media", "sequenceNumber": "2", "streamSid": "MZ", "media": "x"}',
    '{"event": "media", "sequenceNumber": "2", "streamSid": "MZ", "media": null}',
    '{"event": "media", "sequenceNumber": "2", "streamSid": "MZ", "media": {}}',
    '{"event": "media", "event": "start"}',
    '{"event": "start", "event": "media"}',
]


def outcome(decode, *args):
    try:
        return decode(*args)
    except TwilioProtocolError as error:
        return (type(error), error.field, error.detail)


@pytest.mark.parametrize("text", AGREEMENT)
def test_media_fast_path_agrees_with_the_converter(text):
    assert outcome(decode_message, text) == outcome(structure_message, orjson.loads(text))
