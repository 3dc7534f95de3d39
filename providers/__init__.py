"""Wire protocols of the services a call talks to, as sans-I/O codecs and thin clients.

``twilio`` is the inbound side (Media Streams); every other subpackage is one STT
vendor (``protocol.py`` the codec, ``client.py`` the URL, auth and options), found by
name through the ``registry``.  What every provider fits is public here: the seams
(``base``), the closed set of events a session produces (``events``), the typed errors
whose type decides retry or failover (``errors``) and the registry.  Imports nothing of
ours outside itself.
"""

from . import base, errors, events, registry
from .base import *  # noqa: F403 - each module's __all__ is its public surface
from .errors import *  # noqa: F403
from .events import *  # noqa: F403
from .registry import *  # noqa: F403

__all__ = [*base.__all__, *events.__all__, *errors.__all__, *registry.__all__]
