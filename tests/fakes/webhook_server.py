"""A real HTTP/1.1 server on 127.0.0.1 (trio + h11) that plays a script of answers to POSTs.

``Answer(status, headers)`` answers; ``Answer(hang=True)`` reads the request and never
answers.  The script is consumed one answer per request; when it runs out, ``then`` is
used.  Every request is recorded with the trio time it arrived.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import attrs
import h11
import trio


@attrs.frozen
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    hang: bool = False


@attrs.frozen
class Received:
    at: float
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class WebhookServer:
    def __init__(self, script: Iterable[Answer] = (), then: Answer = Answer(200)) -> None:
        self._script = list(script)
        self._then = then
        self.received: list[Received] = []
        self.arrived = trio.Event()  # set at every request (and replaced)
        self.url = ""

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, self._serve, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            self.url = f"http://127.0.0.1:{port}/hook"
            task_status.started(self.url)

    def _next(self) -> Answer:
        return self._script.pop(0) if self._script else self._then

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            conn = h11.Connection(h11.SERVER)
            try:
                while await self._one(stream, conn):
                    conn.start_next_cycle()
            except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async def _one(self, stream: trio.SocketStream, conn: h11.Connection) -> bool:
        request, body = None, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # ConnectionClosed (or PAUSED): the client is done with this connection
                return False
        assert request is not None
        self.received.append(Received(
            at=trio.current_time(), method=request.method.decode(), target=request.target.decode(),
            headers={k.decode().lower(): v.decode() for k, v in request.headers}, body=body))
        self.arrived.set()
        self.arrived = trio.Event()
        answer = self._next()
        if answer.hang:
            await trio.sleep_forever()
        headers = [("Content-Length", "0"), *answer.headers]
        await stream.send_all(conn.send(h11.Response(status_code=answer.status, headers=headers)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE
