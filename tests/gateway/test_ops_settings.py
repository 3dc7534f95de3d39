"""``--workers``, ``--drain-grace``, ``--metrics-port``: what they accept, and the one
clear line (exit status 2) for what they do not."""

from __future__ import annotations

import os

import pytest

from gateway.cli import main
from gateway.config import ConfigError, Settings


def test_workers_drain_grace_and_metrics_port_come_from_flags_or_their_variables():
    assert (Settings.from_sources({}, {}).workers, Settings.from_sources({}, {}).drain_grace) == (1, 300.0)
    settings = Settings.from_sources({"workers": "3", "metrics_port": "9100"}, {"EARPIECE_DRAIN_GRACE": "20"})
    assert (settings.workers, settings.drain_grace, settings.metrics_port) == (3, 20.0, 9100)
    assert Settings.from_sources({"workers": "2"}, {"EARPIECE_WORKERS": "5"}).workers == 2
    assert Settings.from_sources({"workers": "auto"}, {}).workers == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("flags", "message"), [
    ({"workers": "0"}, "--workers must be positive"),
    ({"workers": "many"}, "--workers must be a whole number"),
    ({"drain_grace": "-5"}, "--drain-grace must be a positive"),
    ({"metrics_port": "70000"}, "--metrics-port must be a port number"),
])
def test_bad_values_are_one_clear_error(flags, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_sources(flags, {})


def test_a_taken_port_for_the_workers_exits_2_with_one_line(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = main(["serve", "--provider", "scripted", "--workers", "2", "--port", str(port)])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("earpiece: error: cannot listen on 127.0.0.1:") and err.count("\n") == 1
