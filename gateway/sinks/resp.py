"""The few pieces of RESP2 (the Redis protocol) the stream sink needs: commands out,
replies in.  Sans-I/O: bytes in, values out; ``RespConnection`` is the thin trio shell.

The sink's hot path is one pipelined ``XADD`` per event; a general client spends far more
CPU per round trip than the write itself (see bench/RESULTS.md, "Sinks").
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

import trio

__all__ = ["RespError", "RespProtocolError", "bulk", "encode_command", "ReplyParser", "RespConnection"]

class RespError:
    """An error reply (``-ERR …``): a value in a pipeline's replies, raised by the caller
    that decides what it means."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"RespError({self.message!r})"


#: a reply: simple/bulk string (bytes), integer, nil (None), array (list), or an error
Reply = bytes | int | None | list[Any] | RespError


class RespProtocolError(Exception):
    """The server sent something that is not RESP2."""


def bulk(value: bytes | str | int) -> bytes:
    raw = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def encode_command(*parts: bytes | str | int) -> bytes:
    """``*N`` array of bulk strings: how every command goes to Redis."""
    return b"*%d\r\n" % len(parts) + b"".join(bulk(p) for p in parts)


class ReplyParser:
    """Feed bytes with ``feed``; ``next()`` returns one whole reply or raises
    ``LookupError`` until enough bytes came."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buffer[:self._pos]
            self._pos = 0
        self._buffer += data

    def next(self) -> Reply:
        value, end = self._parse(self._pos)
        self._pos = end
        return value

    def _line(self, pos: int) -> tuple[bytes, int]:
        end = self._buffer.find(b"\r\n", pos)
        if end < 0:
            raise LookupError("incomplete")
        return bytes(self._buffer[pos:end]), end + 2

    def _parse(self, pos: int) -> tuple[Reply, int]:
        line, pos = self._line(pos)
        if not line:
            raise RespProtocolError("empty reply line")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest, pos
        if kind == b"-":
            return RespError(rest.decode("utf-8", "replace")), pos
        try:
            number = int(rest)
        except ValueError:
            raise RespProtocolError(f"not RESP2: {line[:40]!r}") from None
        if kind == b":":
            return number, pos
        if kind == b"$":
            if number < 0:
                return None, pos
            if len(self._buffer) < pos + number + 2:
                raise LookupError("incomplete")
            return bytes(self._buffer[pos:pos + number]), pos + number + 2
        if kind == b"*":
            if number < 0:
                return None, pos
            items: list[Reply] = []
            for _ in range(number):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        raise RespProtocolError(f"not RESP2: {line[:40]!r}")


class RespConnection:
    """One connection: ``pipeline`` sends commands in one write and reads as many
    replies.  Raises ``OSError``/``trio.BrokenResourceError`` and ``EOFError`` when the
    connection is lost; the caller reconnects."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._parser = ReplyParser()

    @classmethod
    async def open(cls, host: str, port: int, *, tls: ssl.SSLContext | None = None) -> RespConnection:
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        if tls is not None:
            stream = trio.SSLStream(stream, tls, server_hostname=host)
            await stream.do_handshake()
        return cls(stream)

    async def pipeline(self, commands: Sequence[bytes]) -> list[Reply]:
        await self._stream.send_all(b"".join(commands))
        replies: list[Reply] = []
        while len(replies) < len(commands):
            try:
                replies.append(self._parser.next())
            except LookupError:
                data = await self._stream.receive_some(65536)
                if not data:
                    raise EOFError("Redis closed the connection") from None
                self._parser.feed(data)
        return replies

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)
