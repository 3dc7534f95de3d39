"""Load shedding: while the event loop runs late, new calls are refused (webhook busy,
upgrade 503, /readyz 503) and live calls go on; once it catches up, calls are taken again."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from gateway.calls import CallRegistry
from gateway.config import ConfigError, Settings
from gateway.overload import TICK, LoopLagGuard
from gateway.simulator import post_voice_webhook, simulate_call
from gateway.twiml import CallRejected, parse_connect_stream
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import ACCOUNT_SID, ListSink, call_ids, open_stream_socket, tone
from tests.test_security_admission import _rejection


async def _stall_the_loop(clock: trio.testing.MockClock, seconds: float, ticks: int) -> None:
    """Make every one of the next ``ticks`` timer wake-ups ``seconds`` late, as a
    process without CPU would see them (the clock moves while no task runs)."""
    for _ in range(ticks):
        await trio.sleep(TICK / 2)
        clock.jump(seconds)


async def test_the_guard_refuses_while_the_loop_is_late_and_recovers_after(autojump_clock) -> None:
    registry = CallRegistry()
    guard = LoopLagGuard(registry, max_lag=0.5)
    seen: list[tuple[bool, str]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(guard.run)
        await _stall_the_loop(autojump_clock, 0.1, 20)  # 100 ms late: busy, not overloaded
        seen.append((registry.ready, registry.why_not_ready()))
        await _stall_the_loop(autojump_clock, 1.0, 4)  # a second late, again and again
        seen.append((registry.ready, registry.why_not_ready()))
        assert registry.admit("scripted") is None
        await trio.sleep(3 * TICK)  # one on-time tick is not yet recovery (smoothed)
        seen.append((registry.ready, ""))
        await trio.sleep(30 * TICK)
        seen.append((registry.ready, registry.why_not_ready()))
        nursery.cancel_scope.cancel()
    assert seen == [(True, ""), (False, "overloaded (0 calls; the event loop runs late)"), (False, ""), (True, "")]
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
                registry.overloaded = True  # what LoopLagGuard sets
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


@pytest.mark.parametrize(("raw", "expected"), [(None, 0.5), ("2", 2.0), ("0", None), ("off", None)])
def test_max_loop_lag_setting(raw, expected) -> None:
    assert Settings.from_sources({"max_loop_lag": raw}, {}).max_loop_lag == expected


def test_a_bad_max_loop_lag_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="--max-loop-lag"):
        Settings.from_sources({"max_loop_lag": "-1"}, {})
