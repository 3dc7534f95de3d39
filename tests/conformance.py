"""What every STT codec must do, stated once.  Vendor modules contribute ``CodecCase``s;
``tests/providers/test_provider_conformance.py`` runs the same checks over all of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from providers.base import SttCodec


@attrs.frozen
class CodecCase:
    """``make_codec()``: a codec configured for 8 kHz mu-law with test defaults.
    ``handshake``: server messages that make the session ready (may be empty).
    ``partial_message``: yields exactly one PartialTranscript.
    ``final_message``: yields exactly one FinalTranscript (after any de-duplication).
    ``finalize_reply``: what the server sends after the vendor's end sequence; the
    events it yields end with Finalized.
    ``fatal_error_message``: a vendor error meaning bad credentials → ProviderFailed
    with a fatal error.  ``retryable_error_message``: one that is worth a retry.
    ``malformed``: each must raise ProviderProtocolError from ``receive``."""

    name: str
    make_codec: Callable[[], SttCodec]
    handshake: Sequence[str | bytes]
    partial_message: str | bytes
    final_message: str | bytes
    finalize_reply: Sequence[str | bytes]
    fatal_error_message: str | bytes
    retryable_error_message: str | bytes
    malformed: Sequence[str | bytes]
