"""The per-call runtime: one trio nursery per call, five actors joined by bounded channels.

The entry is ``actors.call.run_call``: it reads a Twilio Media Stream from a
``TextSource`` and hands the call's events to ``Sink``s, configured by a ``CallConfig``,
and returns a ``CallOutcome``.  It is imported from ``actors.call`` rather than from
here because it brings the audio stack (numpy, soxr) with it, which ``earpiece
providers``, ``tail``, ``calls`` and the ``--workers`` parent do without.

Here: what a caller of ``run_call`` builds and receives, without that stack: the seams
(``ports``), the settings (``config``), the messages that travel (``messages``), the
audio accounting (``stats``) and the reconnect schedule (``backoff``).  The actors
themselves, the provider leg and its supervision, the replay buffer and the DSP are
imported from their own modules.  Imports only ``providers`` (never ``gateway``).
"""

from . import backoff, config, messages, ports, stats
from .backoff import *  # noqa: F403 - each module's __all__ is its public surface
from .config import *  # noqa: F403
from .messages import *  # noqa: F403
from .ports import *  # noqa: F403
from .stats import *  # noqa: F403

__all__ = [*ports.__all__, *config.__all__, *messages.__all__, *stats.__all__, *backoff.__all__]
