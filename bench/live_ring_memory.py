"""Python memory one call's ring holds in the live hub (gateway/live.py), by tracemalloc.

    .venv/bin/python bench/live_ring_memory.py                 # 10 min call, partial 300 ms, commit 3 s
    .venv/bin/python bench/live_ring_memory.py --minutes 30 --calls 20

``--calls`` calls are published to a real ``LiveHub`` (no readers), interleaved as on a
gateway, with the event mix of a talking caller: ``call_started``, then a partial
transcript every ``--partial-ms`` of audio whose text grows by a word each time (about
2.5 words a second), a committed transcript of the segment's words every
``--commit-ms``, and ``call_ended`` is not sent (the calls are live).  Events are the
dicts a TranscriptEmitter publishes (every contract field, realistic sids and times).
The hub's clock is trio's, so the run is inside ``trio.run`` with a ``MockClock``.

``tracemalloc`` snapshots before the first event and after the last (after
``gc.collect()``); the difference ÷ calls is one call's ring: its entries, their SSE
frames and the deque.  The events themselves are built and dropped as they go, so they
are not counted.  Printed: KiB per call, entries held per call, frame bytes per call.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.live import LiveHub  # noqa: E402

WORDS = ("so", "I", "was", "calling", "about", "the", "invoice", "from", "last", "month", "and", "it", "looks",
         "like", "we", "were", "charged", "twice", "for", "same", "order", "could", "you", "check", "please")


def events_of(n: int, minutes: float, partial_ms: int, commit_ms: int):
    """(audio ms, event) of call ``n`` in time order, without seq (the hub needs it: added by caller)."""
    sid, stream = f"CA{n:032x}", f"MZ{n:032x}"
    start = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)

    def stamp(ms: int) -> str:
        return (start + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    yield 0, {"type": "call_started", "call_sid": sid, "stream_sid": stream, "account_sid": "AC" + "a" * 32,
              "custom_parameters": {"From": "+15005550006", "To": "+15005550001"}, "emitted_at": stamp(0)}
    end, segment_start, words = int(minutes * 60_000), 0, 0
    for ms in range(partial_ms, end + 1, partial_ms):
        words += 1 if ms % 400 < partial_ms else 0  # about 2.5 words a second
        text = " ".join(WORDS[(segment_start // 100 + i) % len(WORDS)] for i in range(max(words, 1)))
        committed = ms - segment_start >= commit_ms
        yield ms, {"type": "transcript", "kind": "committed" if committed else "partial", "text": text,
                   "call_sid": sid, "stream_sid": stream, "provider": "deepgram", "audio_start_ms": segment_start,
                   "audio_end_ms": ms, "emitted_at": stamp(ms + 180)}
        if committed:
            segment_start, words = ms, 0


def measure(calls: int, minutes: float, partial_ms: int, commit_ms: int) -> tuple[float, float, float]:
    hub = LiveHub()
    streams = [events_of(n, minutes, partial_ms, commit_ms) for n in range(1, calls + 1)]

    async def publish_all() -> None:
        seqs = [0] * calls
        pending = [next(s) for s in streams]
        while any(p is not None for p in pending):
            i = min((i for i, p in enumerate(pending) if p is not None), key=lambda i: pending[i][0])
            seqs[i] += 1
            hub.publish({**pending[i][1], "seq": seqs[i]})
            pending[i] = next(streams[i], None)

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    trio.run(publish_all, clock=trio.testing.MockClock())
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    rings = [hub.ring_of(f"CA{n:032x}") for n in range(1, calls + 1)]
    return (held / calls / 1024, sum(len(r.entries) for r in rings) / calls,
            sum(r.size for r in rings) / calls / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--partial-ms", type=int, default=300)
    parser.add_argument("--commit-ms", type=int, default=3000)
    args = parser.parse_args()
    kib, entries, frames = measure(args.calls, args.minutes, args.partial_ms, args.commit_ms)
    print(f"{args.calls} calls of {args.minutes:g} min, partial every {args.partial_ms} ms, commit every "
          f"{args.commit_ms} ms: {kib:.1f} KiB per call ring ({entries:.0f} entries, {frames:.1f} KiB of frames)")


if __name__ == "__main__":
    main()
