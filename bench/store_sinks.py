"""What the sqlite: and webhook: writers cost per event, by batch size.

    .venv/bin/python bench/store_sinks.py [--events N]

sqlite: ``SqliteWriter.write`` of synthetic call events (1 call_started, transcripts, 1
call_ended per 50 events) into a fresh file in a temporary directory, batches of 1, 10
and 100; figures are process CPU time (every thread: the writer's own thread does the
SQLite work) and wall time per event, and wall time per batch (p50 / p99).

webhook: ``WebhookWriter.write`` POSTing to the tests' h11 server in the same process on
127.0.0.1 (answers 200), so CPU includes the server's side too; per batch round trip
p50 / p99.

Wall figures move with the machine's load; CPU per event is the comparable one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.sinks.sqlite import SqliteWriter  # noqa: E402
from gateway.sinks.webhook import WebhookWriter  # noqa: E402
from tests.fakes.webhook_server import WebhookServer  # noqa: E402


def synthetic_events(n: int) -> list[dict]:
    events: list[dict] = []
    for i in range(n):
        call, seq = divmod(i, 50)
        sid, stream = f"CA{call:032x}", f"MZ{call:032x}"
        base = {"call_sid": sid, "stream_sid": stream, "seq": seq + 1, "emitted_at": "2026-12-03T06:00:00.000Z"}
        if seq == 0:
            events.append({"type": "call_started", **base, "account_sid": "AC" + "0" * 32,
                           "custom_parameters": {"From": "+15005550006", "To": "+15005550001"},
                           "tracks": ["inbound"], "media_format": "audio/x-mulaw;rate=8000"})
        elif seq == 49:
            events.append({"type": "call_ended", **base, "reason": "stop", "audio_ms": 60000,
                           "forwarded_ms": 60000, "dropped_ms": 0, "detail": ""})
        else:
            events.append({"type": "transcript", "kind": "committed" if seq % 4 == 0 else "partial",
                           "text": "the caller says something of a typical length here", **base,
                           "provider": "scripted", "audio_start_ms": seq * 1000, "audio_end_ms": seq * 1000 + 900})
    return events


def report(label: str, n: int, cpu: float, wall: float, per_batch: list[float]) -> None:
    q = statistics.quantiles(per_batch, n=100) if len(per_batch) > 1 else per_batch * 99
    print(f"{label:<26} {n / wall:>9.0f} ev/s  cpu {cpu / n * 1e6:>6.1f} µs/ev  wall {wall / n * 1e6:>6.1f} µs/ev  "
          f"batch p50 {q[49] * 1e3:>6.2f} ms  p99 {q[98] * 1e3:>6.2f} ms")


async def bench_sqlite(events: list[dict], batch: int, directory: Path) -> None:
    writer = SqliteWriter(directory / f"bench-{batch}.db")
    await writer.write(events[:1])  # schema created outside the measurement
    per_batch: list[float] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for start in range(0, len(events), batch):
        t = time.perf_counter()
        await writer.write(events[start:start + batch])
        per_batch.append(time.perf_counter() - t)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await writer.aclose()
    report(f"sqlite batch={batch}", len(events), cpu, wall, per_batch)


async def bench_webhook(events: list[dict], batch: int) -> None:
    server = WebhookServer()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        writer = WebhookWriter(url, secret="bench-secret")
        await writer.write(events[:1])  # connection opened outside the measurement
        per_batch: list[float] = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for start in range(0, len(events), batch):
            t = time.perf_counter()
            await writer.write(events[start:start + batch])
            per_batch.append(time.perf_counter() - t)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        await writer.aclose()
        nursery.cancel_scope.cancel()
    report(f"webhook batch={batch}", len(events), cpu, wall, per_batch)


async def main(n: int) -> None:
    events = synthetic_events(n)
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (1, 10, 100):
            await bench_sqlite(events, batch, Path(tmp))
    for batch in (1, 10, 100):
        await bench_webhook(events, batch)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    trio.run(main, parser.parse_args().events)
