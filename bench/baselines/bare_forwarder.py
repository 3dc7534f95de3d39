"""The floor of the fixed stack: Hypercorn (trio worker) + a raw ASGI app + trio-websocket.

    python bench/baselines/bare_forwarder.py --port 8081 --provider-url ws://127.0.0.1:PORT

Per Twilio socket: accept, open one ElevenLabs-protocol WebSocket to
``<provider-url>/v1/speech-to-text/realtime?...`` (``xi-api-key`` header), then for each
text frame ``orjson.loads`` it; ``media`` payloads are base64-decoded and gathered into
100 ms batches, each sent as one ``input_audio_chunk``; ``stop`` (or a disconnect)
sends the rest, a ``commit: true`` chunk, waits up to 2 s for the
``committed_transcript`` and closes both sockets.  A second task reads and counts the
provider's messages.

No actors, no channels, no codec objects, no validation, no sinks, no logging per
call: what any gateway on this stack must pay at least.  Same Hypercorn settings as
``gateway/serve.py`` (access log off, 64 KiB message limit).
"""

from __future__ import annotations

import argparse
import base64
import logging
import signal
import sys

import orjson
import trio
import trio_websocket
from hypercorn.config import Config
from hypercorn.trio import serve

PATH = "/v1/speech-to-text/realtime"
QUERY = "model_id=scribe_v2_realtime&audio_format=ulaw_8000&commit_strategy=vad&include_timestamps=true"
BATCH_BYTES = 800  # 100 ms of 8 kHz mu-law
HEAD = '{"message_type":"input_audio_chunk","audio_base_64":"'
TAIL = '","commit":false,"sample_rate":8000}'
COMMIT = '{"message_type":"input_audio_chunk","audio_base_64":"","commit":true,"sample_rate":8000}'


class Forwarder:
    def __init__(self, provider_url: str, api_key: str) -> None:
        self.url = f"{provider_url.rstrip('/')}{PATH}?{QUERY}"
        self.headers = [(b"xi-api-key", api_key.encode())]
        self.calls = 0
        self.provider_messages = 0

    async def __call__(self, scope: dict, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "websocket":
            await receive()
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        self.calls += 1
        committed = trio.Event()
        async with trio_websocket.open_websocket_url(self.url, extra_headers=self.headers,
                                                     message_queue_size=16) as ws:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._drain, ws, committed)
                disconnected = await self._forward(receive, ws)
                await ws.send_message(COMMIT)
                with trio.move_on_after(2.0):
                    await committed.wait()
                nursery.cancel_scope.cancel()
        if not disconnected:
            await send({"type": "websocket.close", "code": 1000})

    async def _forward(self, receive, ws: trio_websocket.WebSocketConnection) -> bool:  # noqa: ANN001
        parts: list[bytes] = []
        size = 0
        loads, b64decode = orjson.loads, base64.b64decode
        disconnected = False
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                disconnected = True
                break
            obj = loads(message["text"])
            event = obj["event"]
            if event == "media":
                payload = b64decode(obj["media"]["payload"])
                parts.append(payload)
                size += len(payload)
                if size >= BATCH_BYTES:
                    await ws.send_message(HEAD + base64.b64encode(b"".join(parts)).decode() + TAIL)
                    parts.clear()
                    size = 0
            elif event == "stop":
                break
        if parts:
            await ws.send_message(HEAD + base64.b64encode(b"".join(parts)).decode() + TAIL)
        return disconnected

    async def _drain(self, ws: trio_websocket.WebSocketConnection, committed: trio.Event) -> None:
        try:
            while True:
                message = await ws.get_message()
                self.provider_messages += 1
                if '"committed_transcript' in message:
                    committed.set()
        except trio_websocket.ConnectionClosed:
            committed.set()


async def main_async(args: argparse.Namespace) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.websocket_max_message_size = 64 * 1024
    config.graceful_timeout = 5

    async def shutdown() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return

    await serve(Forwarder(args.provider_url, args.api_key), config, shutdown_trigger=shutdown, mode="asgi")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--provider-url", required=True, help="ws://127.0.0.1:PORT (the fake provider)")
    parser.add_argument("--api-key", default="bench-dummy-key")
    args = parser.parse_args(argv)
    if not args.provider_url.startswith("ws://127.0.0.1"):
        parser.error("--provider-url must be ws://127.0.0.1:PORT (loopback only)")
    logging.basicConfig(level=logging.WARNING)
    trio.run(main_async, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
