"""``earpiece serve --workers N``: N gateway processes on one port, under a small parent.

```
parent (this module, no calls) ── binds N SO_REUSEPORT sockets on host:port, listening
  ├─ worker 0: earpiece serve … --workers 1   (socket 0 inherited: EARPIECE_WORKER_FD)
  ├─ worker 1: …                               (socket 1)
  └─ --metrics-port: GET /metrics, summed over the workers (PROMETHEUS_MULTIPROC_DIR)
```

Each worker is one trio thread on one core, exactly the single-process gateway.  The
kernel spreads new connections over the N sockets (SO_REUSEPORT); the parent keeps
every socket open, so a worker that dies loses only its own calls: connections that
reach its socket meanwhile wait in the backlog for its replacement.  A worker that dies
is restarted at once, or after a growing pause (0.5 s doubling to 30 s) while it keeps
dying within ``FAST_DEATH`` seconds of its start.

Signals: the first SIGTERM or SIGINT is forwarded to every worker as SIGTERM, which
makes each stop admitting at once and lets its live calls go on for ``--drain-grace``
seconds; a second one is forwarded too and ends the calls at once (still with
``call_ended``).  No worker is restarted once a signal came.  The parent exits 0 when
every worker has exited; if workers are still alive ``GIVE_UP_AFTER`` seconds past the
grace, it kills them and exits 1.  Workers run in their own session, so a terminal's
Ctrl-C reaches them only once, through the parent; a worker whose parent is gone drains
and exits as on SIGTERM.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence

import trio

from .config import ConfigError, Settings
from .metrics import MULTIPROC_ENV, render_multiprocess, serve_metrics_port

__all__ = ["run_workers", "bind_worker_sockets", "WORKER_FD_ENV", "WORKER_INDEX_ENV"]

log = logging.getLogger("earpiece.workers")

WORKER_FD_ENV = "EARPIECE_WORKER_FD"  # set by the parent only: the inherited listening socket
WORKER_INDEX_ENV = "EARPIECE_WORKER_INDEX"
FAST_DEATH = 10.0  # seconds: a worker dying sooner than this after its start is in a loop
FIRST_PAUSE, MAX_PAUSE = 0.5, 30.0  # seconds before restarting a worker that dies in a loop
GIVE_UP_AFTER = 60.0  # seconds past the drain grace (and the calls' final flush) before killing workers
BACKLOG = 1024


def bind_worker_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening TCP sockets on one ``host:port`` (SO_REUSEPORT); port 0 picks
    a free port for the first and binds the others to it.  ConfigError when the port is
    taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(BACKLOG)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port") from None
    return sockets


class Supervisor:
    """Keeps one worker process per socket running until told to stop (see the module
    docstring).  ``argv``: the ``earpiece`` command line the workers run (``serve …``)."""

    def __init__(self, settings: Settings, argv: Sequence[str], env: Mapping[str, str],
                 sockets: Sequence[socket.socket], metrics_dir: str) -> None:
        self.settings = settings
        self.argv = list(argv)
        self.env = dict(env)
        self.sockets = list(sockets)
        self.metrics_dir = metrics_dir
        self.processes: dict[int, trio.Process] = {}  # worker index -> live process
        self.stopping = False
        self.gave_up = False
        self.restarts = 0

    def _worker_env(self, index: int, fd: int) -> dict[str, str]:
        env = dict(self.env)
        env[WORKER_FD_ENV] = str(fd)
        env[WORKER_INDEX_ENV] = str(index)
        env[MULTIPROC_ENV] = self.metrics_dir
        env.pop("EARPIECE_WORKERS", None)
        return env

    async def _keep_running(self, index: int) -> None:
        sock = self.sockets[index]
        command = [sys.executable, "-m", "gateway.cli", *self.argv, "--workers", "1"]
        fast_deaths = 0
        while not self.stopping:
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                command, env=self._worker_env(index, sock.fileno()), pass_fds=(sock.fileno(),),
                start_new_session=True)
            self.processes[index] = process
            log.info("worker %d started (pid %d)", index, process.pid)
            if self.stopping:  # the signal came while it was being started: it was not forwarded to it
                process.send_signal(signal.SIGTERM)
            try:
                status = await process.wait()
            finally:
                self.processes.pop(index, None)
                _mark_dead(process.pid, self.metrics_dir)
            if self.stopping:
                log.info("worker %d (pid %d) exited with status %s", index, process.pid, status)
                # new connections go to the workers still draining (they answer 503), not to a backlog
                sock.close()
                return
            lived = trio.current_time() - started
            fast_deaths = fast_deaths + 1 if lived < FAST_DEATH else 0
            pause = min(MAX_PAUSE, FIRST_PAUSE * 2 ** (fast_deaths - 1)) if fast_deaths else 0.0
            self.restarts += 1
            log.warning("worker %d (pid %d) died (%s) after %.1f s: its calls ended; restarting%s", index,
                        process.pid, _status(status), lived, f" in {pause:g} s" if pause else "")
            if pause:
                with trio.move_on_after(pause):
                    while not self.stopping:
                        await trio.sleep(0.1)

    def _forward(self, signum: int) -> None:
        for process in list(self.processes.values()):
            if process.returncode is None:
                process.send_signal(signum)

    async def _watch_signals(self, signals: trio.abc.ReceiveChannel[int], outer: trio.Nursery) -> None:
        async for signum in signals:
            if not self.stopping:
                self.stopping = True
                log.info("%s: every worker stops taking calls; live calls may go on for up to %g s",
                         signal.Signals(signum).name, self.settings.drain_grace)
                outer.start_soon(self._give_up_later)
            else:
                log.info("%s again: ending every live call now", signal.Signals(signum).name)
            self._forward(signal.SIGTERM)

    async def _give_up_later(self) -> None:
        from .calls import DRAIN_SETTLE

        await trio.sleep(self.settings.drain_grace + DRAIN_SETTLE + GIVE_UP_AFTER)
        if self.processes:
            self.gave_up = True
            log.error("workers %s still running past the drain: killing them",
                      ", ".join(str(p.pid) for p in self.processes.values()))
            self._forward(signal.SIGKILL)

    async def run(self) -> int:
        settings = self.settings
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as outer:
                if settings.metrics_port is not None:
                    url = await outer.start(lambda task_status: serve_metrics_port(
                        lambda: render_multiprocess(self.metrics_dir), settings.api_token, settings.metrics_port,
                        task_status=task_status))
                    log.info("metrics of every worker on %s", url)
                async with trio.open_nursery() as workers:
                    outer.start_soon(self._watch_signals, signals, outer)
                    host, port = self.sockets[0].getsockname()[:2]
                    log.info("earpiece on http://%s:%d with %d workers (parent pid %d); --max-calls %s per worker",
                             f"[{host}]" if ":" in host else host, port, len(self.sockets), os.getpid(),
                             settings.max_calls or "unlimited")
                    for index in range(len(self.sockets)):
                        workers.start_soon(self._keep_running, index)
                outer.cancel_scope.cancel()
        log.info("every worker has exited")
        return 1 if self.gave_up else 0


def _mark_dead(pid: int, path: str) -> None:
    """Drop a dead worker's live gauges (``earpiece_calls_active``, the busy ratio); its
    counters stay in the sum."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


def _status(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def run_workers(settings: Settings, argv: Sequence[str], env: Mapping[str, str]) -> int:
    """The parent of ``--workers N``; returns the process's exit status."""
    sockets = bind_worker_sockets(settings.host, settings.port, settings.workers)
    metrics_dir = tempfile.mkdtemp(prefix="earpiece-metrics-")
    try:
        return trio.run(Supervisor(settings, argv, env, sockets, metrics_dir).run)
    finally:
        for sock in sockets:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
