"""The gateway with one of its optimisations switched off, to measure each side by side.

    python bench/experiments.py VARIANT[,VARIANT...] -- serve --provider elevenlabs --port 8080 ...

Runs ``earpiece`` (``gateway.cli.main``) after applying the named patches to this
process only; nothing on disk changes.  With a script after ``--`` instead of
earpiece's arguments (``-- bench/design_floor.py --port 8080``) the reports
(``step_report``, ``loop_report``, ...) measure that gateway instead.  ``bench/run.py`` runs variants side by side with
the unpatched gateway and the bare forwarder, interleaved per level::

    T='python bench/experiments.py {v} -- serve --provider {provider} --port {port} --sink jsonl:{events}'
    .venv/bin/python bench/run.py --levels 100,200 \\
        --variant "via_hypercorn=${T/\\{v\\}/via_hypercorn}" --variant "no_rcvlowat=${T/\\{v\\}/no_rcvlowat}"

Variants:

``via_hypercorn``
    the edge hands ``/twilio/stream`` upgrades to Hypercorn like every other request, so
    frames go through h11/wsproto, an ASGI message per frame and ``AsgiStreamUpgrade`` — how the
    gateway served the stream before it owned that socket.
``no_rcvlowat``
    the stream's own socket without ``SO_RCVLOWAT``: one wake-up per frame the kernel
    delivers instead of one per 100 ms batch.
``no_gc_freeze``
    no ``gc.freeze()`` after start-up.
``replay_8s``
    ``CallConfig.replay_ms`` = 8000 instead of 30 000 (memory per call with a provider
    that commits rarely).
``gc_default``
    CPython's default collector thresholds (a full collection per 10 middle-generation
    ones) instead of the gateway's one per 100.
``gc_young_700``
    CPython's default young-generation threshold (700) instead of the gateway's 7000.
``gc_report``
    nothing switched off: every garbage collection after start-up (``gc.freeze()``):
    its generation and CPU time (and with ``GC_REPORT_SIZES=1`` the objects it
    scanned) are recorded and summed up on stderr at exit (the gateway's log).
``batch_report``
    nothing switched off: per batch, the time and the run-loop passes from its last
    frame's read to the moment the provider's socket took it (TwilioReader hands it on →
    ``ReplayBuffer.mark_sent``), and per
    batched read whether ``SO_RCVLOWAT``'s mark came or ``patience`` ran out; printed at
    exit.
``step_report``
    nothing switched off: how often trio ran each kind of task (by the last part of the
    task's name) and the thread CPU inside those steps, the CPU in ``epoll`` waits and
    the rest (trio's run loop between steps), printed at exit.
``long_pass_report``
    nothing switched off: every run-loop pass over 3 ms of thread CPU, with the tasks
    it ran and their CPU, printed at exit (what makes a batch wait behind others).
``heap_report``
    nothing switched off: ``tracemalloc`` from start-up (it slows the gateway: memory
    only), a snapshot every second from a thread; at exit the fullest snapshot minus the
    one of the gateway at rest (start-up over, before the first call), per file and per line, divided by ``HEAP_REPORT_CALLS`` (the calls of the
    level): the Python heap one served call holds, sockets and the provider client
    included.
``loop_report``
    nothing switched off: a trio instrument times every pass of the run loop (the tasks
    run between two ``epoll`` waits, thread CPU time) and prints the distribution at
    exit: how long a task made runnable may wait behind the others.
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


def _dist(values: list[float]) -> str:
    if not values:
        return "none"
    v = sorted(values)
    pick = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    return (f"n={len(v)} total={sum(v) / 1000:.2f}s p50={pick(0.5):.3f} p99={pick(0.99):.3f} "
            f"p99.9={pick(0.999):.3f} max={v[-1]:.3f} ms")


def _instrument_every_run(instrument: object) -> None:
    """Make every ``trio.run`` of this process (the gateway's) run with ``instrument``."""
    import trio

    original = trio.run

    def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        kwargs["instruments"] = [*kwargs.get("instruments", ()), instrument]
        return original(*args, **kwargs)

    trio.run = run


def _task_kind(task: object) -> str:
    """A task's kind for the reports: the last two parts of its name (``SttSender.run``)."""
    return ".".join(task.name.rsplit(".", 2)[-2:])  # type: ignore[attr-defined]


def gc_default() -> None:
    import gateway.cli

    gateway.cli.GC_FULL_PASS_EVERY = 10  # CPython's default: a full collection per 10 middle ones


def gc_young_700() -> None:
    import gateway.cli

    gateway.cli.GC_YOUNG_THRESHOLD = 700  # CPython's default young-generation threshold


def gc_report() -> None:
    import atexit
    import os
    import time

    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    sizes: dict[int, list[float]] = {0: [], 1: [], 2: []}  # objects scanned (GC_REPORT_SIZES=1)
    started = [0]

    def callback(phase: str, info: dict) -> None:
        if not gc.get_freeze_count():
            return  # start-up (imports, the collection before gc.freeze()): not the served calls'
        if phase == "start":
            if os.environ.get("GC_REPORT_SIZES"):
                sizes[info["generation"]].append(float(sum(len(gc.get_objects(g))
                                                           for g in range(info["generation"] + 1))))
            started[0] = time.thread_time_ns()
        else:
            pauses[info["generation"]].append((time.thread_time_ns() - started[0]) / 1e6)

    gc.callbacks.append(callback)

    @atexit.register
    def report() -> None:
        for gen, values in pauses.items():
            print(f"gc_report gen{gen}: {_dist(values)}", file=sys.stderr, flush=True)
            if sizes[gen]:
                print(f"gc_report gen{gen} objects scanned: {_dist(sizes[gen])}", file=sys.stderr, flush=True)
        gc.callbacks.remove(callback)
        gc.set_debug(gc.DEBUG_SAVEALL)
        left = gc.collect()
        from collections import Counter

        kinds = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
        frames = Counter(f"{o.f_code.co_filename.rsplit('/', 2)[-1]}:{o.f_code.co_name}" for o in gc.garbage
                         if type(o).__name__ == "frame")
        print(f"gc_report thresholds {gc.get_threshold()}; unreachable objects left at exit: {left}; "
              f"kinds {kinds.most_common(25)}; frames {frames.most_common(15)}", file=sys.stderr, flush=True)


def batch_report() -> None:
    import atexit

    import trio

    import actors.replay
    import gateway.stream_socket

    appended: dict[tuple[int, int], tuple[float, int]] = {}
    residence: list[float] = []
    passes_between: list[float] = []
    passes = [0]

    class PassCounter(trio.abc.Instrument):
        def after_io_wait(self, timeout: float) -> None:
            passes[0] += 1

    _instrument_every_run(PassCounter())
    reads = {"marked": 0, "patience_out": 0, "plain": 0}
    replay_cls, transport_cls = actors.replay.ReplayBuffer, gateway.stream_socket.SocketTransport
    append, mark_sent, receive_some = replay_cls.append, replay_cls.mark_sent, transport_cls.receive_some

    import actors.twilio_reader

    reader_cls = actors.twilio_reader.TwilioReader
    offer = reader_cls._offer

    def timed_offer(self, mulaw_send, payload):  # noqa: ANN001, ANN202 - stamped as the reader hands it on
        start_ms = self._stats.audio_ms - len(payload) // 8
        appended[(id(self._stats), start_ms)] = (trio.current_time(), passes[0])
        return offer(self, mulaw_send, payload)

    def timed_append(self, batch):  # noqa: ANN001, ANN202
        return append(self, batch)

    def timed_mark_sent(self, batch):  # noqa: ANN001, ANN202
        at = appended.pop((id(self._stats), batch.start_ms), None)
        if at is not None:
            residence.append((trio.current_time() - at[0]) * 1000)
            passes_between.append(float(passes[0] - at[1]))
        return mark_sent(self, batch)

    async def timed_receive_some(self, mark=1, patience=0.0):  # noqa: ANN001, ANN202
        if mark <= 1 or not self.batching:
            reads["plain"] += 1
            return await receive_some(self, mark, patience)
        start = trio.current_time()
        data = await receive_some(self, mark, patience)
        reads["patience_out" if trio.current_time() - start >= patience else "marked"] += 1
        return data

    replay_cls.append, replay_cls.mark_sent = timed_append, timed_mark_sent
    reader_cls._offer = timed_offer
    transport_cls.receive_some = timed_receive_some

    @atexit.register
    def report() -> None:
        print(f"batch_report read->sent ms: {_dist(residence)}", file=sys.stderr, flush=True)
        print(f"batch_report read->sent run-loop passes: {_dist(passes_between)}", file=sys.stderr, flush=True)
        print(f"batch_report reads: {reads}", file=sys.stderr, flush=True)


def heap_report() -> None:
    import atexit
    import os
    import threading
    import tracemalloc

    tracemalloc.start()
    calls = int(os.environ.get("HEAP_REPORT_CALLS", "1"))
    snaps: dict[str, tracemalloc.Snapshot] = {}
    peak, base = [0], [0]
    stop = threading.Event()

    def sample() -> None:
        previous = -1
        while not stop.wait(1.0):
            current = tracemalloc.get_traced_memory()[0]
            if os.environ.get("HEAP_REPORT_TRACE"):
                print(f"heap_report trace {current} {sorted(snaps)} {peak[0]}", file=sys.stderr, flush=True)
            if "first" not in snaps:  # the gateway at rest: start-up over, no call yet
                if abs(current - previous) < 0.002 * current:
                    snaps["first"] = tracemalloc.take_snapshot()
                    base[0] = peak[0] = current
                previous = current
            elif current > peak[0]:
                peak[0] = current
                snaps["peak"] = tracemalloc.take_snapshot()
            elif peak[0] - base[0] > 32 * 1024 * calls and current < (base[0] + peak[0]) / 2:  # calls ending: report
                report()
                return

    threading.Thread(target=sample, daemon=True).start()

    @atexit.register
    def report() -> None:
        if stop.is_set():
            return
        stop.set()
        if "peak" not in snaps:
            print(f"heap_report: no snapshot with calls ({sorted(snaps)})", file=sys.stderr, flush=True)
            return
        # comparing takes seconds: dump both, compare offline (bench/experiments.py heap DIR CALLS)
        out = Path(os.environ.get("HEAP_REPORT_DIR", "."))
        snaps["first"].dump(str(out / "heap-first.snapshot"))
        snaps["peak"].dump(str(out / "heap-peak.snapshot"))
        print(f"heap_report: snapshots in {out}", file=sys.stderr, flush=True)


def heap_table(directory: str, calls: int, top: int = 30) -> None:
    """Print the per-call difference of the two snapshots ``heap_report`` dumped."""
    import tracemalloc

    first = tracemalloc.Snapshot.load(str(Path(directory) / "heap-first.snapshot"))
    fullest = tracemalloc.Snapshot.load(str(Path(directory) / "heap-peak.snapshot"))
    for key in ("filename", "lineno"):
        diffs = sorted(fullest.compare_to(first, key), key=lambda d: -d.size_diff)
        total = sum(d.size_diff for d in diffs)
        print(f"\n| {key} | KiB / call | blocks / call |\n|---|---:|---:|\n| total | {total / calls / 1024:.1f} | |")
        for d in diffs[:top]:
            where = d.traceback[0]
            name = where.filename.split("site-packages/")[-1].replace(str(Path.cwd()) + "/", "")
            label = name if key == "filename" else f"{name}:{where.lineno}"
            print(f"| `{label}` | {d.size_diff / calls / 1024:.2f} | {d.count_diff / calls:.1f} |")


def loop_report() -> None:
    import atexit
    import time

    import trio

    passes: list[float] = []

    class PassTimer(trio.abc.Instrument):
        def __init__(self) -> None:
            self.t = 0

        def after_io_wait(self, timeout: float) -> None:
            self.t = time.thread_time_ns()

        def before_io_wait(self, timeout: float) -> None:
            if self.t:
                passes.append((time.thread_time_ns() - self.t) / 1e6)

    _instrument_every_run(PassTimer())

    @atexit.register
    def report() -> None:
        busy = [p for p in passes if p > 0.05]
        print(f"loop_report passes: {_dist(passes)}", file=sys.stderr, flush=True)
        print(f"loop_report passes > 50 us: {_dist(busy)}", file=sys.stderr, flush=True)


def step_report() -> None:
    import atexit
    import collections
    import os
    import time

    import trio

    steps: collections.Counter[str] = collections.Counter()
    cpu: collections.Counter[str] = collections.Counter()  # thread CPU ns inside each kind's steps
    waits = [0, 0, 0]  # epoll waits, of which returned at once (timeout 0), CPU ns in waits
    at = [0, 0]  # thread CPU at the step's / the wait's start

    class StepCounter(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            at[0] = time.thread_time_ns()

        def after_task_step(self, task: trio.lowlevel.Task) -> None:
            name = _task_kind(task)
            steps[name] += 1
            cpu[name] += time.thread_time_ns() - at[0]

        def before_io_wait(self, timeout: float) -> None:
            waits[0] += 1
            waits[1] += timeout == 0
            at[1] = time.thread_time_ns()

        def after_io_wait(self, timeout: float) -> None:
            waits[2] += time.thread_time_ns() - at[1]

    _instrument_every_run(StepCounter())

    @atexit.register
    def report() -> None:
        times = os.times()
        total = time.thread_time_ns()
        in_steps = sum(cpu.values())
        print(f"step_report process CPU s: user {times.user:.2f} system {times.system:.2f}; "
              f"main thread {total / 1e9:.2f}: in task steps {in_steps / 1e9:.2f}, in epoll waits "
              f"{waits[2] / 1e9:.2f}, the rest (the run loop between steps, start-up) "
              f"{(total - in_steps - waits[2]) / 1e9:.2f}", file=sys.stderr, flush=True)
        print(f"step_report io waits: {waits[0]} ({waits[1]} without waiting)", file=sys.stderr, flush=True)
        for name, n in steps.most_common(25):
            print(f"step_report {n:>10} steps {cpu[name] / 1e9:8.2f} s {cpu[name] / n / 1e3:8.1f} us/step  {name}",
                  file=sys.stderr, flush=True)


def long_pass_report() -> None:
    import atexit
    import collections
    import time

    import trio

    long: list[tuple[float, collections.Counter[str], dict[str, float]]] = []

    class PassTracer(trio.abc.Instrument):
        def __init__(self) -> None:
            self.t = 0
            self.step_t = 0
            self.steps: collections.Counter[str] = collections.Counter()
            self.cpu: dict[str, float] = collections.defaultdict(float)

        def after_io_wait(self, timeout: float) -> None:
            self.t = time.thread_time_ns()
            self.steps = collections.Counter()
            self.cpu = collections.defaultdict(float)

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            self.step_t = time.thread_time_ns()

        def after_task_step(self, task: trio.lowlevel.Task) -> None:
            name = _task_kind(task)
            self.steps[name] += 1
            self.cpu[name] += (time.thread_time_ns() - self.step_t) / 1e6

        def before_io_wait(self, timeout: float) -> None:
            if self.t:
                ms = (time.thread_time_ns() - self.t) / 1e6
                if ms > 3:
                    long.append((ms, self.steps, dict(self.cpu)))

    _instrument_every_run(PassTracer())

    @atexit.register
    def report() -> None:
        print(f"long_pass_report passes > 3 ms: {len(long)}", file=sys.stderr, flush=True)
        for ms, steps, cpu in sorted(long, key=lambda x: -x[0])[:40]:
            parts = ", ".join(f"{k} {n}x {cpu[k]:.2f}ms" for k, n in steps.most_common(6))
            print(f"long_pass_report {ms:.2f} ms: {parts}", file=sys.stderr, flush=True)


VARIANTS: dict[str, Callable[[], None]] = {
    "via_hypercorn": via_hypercorn,
    "no_rcvlowat": no_rcvlowat,
    "no_gc_freeze": no_gc_freeze,
    "replay_8s": lambda: replay_ms(8000),
    "gc_report": gc_report,
    "gc_default": gc_default,
    "gc_young_700": gc_young_700,
    "loop_report": loop_report,
    "step_report": step_report,
    "long_pass_report": long_pass_report,
    "batch_report": batch_report,
    "heap_report": heap_report,
    "none": lambda: None,
}


def main(argv: list[str]) -> int:
    if argv[:1] == ["heap"]:  # heap DIR CALLS: the table of heap_report's snapshots
        heap_table(argv[1], int(argv[2]))
        return 0
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
    if argv[2:3] and argv[2].endswith(".py"):  # another gateway script (bench/design_floor.py) under the same report
        import runpy

        sys.argv = argv[2:]
        runpy.run_path(argv[2], run_name="__main__")
        return 0
    from gateway.cli import main as earpiece

    return earpiece(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
