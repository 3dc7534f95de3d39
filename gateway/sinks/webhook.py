"""``webhook:URL``: each batch of events POSTed as one JSON array.

The request: ``POST URL`` with ``Content-Type: application/json`` and a body that is a JSON
array of the batch's events in order (each event exactly as the JSONL sink writes it, so
one call's events arrive in ``seq`` order).  With ``EARPIECE_WEBHOOK_SECRET`` set, the
header ``X-Earpiece-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with the
secret>`` lets the receiver check the body came from us; **without it no signature header
is sent** (a warning says so at start).  The secret never appears in logs, errors or
``name`` (``name`` also leaves out the URL's user info and query, where tokens live).

Delivery: a 2xx answer delivers the batch.  Network errors, timeouts (``timeout`` seconds
for the whole attempt), 5xx, 408 and 429 are retried with jittered exponential backoff,
or after ``Retry-After`` (seconds or an HTTP date) when the answer has one, capped at
``retry_after_cap``; after ``max_attempts`` attempts the batch is given up
(``SinkDeliveryError``).  Any other answer — 3xx included, since redirects are not
followed — gives the batch up at once: retrying would not change it.  A receiver should
drop repeats by ``(call_sid, seq)``: a batch whose answer was lost is sent again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import orjson
import trio

from actors.backoff import Backoff

from .base import Event, SinkDeliveryError, SinkSpec, SinkSpecError

__all__ = ["WebhookWriter", "from_spec", "sign", "retry_after_seconds", "SIGNATURE_HEADER", "SECRET_ENV"]

log = logging.getLogger("earpiece.sinks.webhook")

SIGNATURE_HEADER = "X-Earpiece-Signature"
SECRET_ENV = "EARPIECE_WEBHOOK_SECRET"
#: seconds for one attempt, connect to last byte of the answer
TIMEOUT = 10.0
#: attempts at one batch before it is given up (with the backoff: about 2 minutes)
MAX_ATTEMPTS = 8
#: the longest ``Retry-After`` honoured; a longer one waits this long
RETRY_AFTER_CAP = 60.0
#: the part of an answer's body we read (to keep the connection); the rest is not waited for
MAX_ANSWER_BYTES = 64 * 1024
RETRY_STATUSES = frozenset({408, 429})


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Earpiece-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` (delta-seconds or an HTTP date) as seconds from ``now``; ``None``
    when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def encode_batch(events: Sequence[Event]) -> bytes:
    return b"[" + b",".join(orjson.dumps(event) for event in events) + b"]"


class _Retry(Exception):
    """One attempt failed in a way worth another (``after``: the server's Retry-After)."""

    def __init__(self, why: str, after: float | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.after = after


class WebhookWriter:
    """The ``webhook:`` writer.  The HTTP client is created on the first ``write()``."""

    def __init__(self, url: str, *, secret: str | None = None, timeout: float = TIMEOUT,
                 max_attempts: int = MAX_ATTEMPTS, backoff: Backoff | None = None,
                 retry_after_cap: float = RETRY_AFTER_CAP) -> None:
        self.url = url
        self.name = f"webhook:{shown_url(url)}"
        self.signed = bool(secret)
        self._secret = secret.encode() if secret else None
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._retry_after_cap = retry_after_cap
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"WebhookWriter({self.name!r}, signed={self.signed})"

    async def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        body = encode_batch(events)
        headers = {"Content-Type": "application/json"}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, timeout=self._timeout,
                                             headers={"User-Agent": "earpiece-webhook"})
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._attempt(body, headers)
                return
            except _Retry as retry:
                if attempt == self._max_attempts:
                    raise SinkDeliveryError(f"{self.name}: gave up on {len(events)} events after {attempt} "
                                            f"attempts: {retry.why}") from None
                delay = self._backoff.delay(attempt) if retry.after is None else min(retry.after,
                                                                                     self._retry_after_cap)
                log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", self.name, retry.why, delay, attempt,
                            self._max_attempts)
                await trio.sleep(delay)

    async def _attempt(self, body: bytes, headers: Mapping[str, str]) -> None:
        assert self._client is not None
        try:
            # httpx's timeout is per read/write; this bounds the whole attempt.
            with trio.fail_after(self._timeout):
                async with self._client.stream("POST", self.url, content=body, headers=headers) as answer:
                    read = 0
                    async for chunk in answer.aiter_raw():
                        read += len(chunk)
                        if read > MAX_ANSWER_BYTES:
                            break
        except trio.TooSlowError:
            raise _Retry(f"no answer within {self._timeout:g} s") from None
        except httpx.TransportError as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        status = answer.status_code
        if 200 <= status < 300:
            return
        if status >= 500 or status in RETRY_STATUSES:
            after = retry_after_seconds(answer.headers.get("Retry-After"), datetime.now(UTC))
            raise _Retry(f"HTTP {status}", after)
        hint = " (redirects are not followed: use the final URL)" if 300 <= status < 400 else ""
        raise SinkDeliveryError(f"{self.name}: answered HTTP {status}{hint}; not retried")

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def shown_url(url: str) -> str:
    """``scheme://host[:port]/path``: no user info, query or fragment (where tokens hide)."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


def from_spec(spec: SinkSpec, env: Mapping[str, str]) -> WebhookWriter:
    """``webhook:URL`` → a writer (``SinkSpecError`` unless URL is ``http(s)://host…``).
    The secret comes from ``EARPIECE_WEBHOOK_SECRET`` in ``env``; unset or empty: unsigned."""
    url = spec.target.strip()
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise SinkSpecError(f"bad sink {spec.kind}: {exc}; expected webhook:https://host/path") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SinkSpecError(f"bad sink webhook:{shown_url(url) if parsed.host else url.split('?')[0]!s}: "
                            "expected webhook:https://host[:port]/path (or http://)")
    # httpx logs every request at INFO with its full URL, query tokens included: ours say
    # what matters without them.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
    secret = env.get(SECRET_ENV) or None
    writer = WebhookWriter(url, secret=secret)
    if secret is None:
        log.warning("%s: %s is not set: POSTs carry no %s, so the receiver cannot tell them from forgeries",
                    writer.name, SECRET_ENV, SIGNATURE_HEADER)
    return writer
