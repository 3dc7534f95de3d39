"""RFC 6455 frames, sans-I/O: bytes in, messages out, for both ends of a connection.

The server side reads ``/twilio/stream`` (``ServerFrameReader``: client frames, masked);
the client side reads provider sockets (``ClientFrameReader``: server frames, never
masked) and writes masked client frames (``client_frame``).  One parser serves both,
told which side must mask; what follows is written from the server's side.

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
  continuation, a length not in its shortest form or with the top bit set, a close code
  a peer may not send), 1007 (text that is not UTF-8: a fragmented message is checked
  fragment by fragment), 1009 (a message over ``max_message_bytes`` or over
  ``MAX_FRAGMENTS`` frames: refused from its header, before it is buffered).

Everything a frame's header can tell is judged from the header, in wsproto's order,
before the size limit: a frame that breaks the protocol is a 1002 however long it says
it is.

``handshake_response`` / ``http_response`` / ``close_frame`` / ``pong_frame`` build what
the server sends (server frames are not masked).

It lives in ``providers/`` because the provider client uses it as well as the gateway's
stream socket, and imports flow one way: ``gateway`` → ``actors`` → ``providers``.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import os

import attrs

__all__ = [
    "WebSocketError",
    "Ping",
    "Pong",
    "CloseReceived",
    "FrameReader",
    "ServerFrameReader",
    "ClientFrameReader",
    "client_frame",
    "client_close_frame",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PONG",
    "accept_key",
    "handshake_response",
    "http_response",
    "close_frame",
    "pong_frame",
    "unmask",
    "MAX_FRAGMENTS",
]

MAX_FRAGMENTS = 1024  # frames per message: empty continuations must not grow a message for free

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONTINUATION, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PONG = _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PONG
# Close codes a peer may send (RFC 6455 §7.4, the IANA registry as wsproto knows it): 1004
# is reserved, 1005/1006/1015 are for reports only, never the wire; 3000-4999 are free.
_PEER_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013))
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


def _long_length(buffer: bytearray, pos: int) -> int:
    """A frame's 64-bit payload length (RFC 6455 5.2: minimal, top bit clear)."""
    length = int.from_bytes(buffer[pos + 2:pos + 10], "big")
    if length < 1 << 16:
        raise WebSocketError("a 64-bit length where 16 bits would do", 1002)
    if length >> 63:
        raise WebSocketError("a 64-bit length with its top bit set", 1002)
    return length


class FrameReader:
    """Frames in (``receive_data``), complete messages out, in order.  ``masked``: the
    peer's frames must be masked (a server reading a client) or must not be (a client
    reading a server); the other kind is a 1002.

    ``buffered``: bytes held of a frame not yet complete.  ``last_frame_bytes``: the
    wire size of the last complete text frame (the I/O shell sizes its reads with it).
    """

    def __init__(self, max_message_bytes: int, *, masked: bool) -> None:
        self.max_message_bytes = max_message_bytes
        self.masked = masked
        self.last_frame_bytes = 0
        self._buffer = bytearray()
        # the fragmented message being reassembled (None: none is)
        self._parts: list[str] | list[bytes] | None = None
        self._fragment_opcode = 0
        self._fragment_bytes = 0
        self._fragment_count = 0
        self._decoder: codecs.IncrementalDecoder | None = None

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
        masked = self.masked
        key_bytes = 4 if masked else 0
        while end - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            fast = b0 == 0x81 and self._parts is None  # one whole text frame: Twilio's every frame
            if not fast:
                self._check_header(b0, b1)
            length = b1 & 0x7F
            head = 2 + key_bytes
            if length == 126:
                if end - pos < 4:
                    break
                length, head = (buffer[pos + 2] << 8) | buffer[pos + 3], 4 + key_bytes
                if length < 126:
                    raise WebSocketError("a 16-bit length where 7 bits would do", 1002)
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = _long_length(buffer, pos), 10 + key_bytes
            if bool(b1 & 0x80) != masked:
                raise WebSocketError("a client frame must be masked" if masked
                                     else "a server frame must not be masked", 1002)
            if fast:
                if length > limit:
                    raise WebSocketError(f"a message over {limit} bytes (max_message_bytes)", 1009)
            elif b0 & 0x0F < 0x8:
                self._check_size(b0, length)
            frame_end = pos + head + length
            if frame_end > end:
                break
            payload = (unmask(buffer[pos + head:frame_end], buffer[pos + head - 4:pos + head]) if masked
                       else bytes(buffer[pos + head:frame_end]))
            if fast:
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

    def _check_header(self, b0: int, b1: int) -> None:
        """The violations a frame's first two bytes show (all 1002)."""
        opcode = b0 & 0x0F
        if opcode >= 0x8:
            if opcode > _OP_PONG:
                raise WebSocketError(f"unknown control opcode {opcode:#x}", 1002)
            if not b0 & 0x80 or b1 & 0x7F > 125:
                raise WebSocketError("a control frame must be whole and at most 125 bytes", 1002)
        elif opcode == _OP_CONTINUATION:
            if self._parts is None:
                raise WebSocketError("a continuation frame without a message to continue", 1002)
        elif opcode in (_OP_TEXT, _OP_BINARY):
            if self._parts is not None:
                raise WebSocketError("a new message before the previous one was finished", 1002)
        else:
            raise WebSocketError(f"unknown data opcode {opcode:#x}", 1002)
        if b0 & 0x70:
            raise WebSocketError("reserved bits set without a negotiated extension", 1002)

    def _check_size(self, b0: int, length: int) -> None:
        """A data frame must keep its message within ``max_message_bytes`` and
        ``MAX_FRAGMENTS`` (1009), judged before its payload is buffered."""
        continuing = not b0 & 0x0F
        size = (self._fragment_bytes if continuing else 0) + length
        if size > self.max_message_bytes:
            raise WebSocketError(f"a message over {self.max_message_bytes} bytes (max_message_bytes)", 1009)
        if continuing and self._fragment_count >= MAX_FRAGMENTS:
            raise WebSocketError(f"a message in over {MAX_FRAGMENTS} frames", 1009)

    def _frame(self, b0: int, payload: bytes) -> Message | None:
        """A complete frame whose header passed ``_check_header`` and ``_check_size``."""
        fin, opcode = b0 & 0x80, b0 & 0x0F
        if opcode >= 0x8:
            if opcode == _OP_CLOSE:
                return _close_received(payload)
            if opcode == _OP_PING:
                return Ping(payload)
            return Pong(payload)
        if opcode != _OP_CONTINUATION:
            self._parts, self._fragment_opcode = [], opcode
            self._fragment_bytes = self._fragment_count = 0
            self._decoder = _utf8_decoder() if opcode == _OP_TEXT else None
        parts = self._parts
        assert parts is not None  # _check_header refused a continuation of nothing
        self._fragment_bytes += len(payload)
        self._fragment_count += 1
        if self._decoder is not None:  # text: each fragment is checked as it comes
            try:
                parts.append(self._decoder.decode(payload, bool(fin)))  # type: ignore[arg-type]
            except UnicodeDecodeError:
                raise WebSocketError("a text message that is not UTF-8", 1007) from None
        else:
            parts.append(payload)  # type: ignore[arg-type]
        if not fin:
            return None
        self._parts, self._decoder = None, None
        self._fragment_bytes = self._fragment_count = 0
        if self._fragment_opcode == _OP_TEXT:
            return "".join(parts)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]


class ServerFrameReader(FrameReader):
    """The server's reader: client frames, which must be masked."""

    def __init__(self, max_message_bytes: int) -> None:
        super().__init__(max_message_bytes, masked=True)


class ClientFrameReader(FrameReader):
    """The client's reader: server frames, which must not be masked."""

    def __init__(self, max_message_bytes: int) -> None:
        super().__init__(max_message_bytes, masked=False)


_utf8_decoder = codecs.getincrementaldecoder("utf-8")


def _close_received(payload: bytes) -> CloseReceived:
    if not payload:
        return CloseReceived(1005, "")
    if len(payload) == 1:
        raise WebSocketError("a close frame with a 1-byte payload", 1002)
    code = int.from_bytes(payload[:2], "big")
    if code not in _PEER_CLOSE_CODES and not 3000 <= code <= 4999:
        raise WebSocketError(f"a close frame with code {code}, which a peer may not send", 1002)
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketError("a close reason that is not UTF-8", 1007) from None
    return CloseReceived(code, reason)


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


# ------------------------------------------------------------------ what a client sends


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One whole masked frame (RFC 6455 §5.3: every client frame is masked, with a fresh
    key from a strong source: ``os.urandom``, taken 4 KiB at a time)."""
    global _keys, _key_at
    if _key_at >= len(_keys):
        _keys, _key_at = os.urandom(4096), 0
    key = _keys[_key_at:_key_at + 4]
    _key_at += 4
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    return head + key + (unmask(payload, key) if n else b"")


_keys, _key_at = b"", 0


def _fresh_keys() -> None:
    global _keys, _key_at
    _keys, _key_at = b"", 0


os.register_at_fork(after_in_child=_fresh_keys)  # a forked worker must not reuse its parent's keys


def client_close_frame(code: int, reason: str = "") -> bytes:
    """A masked close frame; 1005 (no code received) is answered with an empty one,
    ``reason`` cut to fit a control frame."""
    if code == 1005:
        return client_frame(_OP_CLOSE, b"")
    text = reason.encode()[:123].decode("utf-8", "ignore").encode()
    return client_frame(_OP_CLOSE, code.to_bytes(2, "big") + text)
