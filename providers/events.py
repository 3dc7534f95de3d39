"""Provider-neutral events: the closed set every STT codec and session produces.

Times (``start_ms``/``end_ms``) are milliseconds of *session* audio: 0 is the first
audio byte sent on this provider session.  The call runtime adds the session's offset
on the call's audio clock.  ``None`` means the vendor gave no timing and the codec could
not infer one.
"""

from __future__ import annotations

from typing import Union

import attrs

__all__ = [
    "SessionStarted",
    "PartialTranscript",
    "FinalTranscript",
    "Finalized",
    "ProviderFailed",
    "ProviderClosed",
    "ProviderEvent",
]


@attrs.frozen
class SessionStarted:
    """The vendor accepted the session (its ready message, or the socket opened)."""

    session_id: str = ""


@attrs.frozen
class PartialTranscript:
    """The full current (uncommitted) text of the utterance in progress."""

    text: str
    start_ms: int | None = None
    end_ms: int | None = None


@attrs.frozen
class FinalTranscript:
    """Committed text for one span of audio; it will not change."""

    text: str
    start_ms: int | None = None
    end_ms: int | None = None


@attrs.frozen
class Finalized:
    """The vendor's end-of-stream sequence completed: no transcript will follow."""


@attrs.frozen
class ProviderFailed:
    """The vendor reported an error (its error message); ``error.fatal`` says whether to retry."""

    error: Exception


@attrs.frozen
class ProviderClosed:
    """The connection ended; a dropped socket is ``ProviderClosed(code=1006)``."""

    code: int
    reason: str = ""


ProviderEvent = Union[
    SessionStarted, PartialTranscript, FinalTranscript, Finalized, ProviderFailed, ProviderClosed
]
