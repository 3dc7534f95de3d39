"""The per-call runtime: one trio nursery per call, five actors joined by bounded channels.

``run_call`` (``actors.call``) is the entry: it reads a Twilio Media Stream from a
``TextSource`` and hands the call's events to ``Sink``s (``actors.ports``), configured by
a ``CallConfig``.  The actors (``TwilioReader``, ``Resampler``, ``SttSender``,
``SttReceiver``, ``TranscriptEmitter``), the provider leg and its supervision, the
replay buffer and the DSP are the runtime's own modules, imported from where they live.
Imports only ``providers`` (never ``gateway``).
"""

from .backoff import Backoff
from .call import CallOutcome, EndReason, run_call
from .config import CallConfig, batch_ms_problem
from .messages import (
    AudioBatch,
    CallEnded,
    CallEvent,
    CallStarted,
    DtmfPressed,
    ProviderNotice,
    StreamStarted,
    Transcript,
)
from .ports import BatchingTextSource, Sink, TextSource
from .stats import CallStatistics, CallStats
from .transcript_emitter import utc_timestamp

__all__ = [
    # running a call
    "run_call",
    "CallOutcome",
    "EndReason",
    "CallConfig",
    "batch_ms_problem",
    # its seams
    "TextSource",
    "BatchingTextSource",
    "Sink",
    # what travels
    "AudioBatch",
    "StreamStarted",
    "CallStarted",
    "Transcript",
    "DtmfPressed",
    "ProviderNotice",
    "CallEnded",
    "CallEvent",
    # accounting, timing
    "CallStats",
    "CallStatistics",
    "Backoff",
    "utc_timestamp",
]
