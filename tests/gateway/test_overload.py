"""Load shedding: while live calls fall behind real time, new calls are refused (webhook
busy, upgrade 503, /readyz 503) and live calls go on; once they catch up, calls are
taken again."""

from __future__ import annotations

import httpx
import pytest
import trio

from actors.messages import AudioBatch
from actors.stats import MULAW_BYTES_PER_MS, CallStats
from gateway.calls import CallRegistry
from gateway.config import ConfigError, Settings
from gateway.overload import TICK, OverloadGuard
from gateway.simulator import post_voice_webhook, simulate_call
from gateway.twiml import CallRejected, parse_connect_stream
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import ACCOUNT_SID, ListSink, call_ids, open_stream_socket, tone
from tests.gateway.test_security_admission import _rejection


def _calls(registry: CallRegistry, backlogs_ms: list[int]) -> list[CallStats]:
    """Live calls whose providers accepted all but ``backlog`` ms of 10 s of audio."""
    stats_list = []
    for backlog in backlogs_ms:
        record = registry.admit("scripted")
        assert record is not None
        record.stats = stats = CallStats(audio_bytes=10_000 * MULAW_BYTES_PER_MS)
        stats.forward(AudioBatch(0, 10_000 - backlog, b""))
        stats_list.append(stats)
    return stats_list


def _catch_up(stats_list: list[CallStats], backlog_ms: int) -> None:
    for stats in stats_list:
        stats.forwarded_until_ms = stats.audio_ms - backlog_ms


async def test_the_guard_sheds_while_the_median_call_is_behind_and_recovers_after(autojump_clock) -> None:
    registry = CallRegistry()
    guard = OverloadGuard(registry, max_lag=2.0, max_busy=None)
    seen: list[tuple[int, bool, str]] = []

    async def look() -> None:
        await trio.sleep(TICK)
        seen.append((guard.behind_ms, registry.ready, registry.why_not_ready()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(guard.run)
        await trio.sleep(TICK / 2)  # look between the guard's ticks
        calls = _calls(registry, [100, 100, 60_000])  # one call's provider is down: sheds nothing
        await look()
        _catch_up(calls, 2_500)  # every call 2.5 s behind: overloaded
        await look()
        assert registry.admit("scripted") is None
        _catch_up(calls, 1_500)  # better, but not under half the bound yet
        await look()
        _catch_up(calls, 900)
        await look()
        nursery.cancel_scope.cancel()
    assert seen == [(100, True, ""), (2_500, False, "overloaded (3 calls; at the end of its CPU)"),
                    (1_500, False, "overloaded (3 calls; at the end of its CPU)"), (900, True, "")]
    assert registry.rejected_calls == 1


async def test_the_guard_sheds_while_the_loop_thread_is_busy_before_any_call_is_late(autojump_clock) -> None:
    """The early signal: CPU time of the loop's thread per second of (virtual) time."""
    registry = CallRegistry()
    cpu = [0.0]
    guard = OverloadGuard(registry, max_lag=2.0, max_busy=0.9, cpu_time=lambda: cpu[0])
    seen: list[tuple[float, bool]] = []

    async def spend(share: float, looks: int = 1) -> None:
        for _ in range(looks):
            cpu[0] += share * TICK
            await trio.sleep(TICK)
            seen.append((round(guard.busy, 2), registry.ready))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(guard.run)
        await trio.sleep(TICK / 2)
        _calls(registry, [0, 0, 0])  # nobody behind
        await spend(0.5)
        await spend(0.95)  # at the end of the core
        await spend(0.85)  # under the bound, not under the margin: still refusing
        await spend(0.7)
        nursery.cancel_scope.cancel()
    assert seen == [(0.5, True), (0.95, False), (0.85, False), (0.7, True)]


async def test_a_guard_without_limits_measures_but_never_refuses_or_readmits(autojump_clock) -> None:
    """With --max-busy 0 and no --max-lag the guard only measures (for /metrics): a full
    core refuses no call, and a refusal someone else decided is not lifted by it."""
    registry = CallRegistry()
    cpu = [0.0]
    guard = OverloadGuard(registry, max_lag=None, max_busy=None, cpu_time=lambda: cpu[0])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(guard.run)
        await trio.sleep(TICK / 2)
        cpu[0] += TICK
        await trio.sleep(TICK)
        assert (round(guard.busy, 2), registry.ready) == (1.0, True)
        registry.overloaded = True
        await trio.sleep(3 * TICK)  # an idle loop: busy 0
        assert (round(guard.busy, 2), registry.overloaded) == (0.0, True)
        nursery.cancel_scope.cancel()


async def test_an_overloaded_gateway_rejects_new_calls_and_finishes_the_live_one() -> None:
    provider, sink = ScriptedProvider(), ListSink()
    async with running_gateway(provider, [sink]) as gw:
        registry = gw.gateway.registry
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: simulate_call(gw.ws_url, tone(3000), call_sid=call_ids(1)[0],
                                                         stream_sid=call_ids(1)[1]))
                while not registry.calls:
                    await trio.sleep(0.01)
                registry.overloaded = True  # what LagGuard sets
                with pytest.raises(CallRejected):
                    parse_connect_stream(await post_voice_webhook(gw.http_url, call_sid=call_ids(2)[0],
                                                                  account_sid=ACCOUNT_SID))
                async with httpx.AsyncClient() as http:
                    ready = await http.get(gw.http_url + "/readyz")
                assert ready.status_code == 503 and "overloaded" in ready.text
                with pytest.raises(BaseException) as refused:
                    async with open_stream_socket(gw.ws_url):
                        pass
                rejection = _rejection(refused.value)
                assert rejection is not None and rejection.status_code == 503
                await gw.idle()
    assert [e["call_sid"] for e in sink.events if e["type"] == "call_ended"] == [call_ids(1)[0]]
    ended = sink.events[-1]
    assert (ended["reason"], ended["forwarded_ms"], ended["dropped_ms"]) == ("stop", 3000, 0)


@pytest.mark.parametrize(("name", "raw", "expected"), [
    ("max_lag", None, None), ("max_lag", "1", 1.0), ("max_lag", "5", 5.0), ("max_lag", "0", None), ("max_lag", "off", None),
    ("max_busy", None, 0.9), ("max_busy", "0.75", 0.75), ("max_busy", "1", 1.0), ("max_busy", "0", None),
])
def test_overload_settings(name: str, raw, expected) -> None:
    assert getattr(Settings.from_sources({name: raw}, {}), name) == expected
    env = {f"EARPIECE_{name.upper()}": raw} if raw is not None else {}
    assert getattr(Settings.from_sources({}, env), name) == expected


@pytest.mark.parametrize(("name", "raw", "says"), [
    ("max_lag", "-1", "--max-lag"), ("max_busy", "1.5", "--max-busy must be a share of one core"),
    ("max_busy", "most", "--max-busy must be a share of one core"),
])
def test_bad_overload_settings_are_configuration_errors(name: str, raw: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Settings.from_sources({name: raw}, {})
