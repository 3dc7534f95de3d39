"""``bench/dashboard.png``: the live dashboard in headless Chromium, mid-call.

    .venv/bin/python bench/dashboard.py [--out bench/dashboard.png] [--provider whisper]

Starts a gateway on 127.0.0.1 (port 0) with the offline default (``whisper``), opens
``GET /`` in Debian's ``chromium`` through ``chromedriver`` (selenium), streams the
bundled sample call twice at Twilio's pace (the first has ended when the picture is
taken, the second is mid-sentence) and saves a screenshot.  The browser test
(tests/system/test_dashboard_browser.py) drives the page the same way, through
``open_chromium`` here.

Chromium never leaves the machine: background networking is off and every
non-loopback request goes to a proxy on a closed loopback port.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["find_chromium", "open_chromium", "page_state", "PAGE_STATE_JS"]

CHROMIUM_NAMES = ("chromium", "chromium-browser")
DRIVER_NAMES = ("chromedriver",)

#: one round trip: every call card as the page shows it
PAGE_STATE_JS = """
return Array.from(document.querySelectorAll('#calls .call')).map(card => ({
  sid: card.dataset.callSid,
  heading: card.querySelector('h3').textContent,
  status: card.querySelector('.status').textContent,
  provider: card.querySelector('.provider').textContent,
  audio: card.querySelector('.audio').textContent,
  dropped: card.querySelector('.dropped').textContent,
  partial: card.querySelector('.partial').textContent,
  committed: Array.from(card.querySelectorAll('.committed li')).map(li => li.textContent),
}));
"""


def find_chromium() -> tuple[str, str] | None:
    """Paths of the chromium binary and of chromedriver, or None when either is missing."""
    browser = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = next((p for p in map(shutil.which, DRIVER_NAMES) if p), None)
    return (browser, driver) if browser and driver else None


@contextmanager
def open_chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium under selenium (``--no-sandbox``: tests run as root), with its
    own profile in a temporary folder.  Raises ``RuntimeError`` when chromium is absent."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        raise RuntimeError("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    browser, driver_path = found
    with tempfile.TemporaryDirectory(prefix="earpiece-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--user-data-dir={profile}", f"--window-size={width},{height}",
                     "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-default-apps",
                     "--disable-domain-reliability", "--disable-client-side-phishing-detection",
                     "--disable-extensions", "--no-pings", "--hide-scrollbars",
                     # loopback only: anything else goes to a closed port (Chromium never
                     # proxies loopback addresses)
                     "--proxy-server=http://127.0.0.1:9"):
            options.add_argument(flag)
        # an explicit driver path: selenium never looks for (or downloads) one
        service = Service(executable_path=driver_path, log_output=os.devnull)
        driver = webdriver.Chrome(service=service, options=options)
        try:
            driver.set_window_size(width, height)
            yield driver
        finally:
            driver.quit()


def page_state(driver: Any) -> list[dict[str, Any]]:
    return driver.execute_script(PAGE_STATE_JS)


async def _run(out: Path, provider_name: str) -> None:
    import trio

    from actors.dsp import wav_to_mulaw_8k
    from gateway.app import STREAM_PATH, Gateway
    from gateway.cli import sample_call_path
    from gateway.config import Settings
    from gateway.serve import serve_gateway
    from gateway.simulator import simulate_call
    from providers.registry import create_provider

    provider = create_provider(provider_name, os.environ)
    gateway = Gateway(Settings(port=0, provider=provider.name, max_busy=None), provider, [])
    mulaw = wav_to_mulaw_8k(sample_call_path())
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve_gateway(gateway, shutdown_trigger=stop.wait,
                                                                      task_status=task_status))
        http = binds[0]
        ws = http.replace("http://", "ws://", 1) + STREAM_PATH

        def shoot() -> None:
            with open_chromium(1200, 640) as driver:
                driver.get(http + "/")
                trio.from_thread.run(first_call)
                trio.from_thread.run(second_call_midway)
                driver.save_screenshot(str(out))

        async def first_call() -> None:
            await simulate_call(ws, mulaw, call_sid="CA" + "5e1f" * 8, stream_sid="MZ" + "1" * 32,
                                custom_parameters={"From": "+15005550006", "To": "+15005550001"})

        async def second_call_midway() -> None:
            nursery.start_soon(lambda: simulate_call(
                ws, mulaw, call_sid="CA" + "a7c3" * 8, stream_sid="MZ" + "2" * 32,
                custom_parameters={"From": "+15005550010", "To": "+15005550001"}))
            await trio.sleep(7.3)  # a picture of a call mid-sentence

        await trio.to_thread.run_sync(shoot)
        stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("dashboard.png"))
    parser.add_argument("--provider", default="whisper", help="STT provider (whisper: the offline default)")
    args = parser.parse_args(argv)
    import trio

    if find_chromium() is None:
        print("bench/dashboard.py: needs chromium and chromedriver (apt-get install chromium chromium-driver)",
              file=sys.stderr)
        return 2
    trio.run(_run, args.out, args.provider)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
