"""The RESP2 pieces of the Redis sink: replies fed whole and byte by byte."""

from __future__ import annotations

import pytest

from gateway.sinks.resp import ReplyParser, RespError, RespProtocolError, encode_command

REPLIES = [
    (b"+OK\r\n", b"OK"),
    (b"$15\r\n1700000000000-0\r\n", b"1700000000000-0"),
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b":42\r\n", 42),
    (b"*2\r\n$1\r\na\r\n:7\r\n", [b"a", 7]),
    (b"*-1\r\n", None),
    (b"$4\r\na\r\nb\r\n", b"a\r\nb"),  # a bulk string may hold CRLF
]


def test_encode_command_is_an_array_of_bulk_strings():
    assert encode_command("XADD", b"s", 5) == b"*3\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n5\r\n"


@pytest.mark.parametrize(("wire", "value"), REPLIES)
def test_reply_fed_whole_and_byte_by_byte(wire, value):
    whole = ReplyParser()
    whole.feed(wire)
    assert whole.next() == value
    pieces = ReplyParser()
    for i in range(len(wire)):
        with pytest.raises(LookupError):
            pieces.next()
        pieces.feed(wire[i:i + 1])
    assert pieces.next() == value


def test_replies_of_a_pipeline_come_out_in_order_and_errors_are_values():
    parser = ReplyParser()
    parser.feed(b"$3\r\n1-0\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n$3\r\n1-1\r\n")
    first, error, last = parser.next(), parser.next(), parser.next()
    assert (first, last) == (b"1-0", b"1-1")
    assert isinstance(error, RespError) and error.message.startswith("WRONGTYPE")
    with pytest.raises(LookupError):
        parser.next()


@pytest.mark.parametrize("wire", [b"HTTP/1.1 400 Bad Request\r\n", b"\r\n", b":x\r\n"])
def test_what_is_not_resp_is_a_protocol_error(wire):
    parser = ReplyParser()
    parser.feed(wire)
    with pytest.raises(RespProtocolError):
        parser.next()
