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
from gateway.overload import TICK, LagGuard
from gateway.simulator import post_voice_webhook, simulate_call
from gateway.twiml import CallRejected, parse_connect_stream
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import ACCOUNT_SID, ListSink, call_ids, open_stream_socket, tone
from tests.test_security_admission import _rejection


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
    guard = LagGuard(registry, max_lag=2.0)
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
    assert seen == [(100, True, ""), (2_500, False, "overloaded (3 calls falling behind real time)"),
                    (1_500, False, "overloaded (3 calls falling behind real time)"), (900, True, "")]
    assert registry.rejected_calls == 1


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


@pytest.mark.parametrize(("raw", "expected"), [(None, 2.0), ("5", 5.0), ("0", None), ("off", None)])
def test_max_lag_setting(raw, expected) -> None:
    assert Settings.from_sources({"max_lag": raw}, {}).max_lag == expected


def test_a_bad_max_lag_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="--max-lag"):
        Settings.from_sources({"max_lag": "-1"}, {})
