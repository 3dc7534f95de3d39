"""The dashboard at ``GET /`` in a real headless Chromium (Debian ``chromium`` +
``chromium-driver``, driven by selenium), against a real gateway on 127.0.0.1 with a
simulated call at Twilio's pace.  Selenium blocks, so it runs in a worker thread while
trio serves the gateway."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest
import trio

from bench.dashboard import find_chromium, open_chromium, page_state
from gateway.simulator import simulate_call
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import call_ids, tone

pytestmark = pytest.mark.slow

LIMIT = 90  # seconds: a bound on each test (a browser start included), never a speed assertion
SHOWN_WITHIN = 2.0  # seconds from an event to the page showing it
TOKEN = "dash-7c1e-not-a-real-secret"

if find_chromium() is None:
    pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)


class TimedSink:
    """Every event with the moment it was emitted (monotonic clock, shared with the
    browser thread's observations)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []

    async def emit(self, event: Mapping[str, Any]) -> None:
        self.events.append((time.monotonic(), dict(event)))

    def first(self, predicate) -> float | None:
        return next((at for at, e in self.events if predicate(e)), None)


def watch(driver: Any, call_sid: str, deadline: float) -> dict[str, Any]:
    """Polls the page (one script round trip per 50 ms) until the call shows as ended;
    returns when each partial, committed line and the end were first seen."""
    seen: dict[str, Any] = {"partial": {}, "committed": {}, "ended": None, "last": None}
    while time.monotonic() < deadline:
        now = time.monotonic()
        card = next((c for c in page_state(driver) if c["sid"] == call_sid), None)
        if card is not None:
            seen["last"] = card
            if card["partial"]:
                seen["partial"].setdefault(card["partial"], now)
            for line in card["committed"]:
                seen["committed"].setdefault(line, now)
            if card["status"].startswith("ended"):
                seen["ended"] = now
                return seen
        time.sleep(0.05)
    return seen


async def test_dashboard_shows_partials_commits_and_the_end_of_a_live_call(tmp_path):
    provider, sink = ScriptedProvider(partial_ms=300, commit_ms=2000), TimedSink()
    sid, stream_sid = call_ids(42)
    shot = tmp_path / "dashboard.png"
    with trio.fail_after(LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            def browse() -> tuple[dict[str, Any], list[dict[str, Any]]]:
                with open_chromium(1024, 768) as driver:
                    driver.get(gw.http_url + "/")
                    wait_text(driver, "connection", "live")
                    trio.from_thread.run_sync(nursery.start_soon, call)
                    seen = watch(driver, sid, time.monotonic() + 30)
                    driver.save_screenshot(str(shot))
                    return seen, page_state(driver)

            async def call() -> None:  # real time: the page sees it as it happens
                await simulate_call(gw.ws_url, tone(4600), call_sid=sid, stream_sid=stream_sid,
                                    custom_parameters={"From": "+15005550006", "To": "+15005550001"})

            async with trio.open_nursery() as nursery:
                seen, final = await trio.to_thread.run_sync(browse)
            await gw.idle()
    events = [e for _, e in sink.events]
    committed = [e["text"] for e in events if e.get("kind") == "committed"]
    assert committed == ["audio 0 to 2000", "audio 2000 to 4000", "audio 4000 to 4600"]
    # every committed line appeared, within 2 s of its event, in order
    assert list(seen["committed"]) == committed
    for text, shown in seen["committed"].items():
        emitted = sink.first(lambda e, t=text: e.get("kind") == "committed" and e["text"] == t)
        assert shown - emitted <= SHOWN_WITHIN, (text, shown - emitted)
    # the partial line changed in place, each text within 2 s of its event
    assert len(seen["partial"]) >= 3
    for text, shown in seen["partial"].items():
        emitted = sink.first(lambda e, t=text: e.get("kind") == "partial" and e["text"] == t)
        assert emitted is not None and shown - emitted <= SHOWN_WITHIN, (text, shown - emitted)
    # marked ended within 2 s of call_ended, with its figures
    ended_at = sink.first(lambda e: e["type"] == "call_ended")
    assert seen["ended"] is not None and seen["ended"] - ended_at <= SHOWN_WITHIN
    [card] = final
    assert card["status"] == "ended · stop" and card["partial"] == ""
    assert card["heading"] == "+15005550006 → +15005550001"
    assert (card["audio"], card["dropped"]) == ("4.6 s", "0.0 s")
    assert card["provider"].startswith("scripted")
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


async def test_with_a_token_the_page_shows_nothing_until_it_is_given(tmp_path):
    provider, sink = ScriptedProvider(partial_ms=300, commit_ms=1000), TimedSink()
    sid, stream_sid = call_ids(43)
    with trio.fail_after(LIMIT):
        async with running_gateway(provider, [sink], api_token=TOKEN) as gw:
            committed = trio.Event()

            def browse() -> dict[str, Any]:
                with open_chromium(390, 844) as driver:  # a phone
                    driver.get(gw.http_url + "/")
                    form = wait_visible(driver, "token-form")
                    trio.from_thread.run_sync(nursery.start_soon, call)
                    trio.from_thread.run(committed.wait)
                    locked = {
                        "cards": len(page_state(driver)),
                        "text": driver.find_element("tag name", "body").text,
                        "label": driver.find_element("css selector", "label[for=token-input]").text,
                        "calls_hidden": not driver.find_element("id", "calls-section").is_displayed(),
                        "overflow": driver.execute_script(
                            "return document.documentElement.scrollWidth > window.innerWidth"),
                    }
                    field = driver.find_element("id", "token-input")
                    field.send_keys("not-the-token")
                    form.submit()
                    refused = wait_text(driver, "token-error", "not accepted")
                    driver.find_element("id", "token-input").send_keys(TOKEN)
                    driver.find_element("css selector", "#token-form button").click()
                    wait_visible(driver, "calls-section")
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline and not any(
                            c["committed"] for c in page_state(driver) if c["sid"] == sid):
                        time.sleep(0.05)
                    return {**locked, "refused": refused, "after": page_state(driver),
                            "kept": driver.execute_script("return sessionStorage.getItem('earpiece.apiToken')"),
                            "url_token": TOKEN in driver.current_url}

            async def call() -> None:
                await simulate_call(gw.ws_url, tone(3000), call_sid=sid, stream_sid=stream_sid)

            async def note_commit() -> None:
                while not any(e.get("kind") == "committed" for _, e in sink.events):
                    await trio.sleep(0.02)
                committed.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(note_commit)
                seen = await trio.to_thread.run_sync(browse)
            await gw.idle()
    # before the token: a labelled form, no call, no transcript, at phone width
    assert seen["cards"] == 0 and seen["calls_hidden"]
    assert "audio 0 to" not in seen["text"] and sid not in seen["text"]
    assert seen["label"] == "API token" and not seen["overflow"]
    assert "not accepted" in seen["refused"]
    # with it: the call and its transcript; the token kept for the tab, never in the address
    [card] = [c for c in seen["after"] if c["sid"] == sid]
    assert card["committed"][0] == "audio 0 to 1000"
    assert seen["kept"] == TOKEN and not seen["url_token"]


def wait_visible(driver: Any, element_id: str, timeout: float = 10) -> Any:
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.visibility_of_element_located(("id", element_id)))


def wait_text(driver: Any, element_id: str, text: str, timeout: float = 10) -> str:
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(expected_conditions.text_to_be_present_in_element(("id", element_id), text))
    return driver.find_element("id", element_id).text
