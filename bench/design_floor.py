"""The fixed design's CPU floor: the smallest gateway that does earpiece's job its way.

    ELEVENLABS_BASE_URL=ws://127.0.0.1:9100 ELEVENLABS_API_KEY=test \\
        python bench/design_floor.py --port 8010

Why it exists: the performance target asks whether the fixed design (trio, Python 3.11,
five actor tasks per call joined by bounded memory channels) can cost at most 0.6x the
seed gateway's CPU per call-second.  earpiece has many features on top of that design;
this file has none of them, so its CPU per call-second is the design's floor on this
stack: if the floor is above the target, no implementation of the design meets it; the
distance between it and earpiece is what the features cost.

Per Twilio Media Stream (``trio.serve_tcp`` on 127.0.0.1, upgraded at ``/twilio/stream``)::

    reader ─mulaw─▶ resampler ─audio─▶ sender ──▶ provider socket
                                                      │
              emitter ◀─events─ receiver ◀────────────┘

* reader: the WebSocket frames through earpiece's own ``gateway.stream_socket``
  (``SO_RCVLOWAT`` batching: one wake-up per 100 ms) and ``providers.wsframes``; each
  text through ``providers.twilio.converter.decode_message``; five media frames make
  one batch; ends at ``stop`` (or the peer's close) by closing its channel;
* resampler: a pass-through (mu-law in, mu-law out), as earpiece's for ElevenLabs;
* sender: ``providers.elevenlabs``'s codec framed by earpiece's provider client
  (``providers.wsclient``); at the end the commit, the wait for its transcript, close;
* receiver: the provider's messages through the codec, as events to the emitter;
* emitter: renders each transcript as a JSON line and drops it (no I/O).

Every channel is bounded (``CHANNEL_SIZE``) and nothing is dropped: a full channel
makes its sender wait.  The garbage collector is set as ``earpiece serve`` sets it.

Left out, on purpose: replay buffer, watchdog, statistics, limits, metrics, per-frame
logging, Twilio's order/sequence checks, DTMF and marks, reconnection and fail-over,
signatures, sinks, Hypercorn and every HTTP route but the stream's upgrade.  Not for production.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from functools import partial
from typing import TypeVar

import orjson
import trio

from gateway.cli import settle_collector
from gateway.edge import MAX_HEAD, head_end, parse_stream_upgrade
from gateway.stream_socket import SocketStreamUpgrade, SocketTextSource, SocketTransport
from providers.elevenlabs import ElevenLabsCodec, ElevenLabsProvider, create
from providers.errors import ProviderConfigError
from providers.events import FinalTranscript, Finalized, PartialTranscript
from providers.twilio import Media, Stop, TwilioProtocolError
from providers.twilio.converter import decode_message
from providers.wsclient import ConnectTimeout, open_client_websocket
from providers.wsconnection import ClientWebSocket, ConnectionClosed, HandshakeError
from providers.wsframes import http_response

log = logging.getLogger("design_floor")
T = TypeVar("T")
Transcript = PartialTranscript | FinalTranscript

BATCH_FRAMES = 5  # 20 ms media frames per batch: 100 ms, as earpiece batches
CHANNEL_SIZE = 20  # batches (or events) a channel holds before its sender waits
MAX_MESSAGE_BYTES = 64 * 1024  # the largest Twilio message read
STREAM_PATH = "/twilio/stream"  # as earpiece serves it
HEAD_TIMEOUT = 10.0  # seconds for the upgrade request to arrive
CONNECT_TIMEOUT = 10.0  # seconds for the provider's handshake
FINAL_TIMEOUT = 5.0  # seconds for the provider to answer the end-of-audio commit
CLOSE_TIMEOUT = 2.0  # seconds for the provider to answer our close
SEND_TIMEOUT = 5.0  # seconds for a provider that stopped reading to take a batch


async def _offer(send: trio.MemorySendChannel[T], item: T) -> None:
    """Send without a pass through the scheduler when there is room (the cheap case);
    wait when the channel is full: slower, never lossy."""
    try:
        send.send_nowait(item)
    except trio.WouldBlock:
        await send.send(item)


async def reader(source: SocketTextSource, mulaw_send: trio.MemorySendChannel[bytes],
                 failures: list[TwilioProtocolError]) -> None:
    """Twilio's messages → 100 ms mu-law batches, until ``stop``, the peer's close or a
    malformed message (kept in ``failures``; the audio before it still goes out)."""
    async with mulaw_send:
        parts: list[bytes] = []
        source.expect(BATCH_FRAMES)
        while True:
            try:
                event = decode_message(await source.receive())
            except trio.EndOfChannel:
                break
            except TwilioProtocolError as exc:
                failures.append(exc)
                break
            kind = type(event)
            if kind is Media:
                parts.append(event.payload)  # type: ignore[union-attr]
                if len(parts) == BATCH_FRAMES:
                    await _offer(mulaw_send, b"".join(parts))
                    parts.clear()
                    source.expect(BATCH_FRAMES)
            elif kind is Stop:
                break
        if parts:
            await _offer(mulaw_send, b"".join(parts))


async def resampler(mulaw_receive: trio.MemoryReceiveChannel[bytes],
                    audio_send: trio.MemorySendChannel[bytes]) -> None:
    """mu-law 8 kHz is what the provider takes: batches pass through unchanged."""
    async with mulaw_receive, audio_send:
        async for batch in mulaw_receive:
            await _offer(audio_send, batch)


async def _write(ws: ClientWebSocket, codec: ElevenLabsCodec) -> None:
    """Frame what the codec queued and write it: one non-blocking write, usually."""
    messages = codec.data_to_send()
    if messages:
        rest = ws.write_nowait(b"".join(map(ws.frame, messages)))
        if rest is not None:
            await ws.send_rest(rest, SEND_TIMEOUT)


async def sender(ws: ClientWebSocket, codec: ElevenLabsCodec, audio_receive: trio.MemoryReceiveChannel[bytes],
                 finalized: trio.Event, receiving: trio.CancelScope) -> None:
    """Each batch to the provider; at the end the commit, its answer, and our close
    (after which the receiver has ``CLOSE_TIMEOUT`` for the provider's)."""
    async with audio_receive:
        async for batch in audio_receive:
            codec.send_audio(batch)
            await _write(ws, codec)
    if codec.finalize() is None:  # None: a commit went out, its answer is to come
        await _write(ws, codec)
        with trio.move_on_after(FINAL_TIMEOUT):
            await finalized.wait()
    receiving.deadline = trio.current_time() + CLOSE_TIMEOUT
    rest = ws.write_nowait(ws.close_frame(1000))
    if rest is not None:
        await ws.send_rest(rest, CLOSE_TIMEOUT)


async def receiver(ws: ClientWebSocket, codec: ElevenLabsCodec, events_send: trio.MemorySendChannel[Transcript],
                   finalized: trio.Event, receiving: trio.CancelScope) -> None:
    """The provider's messages → transcript events, until its close."""
    async with events_send:
        with receiving:
            while True:
                try:
                    messages = await ws.receive()
                except ConnectionClosed:
                    break
                for message in messages:
                    for event in codec.receive(message):
                        kind = type(event)
                        if kind is Finalized:
                            finalized.set()
                        elif kind is PartialTranscript or kind is FinalTranscript:
                            await _offer(events_send, event)  # type: ignore[arg-type]


def render(event: Transcript) -> bytes:
    """A transcript as the JSON line a sink would write."""
    kind = "partial" if type(event) is PartialTranscript else "committed"
    return orjson.dumps({"type": kind, "text": event.text, "start_ms": event.start_ms, "end_ms": event.end_ms}) + b"\n"


async def emitter(events_receive: trio.MemoryReceiveChannel[Transcript]) -> None:
    """Each transcript rendered, then dropped: the floor's sink does no I/O."""
    async with events_receive:
        async for event in events_receive:
            render(event)


async def run_call(source: SocketTextSource, provider: ElevenLabsProvider) -> list[TwilioProtocolError]:
    """One call: the provider's socket, and the five tasks joined by bounded channels;
    returns what was malformed in Twilio's stream, if anything ended it."""
    failures: list[TwilioProtocolError] = []
    headers = [(name.encode(), value.encode()) for name, value in provider.headers()]
    async with open_client_websocket(provider.url, headers, connect_timeout=CONNECT_TIMEOUT) as ws:
        codec = provider.codec()
        finalized, receiving = trio.Event(), trio.CancelScope()
        mulaw_send, mulaw_receive = trio.open_memory_channel[bytes](CHANNEL_SIZE)
        audio_send, audio_receive = trio.open_memory_channel[bytes](CHANNEL_SIZE)
        events_send, events_receive = trio.open_memory_channel[Transcript](CHANNEL_SIZE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader, source, mulaw_send, failures)
            nursery.start_soon(resampler, mulaw_receive, audio_send)
            nursery.start_soon(sender, ws, codec, audio_receive, finalized, receiving)
            nursery.start_soon(receiver, ws, codec, events_send, finalized, receiving)
            nursery.start_soon(emitter, events_receive)
    return failures


async def read_upgrade(transport: SocketTransport) -> tuple[bytes, bytes] | None:
    """The upgrade request's ``Sec-WebSocket-Key`` and the bytes after its head, read and
    judged by the gateway's own edge (``gateway.edge``); None (after a 400) when it is not
    a WebSocket upgrade of ``STREAM_PATH``, or None when it does not arrive in time."""
    head = b""
    end = None
    with trio.move_on_after(HEAD_TIMEOUT):
        while (end := head_end(head)) is None and len(head) <= MAX_HEAD:
            data = await transport.receive_some()
            if not data:
                return None
            head += data
    if end is None:
        return None
    upgrade = parse_stream_upgrade(head[:end], STREAM_PATH)
    if upgrade is None or upgrade.refusal() is not None:
        await transport.send_all(http_response(400, f"a WebSocket upgrade of {STREAM_PATH} expected\n"))
        return None
    return upgrade.header(b"sec-websocket-key").strip(), head[end:]


async def handle(provider: ElevenLabsProvider, stream: trio.SocketStream) -> None:
    """One connection: upgrade, the call, close.  A failure costs this call only."""
    transport = SocketTransport(socket.socket(fileno=stream.socket.detach()))
    try:
        upgrade = await read_upgrade(transport)
        if upgrade is None:
            return
        key, early = upgrade
        stream_upgrade = SocketStreamUpgrade(transport, key, MAX_MESSAGE_BYTES, early)
        source = await stream_upgrade.accept()
        code, reason = 1000, ""
        try:
            failures = await run_call(source, provider)
            if failures:  # a malformed message ended the stream; a frame-level violation's own code wins
                code, reason = 1008, str(failures[0])[:120]
        except* (OSError, trio.BrokenResourceError, trio.TooSlowError, ConnectionClosed, HandshakeError,
                 ConnectTimeout) as group:
            log.warning("the provider failed a call: %r", group.exceptions[0])
            code, reason = 1011, "provider unavailable"
        await stream_upgrade.close(code, reason)
    except Exception:  # a bug must cost this connection only, never the other calls
        log.exception("a call failed")
    finally:
        await transport.aclose()


async def serve(provider: ElevenLabsProvider, port: int) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, partial(handle, provider), port, host="127.0.0.1"))
        bound = listeners[0].socket.getsockname()[1]
        settle_collector()
        print(f"design_floor on ws://127.0.0.1:{bound} provider={provider.url}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8010, help="port on 127.0.0.1 (0: any free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        provider = create(os.environ)
    except ProviderConfigError as exc:
        print(f"design_floor: {exc}", file=sys.stderr)
        return 2
    # The harness stops a gateway with SIGTERM: end as on Ctrl-C, so that exit hooks
    # (bench/experiments.py's reports) still run.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        trio.run(serve, provider, args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
