"""TwiML for the voice webhook: build ``<Connect><Stream>`` / ``<Reject>``, and parse them back.

The builders are what the gateway answers Twilio with; the parser is what the
simulator (playing Twilio) does with that answer.  Pure functions, no I/O.
"""

from __future__ import annotations

import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Final
from xml.sax.saxutils import escape

import attrs

__all__ = [
    "CallRejected",
    "ConnectStream",
    "connect_stream_twiml",
    "parse_connect_stream",
    "reject_twiml",
]

XML_DECLARATION: Final = '<?xml version="1.0" encoding="UTF-8"?>'
REJECT_REASONS: Final = frozenset({"busy", "rejected"})
#: Twilio: for each <Parameter>, len(name) + len(value) must be under 500.
MAX_PARAMETER_CHARS: Final = 500

# Characters an XML parser would otherwise normalise away inside an attribute.
_ATTRIBUTE_ENTITIES: Final = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


# Characters XML 1.0 cannot carry at all, not even escaped.
_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _attr(name: str, value: str) -> str:
    bad = _NOT_XML.search(value)
    if bad is not None:
        raise ValueError(f"{name}={value!r}: {bad.group()!r} cannot appear in XML")
    return f'{name}="{escape(value, _ATTRIBUTE_ENTITIES)}"'


def connect_stream_twiml(
    stream_url: str,
    parameters: Mapping[str, str],
    status_callback: str | None = None,
) -> str:
    """``<Response><Connect><Stream url=…>`` with one ``<Parameter>`` per item, XML-escaped.

    Raises ``ValueError`` for a parameter Twilio would refuse (name + value of
    500 characters or more) and for characters XML cannot carry (most C0
    controls), rather than answer Twilio with a malformed document.
    """
    stream_attrs = [_attr("url", stream_url)]
    if status_callback is not None:
        stream_attrs.append(_attr("statusCallback", status_callback))
    parts = [XML_DECLARATION, "<Response><Connect><Stream ", " ".join(stream_attrs), ">"]
    for name, value in parameters.items():
        _check_parameter(name, value)
        parts.append(f"<Parameter {_attr('name', name)} {_attr('value', value)}/>")
    parts.append("</Stream></Connect></Response>")
    return "".join(parts)


def reject_twiml(reason: str = "busy") -> str:
    """``<Response><Reject reason=…/></Response>``: refuse the call unanswered (not billed)."""
    if reason not in REJECT_REASONS:
        raise ValueError(f"<Reject> reason must be one of {sorted(REJECT_REASONS)}, not {reason!r}")
    return f'{XML_DECLARATION}<Response><Reject reason="{reason}"/></Response>'


@attrs.frozen
class ConnectStream:
    """What a ``<Connect><Stream>`` tells Twilio: where to stream and what to pass along."""

    url: str
    parameters: dict[str, str] = attrs.field(factory=dict)
    status_callback: str | None = None


class CallRejected(ValueError):
    """The TwiML refuses the call with ``<Reject>`` (as a full gateway does)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"call rejected by TwiML <Reject reason={reason!r}>")
        self.reason = reason


def parse_connect_stream(twiml: str, *, require_wss: bool = False) -> ConnectStream:
    """Read the ``<Connect><Stream>`` out of a TwiML document, checking it as Twilio would.

    Raises ``CallRejected`` when the first verb is ``<Reject>``, and
    ``ValueError`` with the reason when the document is not TwiML, has no
    ``<Connect><Stream>``, or the stream is one Twilio refuses: a ``url`` that
    is not an absolute ``ws(s)://`` URL (``wss://`` only with ``require_wss``;
    loopback tests use ``ws://``), a query string in the ``url``, a ``track``
    other than ``inbound_track``, a ``<Parameter>`` without a name or whose
    name + value reach 500 characters.
    """
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise ValueError(f"TwiML is not well-formed XML: {exc}") from exc
    if root.tag != "Response":
        raise ValueError(f"TwiML root element must be <Response>, not <{root.tag}>")
    verbs = list(root)
    if verbs and verbs[0].tag == "Reject":
        raise CallRejected(verbs[0].get("reason", "rejected"))
    connect = root.find("Connect")
    stream = connect.find("Stream") if connect is not None else None
    if stream is None:
        found = ", ".join(f"<{verb.tag}>" for verb in verbs) or "nothing"
        raise ValueError(f"TwiML has no <Connect><Stream> (found {found})")

    url = stream.get("url")
    if not url:
        raise ValueError("<Stream> has no url attribute")
    _check_stream_url(url, require_wss=require_wss)
    track = stream.get("track", "inbound_track")
    if track != "inbound_track":
        raise ValueError(f"<Connect><Stream> only supports track='inbound_track', not {track!r}")

    parameters: dict[str, str] = {}
    for parameter in stream.findall("Parameter"):
        name = parameter.get("name")
        if not name:
            raise ValueError("<Parameter> has no name attribute")
        value = parameter.get("value", "")
        _check_parameter(name, value)
        parameters[name] = value
    return ConnectStream(url, parameters, stream.get("statusCallback"))


def _check_parameter(name: str, value: str) -> None:
    if len(name) + len(value) >= MAX_PARAMETER_CHARS:
        raise ValueError(
            f"<Parameter name={name[:40]!r}>: name + value must be under "
            f"{MAX_PARAMETER_CHARS} characters, got {len(name) + len(value)}"
        )


def _check_stream_url(url: str, *, require_wss: bool) -> None:
    parts = urllib.parse.urlsplit(url)
    allowed = ("wss",) if require_wss else ("ws", "wss")
    if parts.scheme not in allowed or not parts.netloc:
        raise ValueError(f"<Stream url={url!r}> must be an absolute {' or '.join(allowed)}:// URL")
    if parts.query:
        raise ValueError(f"<Stream url={url!r}>: Twilio does not support query strings; use <Parameter>")
