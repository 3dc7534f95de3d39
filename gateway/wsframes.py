"""The server side of RFC 6455 for ``/twilio/stream``, sans-I/O: bytes in, messages out.

Twilio sends one small masked text frame per 20 ms of audio.  A general WebSocket
library turns each into several objects and events on its way to the application; this
reader does only what the stream needs, per frame: the header, the unmask, the UTF-8
decode.  Everything else a client may send is handled too, so that a peer that is not
Twilio gets a clean close, not a crash:

* fragmented messages are reassembled; control frames may come between fragments;
* ``ping`` / ``pong`` / ``close`` come out as events (the I/O shell answers them);
* a binary message comes out as ``bytes`` (the call decides what that means);
* a protocol violation raises ``WebSocketError`` carrying the close code to answer with:
  1002 (unmasked frame, reserved bits, unknown opcode, bad control frame or
  continuation), 1007 (text that is not UTF-8), 1009 (a message over
  ``max_message_bytes``: refused from its header, before it is buffered).

``handshake_response`` / ``http_response`` / ``close_frame`` / ``pong_frame`` build what
the server sends (server frames are not masked).
"""

from __future__ import annotations

import base64
import hashlib

import attrs

__all__ = [
    "WebSocketError",
    "Ping",
    "Pong",
    "CloseReceived",
    "ServerFrameReader",
    "accept_key",
    "handshake_response",
    "http_response",
    "close_frame",
    "pong_frame",
    "unmask",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONTINUATION, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_STATUS_TEXT = {101: "Switching Protocols", 400: "Bad Request", 403: "Forbidden", 426: "Upgrade Required",
                503: "Service Unavailable"}


@attrs.frozen
class Ping:
    payload: bytes


@attrs.frozen
class Pong:
    payload: bytes


@attrs.frozen
class CloseReceived:
    """The peer's close frame: ``code`` 1005 when it carried none."""

    code: int
    reason: str


Message = str | bytes | Ping | Pong | CloseReceived


class WebSocketError(Exception):
    """The peer broke the WebSocket protocol or a limit; ``close_code`` says how to close.
    ``messages``: the messages that were complete before the violation, in order."""

    def __init__(self, detail: str, close_code: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.close_code = close_code
        self.messages: list[Message] = []


def unmask(data: bytes | bytearray, key: bytes | bytearray) -> bytes:
    """``data`` XOR the repeating 4-byte ``key``, as big-integer operations (a few passes
    in C instead of a Python loop per byte): the key times 1 + 2**32 + 2**64 + ... is
    the key repeated."""
    n = len(data)
    repeat, low = _REPEATS.get(n) or _repeat(n)
    return ((int.from_bytes(data, "little") ^ (int.from_bytes(key, "little") * repeat)) & low).to_bytes(
        n, "little")


_REPEATS: dict[int, tuple[int, int]] = {}
_REPEATS_CACHED_UP_TO = 2048  # bytes: every Twilio message length, and no more


def _repeat(n: int) -> tuple[int, int]:
    value = (int.from_bytes(b"\x01\x00\x00\x00" * ((n + 3) // 4), "little"), (1 << (8 * n)) - 1)
    if n <= _REPEATS_CACHED_UP_TO:
        _REPEATS[n] = value
    return value


class ServerFrameReader:
    """Client frames in (``receive_data``), complete messages out, in order.

    ``buffered``: bytes held of a frame not yet complete.  ``last_frame_bytes``: the
    wire size of the last complete text frame (the I/O shell sizes its reads with it).
    """

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.last_frame_bytes = 0
        self._buffer = bytearray()
        self._fragments: list[bytes] | None = None
        self._fragment_opcode = 0
        self._fragment_bytes = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes) -> list[Message]:
        """Parse what arrived; returns the messages it completed (possibly none).
        Raises ``WebSocketError`` (with the messages before the violation); after that
        the reader must not be used again."""
        out: list[Message] = []
        try:
            return self._parse(data, out)
        except WebSocketError as exc:
            exc.messages = out
            raise

    def _parse(self, data: bytes, out: list[Message]) -> list[Message]:
        buffer = self._buffer
        buffer += data
        pos, end = 0, len(buffer)
        limit = self.max_message_bytes
        while end - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            if not b1 & 0x80:
                raise WebSocketError("a client frame must be masked", 1002)
            length = b1 & 0x7F
            head = 6
            if length == 126:
                if end - pos < 4:
                    break
                length, head = (buffer[pos + 2] << 8) | buffer[pos + 3], 8
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2:pos + 10], "big"), 14
            if length > limit or (not b0 & 0x0F and self._fragment_bytes + length > limit):
                raise WebSocketError(f"a message over {limit} bytes (max_message_bytes)", 1009)
            frame_end = pos + head + length
            if frame_end > end:
                break
            payload = unmask(buffer[pos + head:frame_end], buffer[pos + head - 4:pos + head])
            if b0 == 0x81 and self._fragments is None:  # the fast path: one whole text frame
                try:
                    out.append(payload.decode("utf-8"))
                except UnicodeDecodeError:
                    raise WebSocketError("a text message that is not UTF-8", 1007) from None
                self.last_frame_bytes = frame_end - pos
            else:
                message = self._frame(b0, payload)
                if message is not None:
                    out.append(message)
            pos = frame_end
        del buffer[:pos]
        return out

    def _frame(self, b0: int, payload: bytes) -> Message | None:
        if b0 & 0x70:
            raise WebSocketError("reserved bits set without a negotiated extension", 1002)
        fin, opcode = b0 & 0x80, b0 & 0x0F
        if opcode >= 0x8:
            if not fin or len(payload) > 125:
                raise WebSocketError("a control frame must be whole and at most 125 bytes", 1002)
            if opcode == _OP_CLOSE:
                return _close_received(payload)
            if opcode == _OP_PING:
                return Ping(payload)
            if opcode == _OP_PONG:
                return Pong(payload)
            raise WebSocketError(f"unknown control opcode {opcode:#x}", 1002)
        if opcode == _OP_CONTINUATION:
            if self._fragments is None:
                raise WebSocketError("a continuation frame without a message to continue", 1002)
            self._fragments.append(payload)
            self._fragment_bytes += len(payload)
        elif opcode in (_OP_TEXT, _OP_BINARY):
            if self._fragments is not None:
                raise WebSocketError("a new message before the previous one was finished", 1002)
            self._fragments, self._fragment_opcode, self._fragment_bytes = [payload], opcode, len(payload)
        else:
            raise WebSocketError(f"unknown data opcode {opcode:#x}", 1002)
        if not fin:
            return None
        whole = b"".join(self._fragments)
        opcode, self._fragments = self._fragment_opcode, None
        if opcode == _OP_BINARY:
            return whole
        try:
            return whole.decode("utf-8")
        except UnicodeDecodeError:
            raise WebSocketError("a text message that is not UTF-8", 1007) from None


def _close_received(payload: bytes) -> CloseReceived:
    if not payload:
        return CloseReceived(1005, "")
    if len(payload) == 1:
        raise WebSocketError("a close frame with a 1-byte payload", 1002)
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketError("a close reason that is not UTF-8", 1007) from None
    return CloseReceived(int.from_bytes(payload[:2], "big"), reason)


# ------------------------------------------------------------------ what the server sends


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest())


def handshake_response(key: bytes) -> bytes:
    """``101 Switching Protocols`` for a valid upgrade request (no subprotocol, no
    extension: Twilio asks for neither)."""
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n")


def http_response(status: int, body: str, extra_headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete plain-text HTTP/1.1 response that ends the connection."""
    data = body.encode()
    head = [f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}", "content-type: text/plain",
            f"content-length: {len(data)}", "connection: close", *(f"{k}: {v}" for k, v in extra_headers)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data


def _server_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 1 << 16:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; ``reason`` is cut to fit a control frame (123 bytes of UTF-8)."""
    text = reason.encode()[:123].decode("utf-8", "ignore").encode()
    return _server_frame(_OP_CLOSE, code.to_bytes(2, "big") + text)


def pong_frame(payload: bytes) -> bytes:
    return _server_frame(_OP_PONG, payload)
