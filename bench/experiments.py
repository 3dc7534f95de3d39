"""The gateway with one of its optimisations switched off, to measure each side by side.

    python bench/experiments.py VARIANT[,VARIANT...] -- serve --provider elevenlabs --port 8080 ...

Runs ``earpiece`` (``gateway.cli.main``) after applying the named patches to this
process only; nothing on disk changes.  ``bench/run.py`` runs variants side by side with
the unpatched gateway and the bare forwarder, interleaved per level::

    T='python bench/experiments.py {v} -- serve --provider {provider} --port {port} --sink jsonl:{events}'
    .venv/bin/python bench/run.py --levels 100,200 \\
        --variant "via_hypercorn=${T/\\{v\\}/via_hypercorn}" --variant "no_rcvlowat=${T/\\{v\\}/no_rcvlowat}"

Variants:

``via_hypercorn``
    the edge hands ``/twilio/stream`` upgrades to Hypercorn like every other request, so
    frames go through h11/wsproto, an ASGI message per frame and ``AsgiDoor`` — how the
    gateway served the stream before it owned that socket.
``no_rcvlowat``
    the stream's own socket without ``SO_RCVLOWAT``: one wake-up per frame the kernel
    delivers instead of one per 100 ms batch.
``no_gc_freeze``
    no ``gc.freeze()`` after start-up.
``replay_8s``
    ``CallConfig.replay_ms`` = 8000 instead of 30 000 (memory per call with a provider
    that commits rarely).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def via_hypercorn() -> None:
    import gateway.edge

    gateway.edge.parse_stream_upgrade = lambda head, stream_path: None


def no_rcvlowat() -> None:
    import gateway.stream_socket

    gateway.stream_socket._SO_RCVLOWAT = None  # noqa: SLF001 - SocketTransport reads it per connection


def no_gc_freeze() -> None:
    gc.freeze = lambda: None


def replay_ms(ms: int) -> None:
    import attrs

    import gateway.app

    original = gateway.app.CallConfig

    def smaller_replay(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return attrs.evolve(original(*args, **kwargs), replay_ms=ms)

    gateway.app.CallConfig = smaller_replay


VARIANTS: dict[str, Callable[[], None]] = {
    "via_hypercorn": via_hypercorn,
    "no_rcvlowat": no_rcvlowat,
    "no_gc_freeze": no_gc_freeze,
    "replay_8s": lambda: replay_ms(8000),
    "none": lambda: None,
}


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 1:
        print(f"usage: experiments.py VARIANT[,VARIANT] -- earpiece-args...\nvariants: {', '.join(VARIANTS)}",
              file=sys.stderr)
        return 2
    names = [n for n in argv[0].split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    for name in names:
        VARIANTS[name]()
    from gateway.cli import main as earpiece

    return earpiece(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
