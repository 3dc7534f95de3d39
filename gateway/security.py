"""Is this request from Twilio?  ``X-Twilio-Signature``, sans I/O.

Twilio signs every webhook and the Media Streams WebSocket upgrade with its auth token
(reference §4)::

    signature = base64(HMAC-SHA1(auth_token, url + name1 + value1 + name2 + value2 ...))

``url`` is the URL Twilio requested, exactly (scheme, host, path, raw query); the
parameters are the form fields of a POST, sorted by name (code-point order), decoded.
GET requests and the WebSocket upgrade sign the URL alone; the upgrade's URL is the
``wss://`` URL our TwiML wrote.  JSON bodies sign the URL alone too, and the URL carries
``bodySHA256`` = hex SHA-256 of the raw body.

Behind a proxy or tunnel the URL this process sees is not the one Twilio signed, so
``public_request_url`` rebuilds it: from ``--public-url`` when configured (the only
reliable way), else from ``X-Forwarded-Proto``/``X-Forwarded-Host``, else ``Host``.

Like Twilio's own validators, a signature is accepted for the URL without its port and
with the scheme's default port (Twilio drops ports from HTTPS URLs before signing), and a
WebSocket upgrade also for the URL with a trailing ``/`` (Twilio's documented retry).
Comparisons are constant-time.  Nothing here logs; nothing here ever renders the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import attrs
import orjson

__all__ = [
    "SIGNATURE_HEADER",
    "Params",
    "TwilioSignatureValidator",
    "SignatureCheck",
    "body_sha256",
    "check_request",
    "compute_signature",
    "header_value",
    "public_origin",
    "public_request_url",
    "request_params",
    "signing_string",
    "url_variants",
]

SIGNATURE_HEADER: Final = "X-Twilio-Signature"
_SIGNATURE_HEADER_KEY: Final = SIGNATURE_HEADER.lower().encode()
_DEFAULT_PORTS: Final = {"https": 443, "wss": 443, "http": 80, "ws": 80}
_WS_SCHEMES: Final = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}
_HTTP_SCHEMES: Final = {"https": "https", "wss": "https", "http": "http", "ws": "http"}

#: Request parameters: (name, value) pairs in arrival order; a name may repeat.
Params = Sequence[tuple[str, str]]
Headers = Iterable[tuple[bytes, bytes]]


# ------------------------------------------------------------------------ the algorithm


def signing_string(url: str, params: Params | Mapping[str, str] = ()) -> str:
    """``url`` followed by ``name + value`` for every parameter, names sorted by code
    point; the values of a repeated name sorted and de-duplicated (as twilio-python)."""
    pairs = params.items() if isinstance(params, Mapping) else params
    grouped: dict[str, set[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, set()).add(value)
    parts = [url]
    for name in sorted(grouped):
        for value in sorted(grouped[name]):
            parts.append(name)
            parts.append(value)
    return "".join(parts)


def compute_signature(auth_token: str, url: str, params: Params | Mapping[str, str] = (),
                      *, algorithm: str = "sha1") -> str:
    """The ``X-Twilio-Signature`` Twilio would send for ``url`` and ``params``.
    ``algorithm="sha256"``: Twilio's shared-key beta (same string, HMAC-SHA256)."""
    digest = hmac.new(auth_token.encode(), _utf8(signing_string(url, params)), algorithm).digest()
    return base64.b64encode(digest).decode("ascii")


def body_sha256(body: bytes) -> str:
    """Lowercase hex SHA-256 of a raw body: the ``bodySHA256`` query value of JSON webhooks."""
    return hashlib.sha256(body).hexdigest()


def url_variants(url: str, *, trailing_slash: bool = False) -> tuple[str, ...]:
    """The URLs a signature may cover: without a port and with the scheme's default (or
    the explicit) port; with ``trailing_slash`` also each with ``/`` appended to the path."""
    parts = urlsplit(url)
    host, port = _split_host_port(parts.netloc.rpartition("@")[2])
    port = port or str(_DEFAULT_PORTS.get(parts.scheme.lower(), 80))
    variants = [urlunsplit(parts._replace(netloc=host)),
                urlunsplit(parts._replace(netloc=f"{host}:{port}"))]
    if trailing_slash:
        for variant in list(variants):
            slashed = urlsplit(variant)
            if not slashed.path.endswith("/"):
                variants.append(urlunsplit(slashed._replace(path=slashed.path + "/")))
    return tuple(dict.fromkeys(variants))


def _split_host_port(hostport: str) -> tuple[str, str | None]:
    if hostport.startswith("["):  # IPv6 literal
        host, _, rest = hostport.partition("]")
        port = rest[1:] if rest.startswith(":") else None
        return host + "]", port or None
    host, sep, port = hostport.rpartition(":")
    if sep and port.isdigit():
        return host, port
    return hostport, None


def _utf8(text: str) -> bytes:
    # Raw bytes of a URL that were not UTF-8 travel as surrogates and go back unchanged.
    return text.encode("utf-8", "surrogateescape")


class TwilioSignatureValidator:
    """Checks ``X-Twilio-Signature`` values against one auth token.  Its ``repr``
    never shows the token."""

    __slots__ = ("_key",)

    def __init__(self, auth_token: str) -> None:
        if not auth_token:
            raise ValueError("an auth token is required")
        self._key = auth_token.encode()

    def __repr__(self) -> str:
        return "TwilioSignatureValidator(auth_token=<hidden>)"

    def _matches(self, urls: Iterable[str], params: Params | Mapping[str, str], signature: bytes) -> bool:
        matched = False
        for url in urls:
            digest = hmac.new(self._key, _utf8(signing_string(url, params)), "sha1").digest()
            # every variant is compared, in constant time each
            matched |= hmac.compare_digest(base64.b64encode(digest), signature)
        return matched

    def validate(self, url: str, params: Params | Mapping[str, str], signature: str | bytes) -> bool:
        """A form POST (``params``: its decoded fields) or a GET (``params`` empty, the
        query in ``url``)."""
        return self._matches(url_variants(url), params, _as_bytes(signature))

    def validate_json(self, url: str, body: bytes, signature: str | bytes) -> bool:
        """A JSON POST: ``url`` must carry ``bodySHA256`` equal to the body's hash, and
        the signature covers the URL alone."""
        claimed = [value for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True)
                   if name == "bodySHA256"]
        if len(claimed) != 1:
            return False
        body_ok = hmac.compare_digest(body_sha256(body).encode(), claimed[0].encode("utf-8", "replace"))
        return self._matches(url_variants(url), (), _as_bytes(signature)) and body_ok

    def validate_websocket(self, url: str, signature: str | bytes) -> bool:
        """A Media Streams upgrade: ``url`` is the ``wss://`` URL the TwiML gave Twilio."""
        return self._matches(url_variants(url, trailing_slash=True), (), _as_bytes(signature))


def _as_bytes(signature: str | bytes) -> bytes:
    return signature if isinstance(signature, bytes) else signature.encode("utf-8", "replace")


# ------------------------------------------------------------------- requests (ASGI)


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lowercase bytes) in ASGI headers."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _first_token(value: bytes | None) -> str:
    """The first comma-separated entry of a (possibly proxy-appended) header."""
    return value.decode("latin-1").split(",")[0].strip() if value else ""


def public_origin(scope: Mapping[str, Any], public_url: str | None, *, websocket: bool) -> str:
    """``scheme://host[:port][/prefix]`` that Twilio reaches this gateway at, for the
    request in ``scope``: ``public_url`` when set; else ``X-Forwarded-Proto`` +
    ``X-Forwarded-Host`` (first values), falling back to the connection's scheme and the
    ``Host`` header.  ``websocket`` maps the scheme to ``ws``/``wss`` (ngrok forwards an
    upgrade as ``X-Forwarded-Proto: https``), else to ``http``/``https``."""
    headers = scope.get("headers") or []
    if public_url:
        scheme, _, rest = public_url.partition("://")
        host, slash, prefix = rest.partition("/")
        prefix = (slash + prefix).rstrip("/")
    else:
        scheme = (_first_token(header_value(headers, b"x-forwarded-proto")).lower()
                  or str(scope.get("scheme") or "http"))
        host = (_first_token(header_value(headers, b"x-forwarded-host"))
                or _first_token(header_value(headers, b"host")) or _server_host(scope))
        prefix = ""
    scheme = (_WS_SCHEMES if websocket else _HTTP_SCHEMES).get(scheme, scheme)
    return f"{scheme}://{host}{prefix}"


def public_request_url(scope: Mapping[str, Any], public_url: str | None) -> str:
    """The URL Twilio requested, rebuilt from an ASGI ``http``/``websocket`` scope:
    ``public_origin`` + the raw path + the raw query, exactly as received."""
    origin = public_origin(scope, public_url, websocket=scope["type"] == "websocket")
    raw_path = scope.get("raw_path") or str(scope.get("path", "/")).encode()
    path = raw_path.decode("utf-8", "surrogateescape")
    query = (scope.get("query_string") or b"").decode("utf-8", "surrogateescape")
    return f"{origin}{path}" + (f"?{query}" if query else "")


def _server_host(scope: Mapping[str, Any]) -> str:
    server = scope.get("server")
    if not server:
        return "localhost"
    host, port = server[0], server[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _content_type(headers: Headers) -> str:
    raw = header_value(headers, b"content-type") or b""
    return raw.decode("latin-1").split(";")[0].strip().lower()


def request_params(scope: Mapping[str, Any], body: bytes) -> list[tuple[str, str]]:
    """A webhook's fields: the form fields of a form POST, read from the raw body (blank
    values kept, order kept); the query fields of a GET; the string members of a JSON
    object body; none otherwise."""
    if scope.get("method", "GET") == "GET":
        return parse_qsl((scope.get("query_string") or b"").decode("latin-1"), keep_blank_values=True)
    content_type = _content_type(scope.get("headers") or [])
    if content_type == "application/x-www-form-urlencoded":
        return parse_qsl(body.decode("latin-1"), keep_blank_values=True)
    if content_type == "application/json":
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return []
        if isinstance(document, dict):
            return [(name, value) for name, value in document.items() if isinstance(value, str)]
    return []


@attrs.frozen
class SignatureCheck:
    """The verdict on one request.  ``refusal``: None when the signature is valid, else
    why not, for the log (never the signature or the token).  ``url``: the URL checked."""

    url: str
    refusal: str | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None


def check_request(validator: TwilioSignatureValidator, scope: Mapping[str, Any], body: bytes,
                  public_url: str | None) -> SignatureCheck:
    """Validate an ASGI request (webhook or WebSocket upgrade, ``body`` empty for the
    latter) the way its kind is signed."""
    url = public_request_url(scope, public_url)
    headers = scope.get("headers") or []
    signature = header_value(headers, _SIGNATURE_HEADER_KEY)
    if not signature:
        return SignatureCheck(url, f"no {SIGNATURE_HEADER} header")
    if scope["type"] == "websocket":
        valid = validator.validate_websocket(url, signature)
    elif scope.get("method") != "GET" and _content_type(headers) == "application/json":
        if "bodySHA256=" not in url:
            return SignatureCheck(url, "a JSON body without bodySHA256 in the URL")
        valid = validator.validate_json(url, body, signature)
    elif scope.get("method") == "GET":  # the fields are in the URL's query
        valid = validator.validate(url, (), signature)
    else:
        valid = validator.validate(url, request_params(scope, body), signature)
    if valid:
        return SignatureCheck(url)
    hint = "" if public_url else " (behind a proxy or tunnel? set --public-url)"
    return SignatureCheck(url, f"{SIGNATURE_HEADER} does not match {url}{hint}")

