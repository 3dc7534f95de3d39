"""``local``: offline speech recognition with PocketSphinx (US English), no account.

Its bundled model is a 16 kHz model, so the gateway sends 16 kHz pcm16 (Twilio's
8 kHz mu-law upsampled).  Accuracy on telephone audio is far below the cloud
providers'; bench/LOCAL_ACCURACY.md has the numbers.

Settings (environment): ``LOCAL_SILENCE_MS`` (pause that ends an utterance, 600),
``LOCAL_MAX_UTTERANCE_S`` (20), ``LOCAL_VAD_MODE`` (loose | medium_loose |
medium_strict | strict), ``LOCAL_SEARCH`` (accurate | fast), ``LOCAL_LM`` and
``LOCAL_DICT`` (a domain language model and dictionary).

Each session runs its recognizer in a child process (``worker``): PocketSphinx holds
the GIL while it decodes, so a thread would stall the gateway's event loop.  This
package imports no PocketSphinx itself; only the worker does.
"""

from ..registry import ProviderSpec
from .provider import AUDIO_FORMAT, LocalProvider, create
from .session import LocalSession, LocalSessionStatistics, open_local_session
from .settings import LocalSettings

__all__ = [
    "SPEC",
    "AUDIO_FORMAT",
    "LocalProvider",
    "LocalSession",
    "LocalSessionStatistics",
    "LocalSettings",
    "create",
    "open_local_session",
]

SPEC = ProviderSpec(
    name="local",
    description="offline PocketSphinx (English), no account",
    audio_format=AUDIO_FORMAT,
    factory=create,
    key_env=None,
    offline=True,
)
