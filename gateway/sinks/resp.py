"""The few pieces of RESP2 (the Redis protocol) the stream sink needs: commands out,
replies in.  Sans-I/O: bytes in, values out; ``RespConnection`` is the thin trio shell.

The sink's hot path is one pipelined ``XADD`` per event; a general client spends far more
CPU per round trip than the write itself (see bench/RESULTS.md, "Sinks").
"""

from __future__ import annotations

import re
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


#: arrays nested deeper than this are refused (as hiredis does): a reply is parsed without
#: recursion, so depth costs no stack, but no Redis reply the sink reads comes near it
MAX_DEPTH = 1024
#: the most elements an array may announce (hiredis's limit)
MAX_ARRAY = 2**32 - 1
_INT64 = (-(2**63), 2**63 - 1)
#: an integer as Redis writes one: no sign other than ``-``, no leading zero, no ``-0``
_INTEGER = re.compile(rb"-?[1-9][0-9]*|0")
_TYPES = frozenset(b"+-:$*")


def _integer(line: bytes, what: str) -> int:
    if not _INTEGER.fullmatch(line[1:]):
        raise RespProtocolError(f"bad {what} in {line[:40]!r}")
    number = int(line[1:])
    if not _INT64[0] <= number <= _INT64[1]:
        raise RespProtocolError(f"{what} out of the 64-bit range in {line[:40]!r}")
    return number


class ReplyParser:
    """Feed bytes with ``feed``; ``next()`` returns one whole reply or raises
    ``LookupError`` until enough bytes came, or ``RespProtocolError`` for bytes that are
    not RESP2 (then again at every call: the connection is unusable).

    What is accepted and refused is what hiredis accepts and refuses for RESP2
    (tests/gateway/sinks/test_resp_differential.py): strict integers and lengths, no CR or LF inside a
    simple string or error, nil only as ``$-1``/``*-1``.  An unknown type byte is refused
    as soon as it arrives, without waiting for its line."""

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
        # Iterative: each open array is (its items, how many it announced).
        open_arrays: list[tuple[list[Reply], int]] = []
        buffer = self._buffer
        while True:
            if pos >= len(buffer):
                raise LookupError("incomplete")
            kind = buffer[pos]
            if kind not in _TYPES:
                raise RespProtocolError(f"not RESP2: type byte {bytes([kind])!r}")
            if kind == 0x2A and len(open_arrays) >= MAX_DEPTH:  # "*"
                raise RespProtocolError(f"arrays nested deeper than {MAX_DEPTH}")
            line, pos = self._line(pos)
            value: Reply
            if kind in (0x2B, 0x2D):  # "+", "-"
                rest = line[1:]
                if b"\r" in rest or b"\n" in rest:
                    raise RespProtocolError(f"CR or LF inside a simple string or error: {line[:40]!r}")
                value = rest if kind == 0x2B else RespError(rest.decode("utf-8", "replace"))
            elif kind == 0x3A:  # ":"
                value = _integer(line, "integer")
            elif kind == 0x24:  # "$"
                length = _integer(line, "bulk string length")
                if length == -1:
                    value = None
                elif length < 0:
                    raise RespProtocolError(f"bulk string length out of range: {line[:40]!r}")
                else:
                    if len(buffer) < pos + length + 2:
                        raise LookupError("incomplete")
                    value = bytes(buffer[pos:pos + length])
                    pos += length + 2
            else:  # "*"
                count = _integer(line, "array length")
                if count < -1 or count > MAX_ARRAY:
                    raise RespProtocolError(f"array length out of range: {line[:40]!r}")
                if count > 0:
                    open_arrays.append(([], count))
                    continue
                value = None if count == -1 else []
            while open_arrays:
                items, count = open_arrays[-1]
                items.append(value)
                if len(items) < count:
                    break
                open_arrays.pop()
                value = items
            else:
                return value, pos


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
