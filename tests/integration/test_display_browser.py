"""The wall display in a real headless browser (Debian's chromium and chromedriver, driven by selenium), fed by
real publisher processes through the real Mosquitto on 127.0.0.1:1883.

The page must load from retained messages alone (the publisher of the retained state has exited before the display
starts), fit a 256-channel cabinet on a 1920×1080 screen without scrolling, show a channel's change of state as a
change of colour, and turn stale when the publishing process is killed (the broker publishes its offline will).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from formation.feed import FeedEvent, Topics

ROOT = Path(__file__).resolve().parents[2]
PUBLISHER = Path(__file__).with_name("display_publisher.py")
REQUIRE_SERVICES = os.environ.get("FORMATION_REQUIRE_SERVICES") == "1"
WAIT_S = 10.0


def _need_browser() -> tuple[str, str]:
    """Paths of chromium and chromedriver; skip (or fail under FORMATION_REQUIRE_SERVICES=1) without them."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if path is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        reason = f"headless browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} and FORMATION_REQUIRE_SERVICES=1")
        pytest.skip(reason)
    assert chromium is not None and driver is not None
    return chromium, driver


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless chromium with a 1920×1080 viewport."""
    chromium, driver_path = _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(arg)
    # An explicit driver path: selenium's own manager would try to download one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1920, "height": 1080, "deviceScaleFactor": 1, "mobile": False}
    )
    try:
        yield driver
    finally:
        driver.quit()


def _wait(what: str, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """``check()``'s first truthy value within ``timeout_s``; fails naming ``what`` and the last value otherwise."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"{what}: not seen within {timeout_s:g} s (last: {value!r})")


def _clear_retained(host: str, port: int, topics: list[str]) -> None:
    import aiomqtt

    async def clear() -> None:
        async with aiomqtt.Client(host, port) as client:
            for topic in topics:
                await client.publish(topic, b"", qos=1, retain=True)

    asyncio.run(clear())


async def _publish(host: str, port: int, topic: str, payload: bytes) -> None:
    import aiomqtt

    async with aiomqtt.Client(host, port) as client:
        await client.publish(topic, payload, qos=1)


async def _publish_retained(host: str, port: int, topics: Topics) -> None:
    import aiomqtt
    from display_publisher import retained  # beside this file

    async with aiomqtt.Client(host, port) as client:
        await retained(client, topics)


def _publisher(host: str, port: int, site: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(PUBLISHER), host, str(port), site, "l1", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_the_page_loads_from_retained_state_changes_colour_and_goes_stale_when_the_publisher_dies(
    mqtt_broker: tuple[str, int], browser: Any
) -> None:
    host, port = mqtt_broker
    site = f"disp-{uuid.uuid4().hex[:8]}"
    topics = Topics(site, "l1")
    retained = [
        topics.status(),
        topics.cabinet("cab1"),
        topics.channel("cab1", 5),
        topics.chamber("ageing-1"),
        topics.rack("R07"),
        topics.grading("LOT-T"),
    ]
    procs: list[subprocess.Popen[str]] = []
    try:
        # The live publisher of step 3 starts now and waits: its start-up overlaps the steps before.
        live = _publisher(host, port, site, "0.5")
        procs.append(live)
        # 1. The retained state, published (by a connection closed since) before the display starts.
        asyncio.run(_publish_retained(host, port, topics))

        # 2. The display, as a user starts it; --port 0 takes a free port and prints it.
        display = subprocess.Popen(
            [sys.executable, "-m", "formation", "display", "--mqtt", f"mqtt://{host}:{port}", "--port", "0",
             "--site-name", site, "--line", "l1"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(display)
        assert display.stdout is not None
        first = display.stdout.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+/)", first)
        assert match, first + (display.stderr.read() if display.stderr else "")
        browser.get(match.group(1))

        def tiles() -> int:
            return int(browser.execute_script("return document.querySelectorAll('.cab .ch').length"))

        _wait("the cabinet's 256 channels from retained messages", lambda: tiles() == 256)
        page = browser.execute_script(
            "const r = (s) => document.querySelector(s); return {"
            " orch: r('#orch').textContent, chamber: r('.chamber .temp').textContent,"
            " rack: r('#racks').textContent, lot: r('#lots').textContent,"
            " title: r('#where').textContent, running: r('.ch[data-channel=\"5\"]').dataset.state};"
        )
        assert page["orch"] == "ORCHESTRATOR ONLINE"
        assert page["chamber"] == "44.80 °C" and "R07" in page["rack"] and "25 %" in page["rack"]
        assert "LOT-T" in page["lot"] and "A 240 (93.8 %)" in page["lot"]
        assert page["title"] == f"{site} / l1" and page["running"] == "running"

        # A 256-channel cabinet fits 1920×1080 without scrolling, every tile on screen.
        fit = browser.execute_script(
            "const d = document.documentElement; const t = [...document.querySelectorAll('.cab .ch')];"
            "return {w: innerWidth, h: innerHeight, sw: d.scrollWidth, sh: d.scrollHeight,"
            " bottom: Math.max(...t.map((e) => e.getBoundingClientRect().bottom)),"
            " right: Math.max(...t.map((e) => e.getBoundingClientRect().right)),"
            " tile: t[0].getBoundingClientRect().width};"
        )
        assert (fit["w"], fit["h"]) == (1920, 1080)
        assert fit["sw"] <= 1920 and fit["sh"] <= 1080, fit
        assert fit["bottom"] <= 1080 and fit["right"] <= 1920 and fit["tile"] >= 40, fit

        # Step and voltage on hover.
        from selenium.webdriver.common.action_chains import ActionChains

        tile = browser.find_element("css selector", '.ch[data-channel="5"]')
        ActionChains(browser).move_to_element(tile).perform()
        tip = browser.find_element("id", "tip")
        assert tip.is_displayed() and "step 1 form (charge)" in tip.text and "3.408 V" in tip.text

        # 3. A live publisher: the page is fresh while it publishes.
        assert live.stdout is not None and live.stdin is not None
        live.stdin.write("go\n")
        live.stdin.flush()
        assert live.stdout.readline().strip() == "ready", live.stderr.read() if live.stderr else ""
        _wait("a fresh page", lambda: not browser.execute_script("return document.body.classList.contains('stale')"))

        def colour() -> str:
            return str(browser.execute_script(
                "return getComputedStyle(document.querySelector('.ch[data-channel=\"5\"]')).backgroundColor"
            ))  # fmt: skip

        before = colour()
        live.stdin.write("5 faulted\n")
        live.stdin.flush()
        assert live.stdout.readline().strip() == "ok"
        after = _wait("channel 5 in a new colour", lambda: colour() != before and colour())
        assert browser.execute_script("return document.querySelector('.ch[data-channel=\"5\"]').dataset.state") == (
            "faulted"
        )
        neighbour = browser.execute_script(
            "return getComputedStyle(document.querySelector('.ch[data-channel=\"6\"]')).backgroundColor"
        )
        assert neighbour == before and after != before

        # An alarm (an event: never retained) shows among the latest alarms as it happens.
        alarm = FeedEvent(event="alarm", severity="critical", code="over_temperature", message="cell T0005 at 61 °C",
                          cabinet="cab1", channel=5)  # fmt: skip
        asyncio.run(_publish(host, port, topics.events(), alarm.to_json()))
        alarms = browser.find_element("id", "alarms")
        _wait("the alarm on the page", lambda: "over_temperature" in alarms.text)
        assert "over_temperature · cab1 ch 5" in alarms.text and "cell T0005 at 61 °C" in alarms.text

        # 4. The publisher dies: the broker publishes its will and the page says so.
        assert not browser.find_element("id", "stale").is_displayed()
        live.send_signal(signal.SIGKILL)
        live.wait(timeout=5)
        banner = browser.find_element("id", "stale")
        _wait("the stale banner", banner.is_displayed)
        assert "orchestrator offline since" in banner.text
        assert browser.find_element("id", "orch").text == "ORCHESTRATOR OFFLINE"

        # Ctrl-C stops the display cleanly, and the page says it lost its server.
        display.send_signal(signal.SIGINT)
        assert display.wait(timeout=10) == 0
        assert display.stdout.read().strip() == "display stopped"
        _wait("the lost server", lambda: "display server unreachable" in banner.text)
    finally:
        for proc in procs:
            _stop(proc)
        _clear_retained(host, port, retained)
