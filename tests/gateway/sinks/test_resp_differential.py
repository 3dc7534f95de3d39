"""Our RESP2 reply parser (gateway/sinks/resp.py) against hiredis, fed the same bytes.

Random valid replies (every RESP2 type, nil, nested arrays) and random garbage, fed whole
and cut at random points: after every piece both parsers must have produced the same
replies and agree on whether they now wait for more bytes or refuse the stream.

hiredis also speaks RESP3, whose extra type bytes (``_ , # ( = % ~ > | !``) a RESP2
server never sends; garbage leaves them out (they become ``?``), and a separate test
checks that we refuse them.
"""

from __future__ import annotations

import re

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sinks.resp import MAX_DEPTH, ReplyParser, RespError, RespProtocolError, bulk

DIFFERENTIAL = settings(max_examples=300, deadline=None)
RESP3_ONLY = b"_,#(=%~>|!"
NO_RESP3 = bytes.maketrans(RESP3_ONLY, b"?" * len(RESP3_ONLY))
#: hiredis allocates an announced array up front; a garbage count this long is not fed to it
HUGE_ARRAY = re.compile(rb"\*-?[0-9]{7,}")


def ours_value(value):
    if isinstance(value, RespError):
        return ("error", value.message)
    if isinstance(value, list):
        return [ours_value(v) for v in value]
    return value


def hiredis_value(value):
    if isinstance(value, hiredis.ReplyError):
        return ("error", str(value))
    if isinstance(value, list):
        return [hiredis_value(v) for v in value]
    return value


def drain_ours(parser: ReplyParser) -> tuple[list, str]:
    """Every whole reply now available, then why it stopped: "incomplete" or "refused".
    Any exception other than these two is a failure of the test."""
    replies = []
    while True:
        try:
            replies.append(ours_value(parser.next()))
        except LookupError:
            return replies, "incomplete"
        except RespProtocolError:
            return replies, "refused"


def drain_hiredis(reader: hiredis.Reader) -> tuple[list, str]:
    replies = []
    while True:
        try:
            reply = reader.gets()
        except hiredis.ProtocolError:
            return replies, "refused"
        if reply is False:
            return replies, "incomplete"
        replies.append(hiredis_value(reply))


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])] or [b""]


def fed_to_both(data: bytes, cuts: list[int]) -> tuple[list, list]:
    """Each parser's (replies, state) after every piece; a parser that refused gets no more."""
    ours, theirs = ReplyParser(), hiredis.Reader()
    ours_seen, theirs_seen = [], []
    ours_done = theirs_done = False
    for piece in pieces(data, cuts):
        if not ours_done:
            ours.feed(piece)
            ours_seen.append(drain_ours(ours))
            ours_done = ours_seen[-1][1] == "refused"
        if not theirs_done:
            theirs.feed(piece)
            theirs_seen.append(drain_hiredis(theirs))
            theirs_done = theirs_seen[-1][1] == "refused"
    return ours_seen, theirs_seen


line_text = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
leaves = st.one_of(
    line_text.map(lambda t: b"+" + t + b"\r\n"),
    line_text.map(lambda t: b"-" + t + b"\r\n"),
    st.integers(-(2**63), 2**63 - 1).map(lambda n: b":%d\r\n" % n),
    st.binary(max_size=40).map(bulk),  # may hold CR, LF, anything
    st.just(b"$-1\r\n"),
    st.just(b"*-1\r\n"),
    st.just(b"*0\r\n"),
)
replies = st.recursive(
    leaves, lambda inner: st.lists(inner, min_size=1, max_size=5).map(
        lambda items: b"*%d\r\n" % len(items) + b"".join(items)), max_leaves=25)
streams = st.lists(replies, min_size=1, max_size=4).map(b"".join)
cut_points = st.lists(st.integers(0, 600), max_size=15)


@DIFFERENTIAL
@given(data=streams, cuts=cut_points)
def test_valid_replies_read_the_same_whole_and_in_pieces(data, cuts):
    ours_seen, theirs_seen = fed_to_both(data, cuts)
    assert ours_seen == theirs_seen
    # and every reply came out, nothing refused
    assert ours_seen[-1][1] == "incomplete" and all(state == "incomplete" for _, state in ours_seen)


@st.composite
def mutated(draw) -> bytes:
    """A valid stream with a few bytes replaced, inserted or removed."""
    data = bytearray(draw(streams))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.sampled_from(b"\r\n*$:+-0123456789 ax\xff"))
        if edit == "insert" or at == len(data):
            data[at:at] = bytes([byte])
        elif edit == "replace":
            data[at] = byte
        else:
            del data[at]
    return bytes(data)


resp_ish = st.lists(st.sampled_from([b"*", b"$", b":", b"+", b"-", b"\r\n", b"\r", b"\n", b"-1", b"0", b"1", b"2",
                                     b"3", b"12", b"00", b"a", b" ", b"\xff"]), max_size=40).map(b"".join)
garbage = st.one_of(st.binary(max_size=200), mutated(), resp_ish).map(lambda b: b.translate(NO_RESP3))


@DIFFERENTIAL
@given(data=garbage, cuts=cut_points)
def test_garbage_is_refused_or_awaited_alike_and_only_with_our_typed_error(data, cuts):
    if HUGE_ARRAY.search(data):
        # only ours: it never allocates for a count, and still ends in one of its two states
        parser = ReplyParser()
        for piece in pieces(data, cuts):
            parser.feed(piece)
            drain_ours(parser)
        return
    ours_seen, theirs_seen = fed_to_both(data, cuts)
    assert ours_seen == theirs_seen


def nesting(value) -> tuple[int, object]:
    """How many one-element arrays wrap the innermost value (walked without recursion)."""
    depth = 0
    while isinstance(value, list) and len(value) == 1:
        value, depth = value[0], depth + 1
    return depth, value


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 50_000])
def test_deep_nesting_is_read_or_refused_at_the_same_depth_without_recursion(depth):
    data = b"*1\r\n" * depth + b":1\r\n"
    outcomes = []
    for parser, read, refused in ((ReplyParser(), ReplyParser.next, RespProtocolError),
                                  (hiredis.Reader(), hiredis.Reader.gets, hiredis.ProtocolError)):
        try:
            parser.feed(data[:len(data) // 2])
            try:
                first = read(parser)
            except LookupError:
                first = False
            parser.feed(data[len(data) // 2:])
            outcomes.append((first, nesting(read(parser))))
        except refused:
            outcomes.append("refused")
    expected = (False, (depth, 1)) if depth <= MAX_DEPTH else "refused"
    assert outcomes == [expected, expected]


@pytest.mark.parametrize("reply", [b"_\r\n", b",1.5\r\n", b"#t\r\n", b"(123\r\n", b"=5\r\ntxt:a\r\n",
                                   b"%0\r\n", b"~0\r\n", b">0\r\n", b"|0\r\n", b"!3\r\nerr\r\n"])
def test_resp3_types_are_refused_by_our_resp2_parser(reply):
    parser = ReplyParser()
    parser.feed(reply[:1])  # refused at the type byte, without waiting for the line
    with pytest.raises(RespProtocolError, match="not RESP2: type byte"):
        parser.next()
