"""The recognizer process: ``python -m providers.local.worker SETTINGS_JSON``.

Reads commands on stdin, writes events on stdout (``wire``), one ``Recognizer``
for its whole life.  PocketSphinx holds the GIL for every call into it (loading
the model, ``process_raw``, ``end_utt``), so in a thread of the gateway it would
stall the event loop of every call; in its own process it stalls nothing and can
use another core.

Exits on end of stdin (the session closed it) or after reporting a failure.  It
ignores SIGINT: Ctrl-C on the gateway reaches the whole process group, and the
session kills its worker itself.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import BinaryIO

from ..errors import ProviderConfigError
from ..events import Finalized
from . import wire
from .recognizer import Recognizer
from .settings import PROVIDER, LocalSettings


def serve(settings: LocalSettings, commands: BinaryIO, events: BinaryIO) -> int:
    """The command loop; returns the exit status."""
    try:
        recognizer = Recognizer(settings)
    except (RuntimeError, ValueError) as exc:
        _report(events, ProviderConfigError(PROVIDER, f"PocketSphinx could not load its model ({exc}); "
                                                      "check LOCAL_LM and LOCAL_DICT, or reinstall pocketsphinx"))
        return 1
    events.write(wire.encode_event(wire.Ready()))
    events.flush()
    try:
        while True:
            header = commands.read(wire.HEADER_BYTES)
            if len(header) < wire.HEADER_BYTES:
                return 0  # end of stdin: the session is closing
            kind, length = wire.decode_header(header)
            payload = commands.read(length)
            if kind == wire.FLUSH:
                out = [*recognizer.flush(), Finalized()]
            else:
                out = recognizer.feed(payload)
            events.write(b"".join(wire.encode_event(event) for event in out) + wire.encode_event(wire.Done()))
            events.flush()
    except BrokenPipeError:
        return 0  # the session is gone
    except Exception as exc:  # a recognizer fault: report it; a new session may work
        _report(events, exc)
        return 1
    finally:
        recognizer.close()


def _report(events: BinaryIO, error: Exception) -> None:
    try:
        events.write(wire.encode_failure(error))
        events.flush()
    except OSError:
        pass  # the session is gone: nobody to tell


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = LocalSettings(**json.loads(argv[1]))
    return serve(settings, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
