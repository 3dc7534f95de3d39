"""``providers.wsframes`` against wsproto's server side: the same random client frame
streams (masked, fragmented, control frames between fragments, bad opcodes, reserved
bits, bad close codes, UTF-8 cut or broken at fragment boundaries, lengths in a longer
form than needed or with the top bit set, unmasked frames), fed whole, byte by byte and
in random pieces, must give the same messages and the same close code.

wsproto is driven through its public API only: ``WSConnection(ConnectionType.SERVER)``
after a real handshake, ``receive_data`` and ``events``.  Its one departure from us is
by design and kept out of the streams: it has no size limit, so no stream here comes
near ``max_message_bytes`` or ``MAX_FRAGMENTS``."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping as WsprotoPing,
    Pong as WsprotoPong,
    Request,
    TextMessage,
)

from providers.wsframes import MAX_FRAGMENTS, CloseReceived, Ping, Pong, ServerFrameReader, WebSocketError

DIFFERENTIAL = settings(max_examples=300, deadline=None)
LIMIT = 1 << 20  # max_message_bytes far above any stream here: wsproto has no limit to compare
HANDSHAKE = (b"GET /twilio/stream HTTP/1.1\r\nHost: gw.example.test\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             b"Sec-WebSocket-Version: 13\r\n\r\n")
CLOSE_CODES = [1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
               1015, 1016, 999, 0, 2999, 3000, 3999, 4000, 4999, 5000, 65535]

Outcome = tuple[Any, ...]


# ------------------------------------------------------------------- the frame streams


def encode(b0: int, payload: bytes, key: bytes | None, length_form: str = "minimal") -> bytes:
    """A client frame; ``length_form``: "minimal", "16" / "64" (a longer form than
    needed) or "top bit" (64-bit with its top bit set)."""
    n = len(payload)
    if length_form == "16":
        length = bytes((126,)) + n.to_bytes(2, "big")
    elif length_form == "64":
        length = bytes((127,)) + n.to_bytes(8, "big")
    elif length_form == "top bit":
        length = bytes((127,)) + (1 << 63 | n).to_bytes(8, "big")
    elif n < 126:
        length = bytes((n,))
    else:
        length = bytes((126,)) + n.to_bytes(2, "big")
    if key is None:
        return bytes((b0,)) + length + payload
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((b0, 0x80 | length[0])) + length[1:] + key + masked


keys = st.binary(min_size=4, max_size=4)
small_bytes = st.binary(max_size=40)


@st.composite
def control_frame(draw: st.DrawFn, keys: st.SearchStrategy[bytes | None]) -> bytes:
    opcode = draw(st.sampled_from([0x8, 0x9, 0xA]))
    if opcode == 0x8:
        payload = draw(st.one_of(
            st.just(b""),
            st.binary(min_size=1, max_size=1),
            st.tuples(st.sampled_from(CLOSE_CODES),
                      st.one_of(st.text(max_size=20).map(str.encode), small_bytes)).map(
                lambda c: c[0].to_bytes(2, "big") + c[1]),
        ))
    else:
        payload = draw(st.one_of(small_bytes, st.binary(min_size=120, max_size=130)))  # > 125: a violation
    fin = draw(st.booleans()) if draw(st.integers(0, 9)) == 0 else True
    return encode((0x80 if fin else 0) | opcode, payload, draw(keys))


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@st.composite
def message_frames(draw: st.DrawFn, keys: st.SearchStrategy[bytes | None]) -> list[bytes]:
    """A text or binary message in 1-4 fragments (UTF-8 cut anywhere, sometimes broken),
    control frames sometimes between the fragments."""
    text = draw(st.booleans())
    if text:
        payload = draw(st.text(max_size=30)).encode()
        if payload and draw(st.integers(0, 4)) == 0:  # break it: a stray byte or a cut sequence
            i = draw(st.integers(0, len(payload) - 1))
            payload = payload[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\x80"])) + payload[i + 1:]
    else:
        payload = draw(st.one_of(small_bytes, st.binary(min_size=126, max_size=300)))
    pieces = _split(payload, draw(st.lists(st.integers(0, len(payload)), max_size=3)))
    frames = []
    for i, piece in enumerate(pieces):
        opcode = (0x1 if text else 0x2) if i == 0 else 0x0
        fin = i == len(pieces) - 1
        frames.append(encode((0x80 if fin else 0) | opcode, piece, draw(keys)))
        if not fin and draw(st.integers(0, 3)) == 0:
            frames.append(draw(control_frame(keys)))
    return frames


@st.composite
def odd_frame(draw: st.DrawFn, keys: st.SearchStrategy[bytes | None],
              wrong_keys: st.SearchStrategy[bytes | None]) -> bytes:
    """A frame a conforming peer would not send (or sends rarely, like a long length form);
    ``wrong_keys``: the masking the reader must refuse."""
    kind = draw(st.sampled_from(["any first byte", "length form", "wrong masking", "continuation"]))
    payload = draw(small_bytes)
    if kind == "any first byte":
        return encode(draw(st.integers(0, 255)), payload, draw(keys))
    if kind == "length form":
        b0 = draw(st.sampled_from([0x81, 0x82, 0x89, 0x01, 0x80]))
        return encode(b0, payload, draw(keys), draw(st.sampled_from(["16", "64", "top bit"])))
    if kind == "wrong masking":
        return encode(draw(st.sampled_from([0x81, 0x82, 0x89, 0x88])), payload, draw(wrong_keys))
    return encode(draw(st.sampled_from([0x00, 0x80])), payload, draw(keys))


def frame_streams(keys: st.SearchStrategy[bytes | None],
                  wrong_keys: st.SearchStrategy[bytes | None]) -> st.SearchStrategy[bytes]:
    """Streams of mostly well-formed messages, with control and odd frames among them."""
    return st.lists(
        st.one_of(message_frames(keys), message_frames(keys), message_frames(keys),
                  control_frame(keys).map(lambda f: [f]), odd_frame(keys, wrong_keys).map(lambda f: [f])),
        min_size=1, max_size=8,
    ).map(lambda items: b"".join(frame for item in items for frame in item))


streams = frame_streams(keys, wrong_keys=st.none())  # clients mask; an unmasked frame is the wrong kind


# ------------------------------------------------------------------- the two readers


def _ours(data: bytes, chunks: list[bytes]) -> list[Outcome]:
    reader = ServerFrameReader(LIMIT)
    out: list[Any] = []
    try:
        for chunk in chunks:
            out += reader.receive_data(chunk)
    except WebSocketError as exc:
        out += exc.messages
        out.append(exc)
    outcome: list[Outcome] = []
    for item in out:
        if isinstance(item, str):
            outcome.append(("text", item))
        elif isinstance(item, bytes):
            outcome.append(("bytes", item))
        elif isinstance(item, Ping):
            outcome.append(("ping", item.payload))
        elif isinstance(item, Pong):
            outcome.append(("pong", item.payload))
        else:  # a close frame received, or a violation: either way the end
            outcome.append(("close", item.code if isinstance(item, CloseReceived) else item.close_code))
            break
    return outcome


def _wsproto(chunks: list[bytes]) -> list[Outcome]:
    ws = WSConnection(ConnectionType.SERVER)
    ws.receive_data(HANDSHAKE)
    assert [type(event) for event in ws.events()] == [Request]
    ws.send(AcceptConnection())
    outcome: list[Outcome] = []
    text, data = "", b""
    for chunk in chunks:
        ws.receive_data(chunk)
        for event in ws.events():
            if isinstance(event, TextMessage):
                text += event.data
                if event.message_finished:
                    outcome.append(("text", text))
                    text = ""
            elif isinstance(event, BytesMessage):
                data += bytes(event.data)
                if event.message_finished:
                    outcome.append(("bytes", data))
                    data = b""
            elif isinstance(event, WsprotoPing):
                outcome.append(("ping", bytes(event.payload)))
            elif isinstance(event, WsprotoPong):
                outcome.append(("pong", bytes(event.payload)))
            elif isinstance(event, CloseConnection):
                outcome.append(("close", int(event.code)))
                return outcome
    return outcome


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    return [piece for piece in _split(data, cuts) if piece]


@DIFFERENTIAL
@given(data=streams, cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_wsframes_reads_every_stream_as_wsproto_does(data: bytes, cuts: list[int]) -> None:
    whole = _ours(data, [data])
    assert whole == _wsproto([data])
    assert _ours(data, [data[i:i + 1] for i in range(len(data))]) == whole  # byte by byte
    assert _wsproto([data[i:i + 1] for i in range(len(data))]) == whole
    assert _ours(data, _pieces(data, cuts)) == whole  # in random pieces
    assert _wsproto(_pieces(data, cuts)) == whole


def test_the_streams_stay_inside_our_limits() -> None:
    """What the differential leaves out on purpose: our 1009 limits (wsproto has none)."""
    assert MAX_FRAGMENTS > 8 * 4 * 2 and LIMIT > 8 * 4 * 400
