"""The Twilio side of a call, for ``earpiece call``, ``earpiece demo`` and tests.

``post_voice_webhook`` plays Twilio's voice webhook (form POST to ``/twilio/voice``);
``simulate_call`` plays one Media Streams WebSocket::

    connected → start → (media | dtmf)* → stop → close(1000)      end="stop"
    connected → start → (media | dtmf)* → TCP connection dropped   end="drop"

Messages are built by the ``providers.twilio`` encoders, so what the gateway
receives is exactly what its decoder is tested against.
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal

import attrs
import trio
import trio_websocket

from providers.twilio import (
    encode_connected,
    encode_dtmf,
    encode_media_event,
    encode_start,
    encode_stop,
)
from providers.wsclient import WebSocketTarget

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "SimulatedCall",
    "WebhookError",
    "frames",
    "new_sid",
    "post_voice_webhook",
    "simulate_call",
]

#: 20 ms of 8 kHz mu-law: what one Twilio ``media`` message carries.
FRAME_BYTES: Final = 160
FRAME_MS: Final = 20
MULAW_SILENCE: Final = b"\xff"
#: What Twilio's Media Streams client sends in its upgrade request [obs].
STREAM_USER_AGENT: Final = "Twilio.TmeWs/1.0"
#: What Twilio's webhook client sends [obs].
WEBHOOK_USER_AGENT: Final = "TwilioProxy/1.1"
VOICE_PATH: Final = "/twilio/voice"
#: Twilio gives up on a webhook after 15 s and on a stream connect after 10 s.
WEBHOOK_TIMEOUT_S: Final = 15.0
CONNECT_TIMEOUT_S: Final = 10.0
CLOSE_TIMEOUT_S: Final = 5.0
#: In fast mode, let other tasks run after this many messages.
FAST_YIELD_EVERY: Final = 8

_Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


def new_sid(prefix: str) -> str:
    """A realistic Twilio SID: ``prefix`` (``"CA"``, ``"MZ"``, ``"AC"``) + 32 lowercase hex."""
    return prefix + secrets.token_hex(16)


def frames(mulaw: bytes, frame_bytes: int = FRAME_BYTES) -> list[bytes]:
    """Split mu-law audio into ``frame_bytes`` frames; the last is padded with silence (0xFF)."""
    if frame_bytes <= 0:
        raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
    out = [mulaw[i : i + frame_bytes] for i in range(0, len(mulaw), frame_bytes)]
    if out and len(out[-1]) < frame_bytes:
        out[-1] = out[-1].ljust(frame_bytes, MULAW_SILENCE)
    return out


@attrs.frozen
class SimulatedCall:
    """What happened on one simulated Media Streams socket.

    ``frames_sent``/``bytes_sent`` count ``media`` messages and their payload
    bytes; ``messages_sent`` counts every message (``connected`` included).
    ``closed_by_gateway`` is true when the gateway closed (or dropped) the
    socket before the script ended, i.e. before ``stop`` or the drop;
    ``close_code``/``close_reason`` are how the socket closed, whoever closed
    it (1000 after a normal stop, 1006 after a drop).  ``received`` holds the
    gateway's text messages in arrival order (``media``, ``mark``, ``clear``
    on bidirectional streams); ``binary_received`` counts binary frames, which
    Twilio does not accept (warning 31950).
    """

    call_sid: str
    stream_sid: str
    account_sid: str
    frames_sent: int
    bytes_sent: int
    messages_sent: int
    closed_by_gateway: bool
    close_code: int | None
    close_reason: str | None
    received: list[str] = attrs.field(eq=True, hash=False)
    binary_received: int = 0


class WebhookError(Exception):
    """The gateway answered the voice webhook with something other than 200."""

    def __init__(self, url: str, status_code: int, body: str) -> None:
        super().__init__(f"POST {url} answered {status_code}: {body[:200]!r}")
        self.url = url
        self.status_code = status_code
        self.body = body


# One step of the script: (audio position in ms, kind, frame index or dtmf order,
# payload or digit).  At equal
# positions a dtmf goes before the media frame that starts there.
_DTMF, _MEDIA, _END = 0, 1, 2


def _script(audio: list[bytes], dtmf: Sequence[tuple[int, str]]) -> list[tuple[int, int, int, bytes | str]]:
    steps: list[tuple[int, int, int, bytes | str]] = []
    for index, payload in enumerate(audio):
        steps.append((index * FRAME_MS, _MEDIA, index, payload))
    end_ms = len(audio) * FRAME_MS
    for order, (position_ms, digit) in enumerate(dtmf):
        if position_ms < 0:
            raise ValueError(f"dtmf position must be >= 0 ms, got {position_ms}")
        steps.append((position_ms, _DTMF, order, digit))
        end_ms = max(end_ms, position_ms)
    steps.sort(key=lambda step: step[:3])
    steps.append((end_ms, _END, 0, b""))
    return steps


@attrs.define
class _Player:
    """One simulated call's Twilio side: plays its script on a socket (``play``) while
    recording what the gateway sends back (``collect_replies``).  ``steps`` comes from
    ``_script``; the counters become the ``SimulatedCall``."""

    call_sid: str
    stream_sid: str
    account_sid: str
    steps: list[tuple[int, int, int, bytes | str]]
    fast: bool
    end: str
    first_timestamp_ms: int
    custom_parameters: dict[str, str]
    on_message: Callable[[str], None] | None
    frames_sent: int = 0
    bytes_sent: int = 0
    messages_sent: int = 0
    script_done: bool = False
    closed_by_gateway: bool = False
    received: list[str] = attrs.Factory(list)
    binary_received: int = 0

    async def converse(
        self, stream: _Stream, target: WebSocketTarget, headers: list[tuple[bytes, bytes]]
    ) -> trio_websocket.CloseReason | None:
        """The whole call on ``stream``: handshake, script and replies, the ending; returns
        how the socket closed (None: it did not close with a close frame)."""
        try:
            async with trio.open_nursery() as nursery:
                ws = await _handshake(nursery, stream, target, headers)
                replies_done = trio.Event()
                sending = trio.CancelScope()
                nursery.start_soon(self.collect_replies, ws, sending, replies_done)
                with sending:
                    try:
                        await self.play(ws)
                    except trio_websocket.ConnectionClosed:
                        self.closed_by_gateway = True
                await self._hang_up(ws, stream, replies_done)
        except BaseExceptionGroup as group:
            # A refused or stalled handshake surfaces from trio-websocket's reader
            # task; give it to the caller as the plain exception open_websocket_url
            # would raise.
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], trio_websocket.HandshakeError):
                raise group.exceptions[0] from None
            raise
        return ws.closed

    async def _hang_up(self, ws: trio_websocket.WebSocketConnection, stream: _Stream, replies_done: trio.Event) -> None:
        if self.closed_by_gateway:
            # trio-websocket answers the gateway's close frame before the
            # collector sees the close; then, as a client, it would wait for
            # the gateway to close TCP.  Do not wait for that.
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await replies_done.wait()
            await trio.aclose_forcefully(stream)
        elif self.end == "stop":
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await ws.aclose(1000)
        else:
            await trio.aclose_forcefully(stream)  # the drop: no close frame, no TLS goodbye

    async def _send(self, ws: trio_websocket.WebSocketConnection, message: str) -> None:
        await ws.send_message(message)
        self.messages_sent += 1

    async def play(self, ws: trio_websocket.WebSocketConnection) -> None:
        """``connected``, ``start``, the script on its schedule, then ``stop`` (``end="stop"``)."""
        await self._send(ws, encode_connected())
        await self._send(ws, encode_start(
            stream_sid=self.stream_sid,
            account_sid=self.account_sid,
            call_sid=self.call_sid,
            custom_parameters=self.custom_parameters,
        ))
        sequence = 1
        t0 = trio.current_time()
        for position_ms, kind, index, data in self.steps:
            if not self.fast:
                await trio.sleep_until(t0 + position_ms / 1000)
            elif self.messages_sent % FAST_YIELD_EVERY == 0:
                await trio.sleep(0)
            if kind == _END:
                break
            sequence += 1
            await self._play_step(ws, sequence, kind, index, data)
        if self.end == "stop":
            await self._send(ws, encode_stop(
                stream_sid=self.stream_sid,
                sequence_number=sequence + 1,
                account_sid=self.account_sid,
                call_sid=self.call_sid,
            ))
        self.script_done = True

    async def _play_step(self, ws: trio_websocket.WebSocketConnection, sequence: int, kind: int, index: int,
                         data: bytes | str) -> None:
        if kind == _DTMF:
            assert isinstance(data, str)
            await self._send(ws, encode_dtmf(stream_sid=self.stream_sid, sequence_number=sequence, digit=data))
            return
        assert isinstance(data, bytes)
        await self._send(ws, encode_media_event(
            stream_sid=self.stream_sid,
            sequence_number=sequence,
            chunk=index + 1,
            timestamp=self.first_timestamp_ms + index * FRAME_MS,
            payload=data,
        ))
        self.frames_sent += 1
        self.bytes_sent += len(data)

    async def collect_replies(
        self, ws: trio_websocket.WebSocketConnection, sending: trio.CancelScope, done: trio.Event
    ) -> None:
        """Every message from the gateway, until it closes; a close before the script
        ended stops the sending."""
        while True:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                if not self.script_done:
                    self.closed_by_gateway = True
                    sending.cancel()
                done.set()
                return
            if isinstance(message, bytes):
                self.binary_received += 1
                continue
            self.received.append(message)
            if self.on_message is not None:
                self.on_message(message)

    def result(self, closed: trio_websocket.CloseReason | None) -> SimulatedCall:
        return SimulatedCall(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            account_sid=self.account_sid,
            frames_sent=self.frames_sent,
            bytes_sent=self.bytes_sent,
            messages_sent=self.messages_sent,
            closed_by_gateway=self.closed_by_gateway,
            close_code=closed.code if closed is not None else None,
            close_reason=closed.reason if closed is not None else None,
            received=self.received,
            binary_received=self.binary_received,
        )


async def simulate_call(
    url: str,
    mulaw: bytes,
    *,
    fast: bool = False,
    custom_parameters: Mapping[str, str] | None = None,
    call_sid: str | None = None,
    stream_sid: str | None = None,
    account_sid: str | None = None,
    first_timestamp_ms: int = 0,
    dtmf: Sequence[tuple[int, str]] = (),
    end: Literal["stop", "drop"] = "stop",
    extra_headers: Sequence[tuple[str, str]] = (),
    on_message: Callable[[str], None] | None = None,
) -> SimulatedCall:
    """Stream ``mulaw`` (8 kHz) to ``url`` exactly as Twilio Media Streams would.

    Sends ``connected``, ``start`` (``sequenceNumber`` 1, ``tracks`` inbound,
    ``customParameters``), then one ``media`` per 160-byte frame (``chunk``
    from 1, ``timestamp`` from ``first_timestamp_ms`` in steps of 20), each
    ``(position_ms, digit)`` of ``dtmf`` once the audio before that position
    has been sent, and finally ``stop`` + close 1000 (``end="stop"``) or an
    abrupt TCP close with neither (``end="drop"``).  ``sequenceNumber`` grows by
    one per message of any type.  Missing SIDs are generated.

    Pacing: frame *i* goes out at ``t0 + i * 20 ms`` on trio's clock (an
    absolute schedule, so lateness never accumulates) and ``stop`` when the
    audio has played; with ``fast=True`` as fast as the socket takes them.

    Meanwhile every message from the gateway is recorded (and passed to
    ``on_message``); if the gateway closes the socket first, sending stops and
    the result says so.  Connection failures propagate: ``OSError``,
    ``trio_websocket.ConnectionRejected`` (a non-101 answer, Twilio's 31920),
    ``trio_websocket.HandshakeError``.
    """
    if end not in ("stop", "drop"):
        raise ValueError(f"end must be 'stop' or 'drop', not {end!r}")
    player = _Player(call_sid or new_sid("CA"), stream_sid or new_sid("MZ"), account_sid or new_sid("AC"),
                     _script(frames(mulaw), dtmf), fast, end, first_timestamp_ms, dict(custom_parameters or {}),
                     on_message)
    try:
        target = WebSocketTarget.from_url(url)
    except ValueError:
        raise ValueError(f"stream URL must be ws://HOST[:PORT]/PATH or wss://…, not {url!r}") from None
    headers = [(name.encode(), value.encode()) for name, value in _with_user_agent(STREAM_USER_AGENT, extra_headers)]
    # We own the TCP stream (rather than open_websocket_url) so that it is closed on
    # every path, a rejected handshake included, and so that end="drop" can cut it.
    async with await _connect(target) as stream:
        closed = await player.converse(stream, target, headers)
    return player.result(closed)


def _with_user_agent(user_agent: str, extra: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``extra`` headers, led by Twilio's User-Agent unless ``extra`` sets its own."""
    if any(name.lower() == "user-agent" for name, _ in extra):
        return list(extra)
    return [("User-Agent", user_agent), *extra]


async def _connect(target: WebSocketTarget) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    if target.secure:
        return await trio.open_ssl_over_tcp_stream(
            target.host, target.port, ssl_context=ssl.create_default_context(), https_compatible=True
        )
    return await trio.open_tcp_stream(target.host, target.port)


async def _handshake(
    nursery: trio.Nursery,
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
    target: WebSocketTarget,
    headers: list[tuple[bytes, bytes]],
) -> trio_websocket.WebSocketConnection:
    """The opening handshake, within Twilio's connect budget (``ConnectionTimeout`` after it)."""
    with trio.move_on_after(CONNECT_TIMEOUT_S):
        return await trio_websocket.wrap_client_stream(
            nursery, stream, target.host_header, target.resource, extra_headers=headers
        )
    raise trio_websocket.ConnectionTimeout(f"no WebSocket handshake within {CONNECT_TIMEOUT_S} s")


async def post_voice_webhook(
    base_http_url: str,
    *,
    call_sid: str,
    account_sid: str,
    from_: str = "+15005550006",
    to: str = "+15005550001",
    extra_headers: Sequence[tuple[str, str]] = (),
) -> str:
    """POST Twilio's inbound-call voice webhook to ``base_http_url + /twilio/voice``.

    Sends the form fields of a new inbound call (CallSid, AccountSid, From,
    To, CallStatus=ringing, ApiVersion, Direction=inbound, Caller, Called) and
    returns the TwiML text.  Raises ``WebhookError`` on any status but 200 and
    ``httpx.HTTPError`` on transport failures (15 s timeout, as Twilio's).
    Pass ``X-Twilio-Signature`` through ``extra_headers`` when the gateway
    validates signatures.
    """
    import httpx  # only the tests and the webhook path need it

    form = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to,
        "Caller": from_,
        "Direction": "inbound",
        "From": from_,
        "To": to,
    }
    url = base_http_url.rstrip("/") + VOICE_PATH
    headers = _with_user_agent(WEBHOOK_USER_AGENT, extra_headers)
    async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S) as client:
        response = await client.post(url, data=form, headers=headers)
    if response.status_code != 200:
        raise WebhookError(url, response.status_code, response.text)
    return response.text
