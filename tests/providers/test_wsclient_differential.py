"""The provider socket's own client framing against wsproto, both directions.

* Reading: random server frame streams (unmasked as servers send them, fragmented,
  control frames between fragments, bad opcodes, reserved bits, bad close codes, UTF-8
  cut or broken at fragment boundaries, lengths in a longer form than needed or with
  the top bit set, masked frames a server may not send), fed to ``ClientFrameReader``
  and to a wsproto CLIENT connection after a real handshake, whole, byte by byte and in
  random pieces: the same messages, the same close code.
* Writing: random messages framed by ``ClientWebSocket.frame`` (and our close frame),
  read by a wsproto SERVER connection, whole, byte by byte and in random pieces: the
  same messages, in order, then the same close.

wsproto is driven through its public API only.  As in
``tests/providers/test_wsframes_differential.py``, its one departure from us (no size limit) is
kept out of the streams."""

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

from providers.wsframes import ClientFrameReader, CloseReceived, Ping, Pong, WebSocketError, client_close_frame
from providers.wsconnection import ClientWebSocket
from tests.providers.test_wsframes_differential import _pieces, frame_streams

DIFFERENTIAL = settings(max_examples=300, deadline=None)
LIMIT = 1 << 20  # far above any stream here: wsproto has no limit to compare

Outcome = tuple[Any, ...]


# ------------------------------------------------------------------- server frame streams


# Servers do not mask; a masked frame now and then is a violation the reader must refuse.
keys = st.one_of(st.none(), st.none(), st.none(), st.binary(min_size=4, max_size=4))
streams = frame_streams(keys, wrong_keys=st.binary(min_size=4, max_size=4))


# ------------------------------------------------------------------- the two client readers


def _ours(chunks: list[bytes]) -> list[Outcome]:
    reader = ClientFrameReader(LIMIT)
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
        else:
            outcome.append(("close", item.code if isinstance(item, CloseReceived) else item.close_code))
            break
    return outcome


def _open_wsproto_pair() -> tuple[WSConnection, WSConnection]:
    """A wsproto client and server after a real handshake between them."""
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="stt.example.test", target="/v1/listen")))
    assert [type(event) for event in server.events()] == [Request]
    client.receive_data(server.send(AcceptConnection()))
    assert [type(event) for event in client.events()] == [AcceptConnection]
    return client, server


def _wsproto(ws: WSConnection, chunks: list[bytes]) -> list[Outcome]:
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


def _wsproto_client(chunks: list[bytes]) -> list[Outcome]:
    return _wsproto(_open_wsproto_pair()[0], chunks)


@DIFFERENTIAL
@given(data=streams, cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_the_client_reader_reads_every_server_stream_as_wsproto_does(data: bytes, cuts: list[int]) -> None:
    whole = _ours([data])
    assert whole == _wsproto_client([data])
    assert _ours([data[i:i + 1] for i in range(len(data))]) == whole  # byte by byte
    assert _wsproto_client([data[i:i + 1] for i in range(len(data))]) == whole
    assert _ours(_pieces(data, cuts)) == whole  # in random pieces
    assert _wsproto_client(_pieces(data, cuts)) == whole


# ------------------------------------------------------------------- what we write


sizes = st.one_of(st.integers(0, 300), st.sampled_from([125, 126, 127, 65535, 65536, 70000]))
messages = st.lists(
    st.one_of(  # a drawn piece repeated to a drawn length (lengths at every frame-header boundary)
        st.tuples(st.text(min_size=1, max_size=8), sizes).map(lambda t: (t[0] * t[1])[:t[1]]),
        st.tuples(st.binary(min_size=1, max_size=16), sizes).map(lambda t: (t[0] * t[1])[:t[1]]),
    ),
    min_size=1, max_size=6,
)
closes = st.one_of(st.none(), st.tuples(st.sampled_from([1000, 1001, 1002, 1007, 1009, 1011, 3000, 4999]),
                                        st.text(max_size=200)))


def _served(chunks: list[bytes]) -> list[Outcome]:
    """What a wsproto server makes of the client's bytes."""
    return _wsproto(_open_wsproto_pair()[1], chunks)


@DIFFERENTIAL
@given(sent=messages, close=closes, cuts=st.lists(st.integers(0, 200_000), max_size=12))
def test_wsproto_reads_our_client_frames_as_the_messages_we_sent(
        sent: list[str | bytes], close: tuple[int, str] | None, cuts: list[int]) -> None:
    data = b"".join(ClientWebSocket.frame(m) for m in sent)
    expected: list[Outcome] = [("text", m) if isinstance(m, str) else ("bytes", m) for m in sent]
    if close is not None:
        data += client_close_frame(*close)
        expected.append(("close", close[0]))
    assert _served([data]) == expected
    assert _served(_pieces(data, cuts)) == expected
    if len(data) <= 4000:
        assert _served([data[i:i + 1] for i in range(len(data))]) == expected


def test_every_client_frame_gets_its_own_mask_key() -> None:
    """RFC 6455 §5.3: a fresh key per frame (a repeated key would let a script aim bytes
    at a proxy)."""
    frames = [ClientWebSocket.frame(b"\x00" * 8) for _ in range(2000)]  # over one 4 KiB pool refill
    assert all(f[1] & 0x80 for f in frames)
    keys_seen = {f[2:6] for f in frames}
    assert len(keys_seen) > 1990
    assert all(f[6:] == f[2:6] * 2 for f in frames)  # zeros masked: the key itself, twice
