"""The console page in real Chromium: dial, watch the states, listen, talk, hang up — at desktop
and at phone width."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser

from tests.conftest import API_KEY, ServiceProcess
from tests.console.browser import WAIT_MS, Console, chromium


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def open_console(
    browser: Browser, service: ServiceProcess, width: int, height: int
) -> Console:
    page = await browser.new_page(viewport={"width": width, "height": height})
    console = Console(page)
    await page.goto(f"{service.url}/#key={API_KEY}")  # the link the service prints
    await console.line("✅ Connected to call events WebSocket")
    return console


async def test_dial_listen_talk_and_hang_up(browser: Browser, service: ServiceProcess) -> None:
    console = await open_console(browser, service, 1280, 800)
    page = console.page
    assert (await page.get_by_test_id("simulator-badge").is_visible()) is True
    await page.get_by_test_id("dial-to").fill("+15550100011")
    await page.get_by_test_id("dial").click()
    row = page.locator('[data-testid="call-row"][data-state="streaming"]')
    await row.first.wait_for(timeout=WAIT_MS)
    call_id = await row.first.get_attribute("data-call-id")
    assert await page.get_by_test_id("panel-call-id").text_content() == call_id

    await page.get_by_test_id("listen").click()
    await console.line("✅ Connected to audio stream")
    await console.until(
        "Number(document.querySelector('[data-testid=meter-inbound]').dataset.level) > 0.01"
    )
    assert await page.get_by_test_id("audio-format").get_attribute("data-encoding") == "PCMU"

    talk = page.get_by_test_id("talk")
    await talk.dispatch_event("pointerdown")
    await console.until("window.callbridgeConsole.audio.stats.talkFrames >= 10")
    await console.until(  # the simulator plays it to the far party: the outbound track moves
        "Number(document.querySelector('[data-testid=meter-outbound]').dataset.level) > 0.01"
    )
    await talk.dispatch_event("pointerup")
    await console.until("window.callbridgeConsole.audio.talking === false")

    await page.get_by_test_id("hangup").click()
    await page.locator(
        f'[data-testid="call-row"][data-call-id="{call_id}"][data-state="ended"]'
    ).wait_for(timeout=WAIT_MS)
    await page.locator('[data-testid="audio-end"][data-reason]').wait_for(timeout=WAIT_MS)
    seqs = [
        int(s)
        for s in await page.locator('[data-testid="event-line"]').evaluate_all(
            "lines => lines.map(line => line.dataset.seq)"
        )
    ]
    assert seqs == sorted(set(seqs))  # the call's log: in order, nothing twice
    types = await page.locator('[data-testid="event-line"]').evaluate_all(
        "lines => lines.map(line => line.dataset.type)"
    )
    assert {"call.initiated", "media.started", "call.hangup"} <= set(types)
    assert console.errors == []


async def test_the_console_fits_a_phone(browser: Browser, service: ServiceProcess) -> None:
    console = await open_console(browser, service, 390, 844)
    page = console.page
    await page.get_by_test_id("dial-to").fill("+15550100011")
    await page.get_by_test_id("dial").click()
    await page.locator('[data-testid="call-row"][data-state="streaming"]').first.wait_for(
        timeout=WAIT_MS
    )
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0  # nothing wider than the screen
    box = await page.get_by_test_id("talk").bounding_box()
    assert box is not None
    assert box["height"] >= 44  # a thumb-sized target
    assert console.errors == []
