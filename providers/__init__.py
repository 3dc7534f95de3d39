"""Wire protocols of the services a call talks to, as sans-I/O codecs and thin clients.

``twilio`` is the inbound side (Media Streams); every other subpackage is one STT
vendor (``protocol.py`` the codec, ``client.py`` the URL, auth and options), found by
name through the ``registry``.  What every provider fits is here: the seams
(``providers.base``), the closed set of events a session produces
(``providers.events``) and the typed errors whose type decides retry or failover
(``providers.errors``).  Imports nothing of ours outside itself.
"""

from .base import (
    MULAW_8K,
    AudioFormat,
    SlowAnswers,
    SttCodec,
    SttProvider,
    SttSession,
    answer_timeout,
    finalize_timeout,
)
from .errors import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderFatalError,
    ProviderOverloadedError,
    ProviderProtocolError,
    ProviderQuotaError,
    ProviderRetryableError,
    ProviderStalledError,
)
from .events import (
    Finalized,
    FinalTranscript,
    PartialTranscript,
    ProviderClosed,
    ProviderEvent,
    ProviderFailed,
    SessionStarted,
)
from .registry import BUILTIN_PROVIDERS, ProviderSpec, available_providers, create_provider, get_spec

__all__ = [
    # seams
    "AudioFormat",
    "MULAW_8K",
    "SttCodec",
    "SttSession",
    "SttProvider",
    "SlowAnswers",
    "answer_timeout",
    "finalize_timeout",
    # events
    "SessionStarted",
    "PartialTranscript",
    "FinalTranscript",
    "Finalized",
    "ProviderFailed",
    "ProviderClosed",
    "ProviderEvent",
    # errors
    "ProviderError",
    "ProviderFatalError",
    "ProviderAuthError",
    "ProviderQuotaError",
    "ProviderConfigError",
    "ProviderRetryableError",
    "ProviderConnectionError",
    "ProviderOverloadedError",
    "ProviderStalledError",
    "ProviderProtocolError",
    # registry
    "ProviderSpec",
    "BUILTIN_PROVIDERS",
    "available_providers",
    "get_spec",
    "create_provider",
]
