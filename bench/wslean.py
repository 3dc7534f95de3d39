"""Just enough RFC 6455 for the load tools, over plain non-blocking sockets driven by trio.

The benchmark's own side (load generator, fake provider) must stay cheap, or it would
measure itself: no wsproto, no per-message objects, no locks.  What is here:

* ``client_handshake`` / ``read_handshake_request`` / ``accept_response``: the HTTP/1.1
  upgrade, both sides;
* ``frame_header`` / ``client_frame`` / ``server_frame``: unfragmented frames, built once;
* ``FrameReader``: incremental parsing of frames (masked or not, fragmented or not);
* ``send_all`` / ``recv_some``: non-blocking socket I/O that only parks the task when
  the kernel would block (no extra trio checkpoint on the fast path).

Client frames are masked with the all-zero key.  RFC 6455 requires client frames to be
masked (the server checks the bit and unmasks; wsproto does the same XOR work whatever
the key), but the key's randomness only defends HTTP proxies against cache poisoning,
which does not exist on loopback.  With the zero key a pre-built frame carries the
message bytes unchanged, so a media message is framed by prepending 8 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct

import trio

__all__ = [
    "GUID",
    "OP_CONT",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "HandshakeError",
    "accept_key",
    "client_handshake",
    "read_handshake_request",
    "accept_response",
    "http_response",
    "frame_header",
    "client_frame",
    "server_frame",
    "close_payload",
    "FrameReader",
    "send_all",
    "recv_some",
    "connect_tcp",
]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
ZERO_MASK = b"\x00\x00\x00\x00"
MAX_HEAD = 16 * 1024
RECV_SIZE = 256 * 1024


class HandshakeError(Exception):
    """The upgrade did not complete; ``status`` is the HTTP status when there was one."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.status = status


def accept_key(key: bytes | str) -> str:
    if isinstance(key, str):
        key = key.encode("ascii")
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode("ascii")


# ---------------------------------------------------------------------------- sockets


async def connect_tcp(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket (TCP_NODELAY, like trio and Hypercorn)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.connect((host, port))
    except BlockingIOError:
        await trio.lowlevel.wait_writable(sock)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            sock.close()
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


async def send_all(sock: socket.socket, data: bytes) -> None:
    """Write all of ``data``; parks only if the kernel's send buffer is full."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    while sent < len(data):
        await trio.lowlevel.wait_writable(sock)
        try:
            sent += sock.send(memoryview(data)[sent:])
        except BlockingIOError:
            pass


async def recv_some(sock: socket.socket, size: int = RECV_SIZE) -> bytes:
    """Whatever is readable (b"" at EOF); parks until something is."""
    while True:
        try:
            return sock.recv(size)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)


# --------------------------------------------------------------------------- handshake


async def client_handshake(sock: socket.socket, host: str, port: int, path: str,
                           headers: list[tuple[str, str]] = ()) -> bytes:  # type: ignore[assignment]
    """Send the upgrade request, read the response; returns bytes read past it."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in headers]
    await send_all(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await recv_some(sock)
        if not chunk:
            raise HandshakeError("connection closed during the handshake")
        buf += chunk
        if len(buf) > MAX_HEAD:
            raise HandshakeError("handshake response too large")
    head, _, rest = buf.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    if status != 101:
        raise HandshakeError(f"upgrade refused: {status_line!r}", status)
    fields = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if fields.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("bad Sec-WebSocket-Accept")
    return rest


async def read_handshake_request(sock: socket.socket) -> tuple[str, str, dict[str, str], bytes]:
    """(method, target, lower-cased headers, bytes read past the request)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await recv_some(sock)
        if not chunk:
            raise HandshakeError("connection closed during the handshake")
        buf += chunk
        if len(buf) > MAX_HEAD:
            raise HandshakeError("request head too large")
    head, _, rest = buf.partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _ = (request_line.split(" ", 2) + ["", ""])[:3]
    fields: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return method, target, fields, rest


def accept_response(key: str) -> bytes:
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n").encode("ascii")


def http_response(status: int, reason: str, body: bytes = b"", content_type: str = "text/plain") -> bytes:
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("ascii") + body


# ------------------------------------------------------------------------------ frames

_H2 = struct.Struct("!BB")
_H4 = struct.Struct("!BBH")
_H10 = struct.Struct("!BBQ")


def frame_header(opcode: int, length: int, masked: bool) -> bytes:
    """Header of one final (FIN) frame; a masked header ends with the zero key."""
    first = 0x80 | opcode
    bit = 0x80 if masked else 0
    if length < 126:
        head = _H2.pack(first, bit | length)
    elif length < 65536:
        head = _H4.pack(first, bit | 126, length)
    else:
        head = _H10.pack(first, bit | 127, length)
    return head + ZERO_MASK if masked else head


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked (zero key) client frame: the payload travels as is."""
    return frame_header(opcode, len(payload), True) + payload


def server_frame(opcode: int, payload: bytes) -> bytes:
    return frame_header(opcode, len(payload), False) + payload


def close_payload(code: int = 1000, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")


def _unmask(data: bytes, key: bytes) -> bytes:
    if key == ZERO_MASK or not data:
        return data
    n = len(data)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(n, "little")


class FrameReader:
    """Feed bytes, take complete messages: ``(opcode, payload)`` with continuation
    frames joined and masks removed.  Control frames come out as they arrive."""

    __slots__ = ("_buf", "_frag_op", "_frag", "max_message")

    def __init__(self, max_message: int = 16 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._frag_op: int | None = None
        self._frag: list[bytes] = []
        self.max_message = max_message

    def feed(self, data: bytes) -> None:
        self._buf += data

    def messages(self) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        buf = self._buf
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = 10
            if length > self.max_message:
                raise ValueError(f"frame of {length} bytes exceeds {self.max_message}")
            masked = b1 & 0x80
            if masked:
                head += 4
            if end - pos < head + length:
                break
            payload = bytes(buf[pos + head:pos + head + length])
            if masked:
                payload = _unmask(payload, bytes(buf[pos + head - 4:pos + head]))
            pos += head + length
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode >= 0x8:  # control frames are never fragmented
                out.append((opcode, payload))
            elif opcode == OP_CONT:
                self._frag.append(payload)
                if fin and self._frag_op is not None:
                    out.append((self._frag_op, b"".join(self._frag)))
                    self._frag_op, self._frag = None, []
            elif fin:
                out.append((opcode, payload))
            else:
                self._frag_op, self._frag = opcode, [payload]
        if pos:
            del buf[:pos]
        return out
