"""The embeddable JS client in real Chromium: events resume across a service restart with no
gap and no duplicate, audio reaches the AudioWorklet as the simulator's speech, talk-back
reaches the simulator, and close codes are explained."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser

from callbridge.audio.g711 import ulaw_decode, ulaw_encode
from callbridge.sim.speech import speech_pcm
from tests.conftest import API_KEY, ServiceProcess, running_service
from tests.console.browser import Console, chromium
from tests.signals import samples_of

LONG_CALL = "+15550100011"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def open_console(browser: Browser, service: ServiceProcess) -> Console:
    page = await browser.new_page()
    console = Console(page)
    await page.goto(service.url + "/api/health")  # same origin, and no console of its own
    await page.evaluate(
        """async (key) => {
            window.cb = await import('/static/callbridge.js');
            window.seen = [];
            window.tokens = window.cb.tokenFromApi({ apiKey: key });
        }""",
        API_KEY,
    )
    return console


async def dial(service: ServiceProcess, to: str = LONG_CALL) -> str:
    async with httpx.AsyncClient(
        base_url=service.url, timeout=15, headers=service.api_headers
    ) as api:
        response = await api.post("/api/calls", json={"to": to})
    assert response.status_code == 201, response.text
    call_id: str = response.json()["data"]["call_control_id"]
    return call_id


async def listening(browser: Browser, service: ServiceProcess) -> Console:
    """A page whose `window.audio` listens to a new call and knows its codec."""
    console = await open_console(browser, service)
    await console.page.evaluate(
        """async (id) => {
            window.audio = new window.cb.CallAudio({ callControlId: id, token: window.tokens });
            window.audio.addEventListener('worklet:tap', (e) => { window.tapped = e.detail; });
            await window.audio.listen();
        }""",
        await dial(service),
    )
    await console.line("✅ Connected to audio stream")
    await console.until("window.audio.codec !== null")
    return console


async def test_close_codes_are_explained(browser: Browser, service: ServiceProcess) -> None:
    console = await open_console(browser, service)
    explained = await console.page.evaluate("[1006, 4404, 1012].map(window.cb.explainClose)")
    assert "proxy timeout or a missing Upgrade header" in explained[0]
    assert explained[1] == "no such call"
    assert "restarting" in explained[2]
    # A listener for a call that does not exist is told so, once, and does not retry.
    status = await console.page.evaluate(
        """() => new Promise((resolve) => {
            const audio = new window.cb.CallAudio({
                callControlId: 'v3:nobody', token: window.tokens,
            });
            audio.addEventListener('status', (e) => {
                if (e.detail.status === 'closed') resolve(e.detail);
            });
            audio.listen();
        })"""
    )
    assert status["code"] == 4404
    assert status["explanation"] == "no such call"
    assert console.errors == []


async def test_audio_reaches_the_worklet_as_the_simulators_speech(
    browser: Browser, service: ServiceProcess
) -> None:
    console = await listening(browser, service)
    await console.page.evaluate("window.audio.tap('inbound', 1600)")  # 200 ms at 8 kHz
    tap: dict[str, Any] = await console.until("window.tapped")
    assert tap["rate"] == 8000
    speech = speech_pcm(8000)
    loop = len(speech) - len(speech) % 320
    expected: list[float] = []
    for chunk in tap["chunks"]:
        offset = ((chunk - 1) * 320) % loop
        pcm = ulaw_decode(ulaw_encode(speech[offset : offset + 320]))
        expected.extend(sample / 32768 for sample in samples_of(pcm))
    assert tap["samples"] == pytest.approx(expected[:1600], abs=1e-7)  # decoded exactly
    # ...and it plays: the worklet measures energy on the inbound track at the output.
    level = await console.until(
        "window.audio.stats.played > 4800 && window.audio.levels.inbound > 0.01"
        " && window.audio.levels.inbound"
    )
    assert level > 0.01
    assert console.errors == []


async def test_talking_sends_the_microphone_to_the_simulator(
    browser: Browser, service: ServiceProcess
) -> None:
    console = await listening(browser, service)
    call_id = await console.page.evaluate("window.audio.callControlId")
    assert await console.page.evaluate("window.audio.startTalking()") is True
    await console.until("window.audio.stats.talkFrames >= 25")  # half a second of speech
    # The simulator plays talk-back to the far party, and the outbound track carries it back.
    await console.until("window.audio.levels.outbound > 0.01")
    await console.page.evaluate("window.audio.stopTalking()")
    async with httpx.AsyncClient(base_url=service.sim_url, timeout=15) as sim:
        info = (await sim.get(f"/_sim/calls/{call_id}")).json()
    received = [m for stream in info["media"] for m in stream["received"]]
    media = [m for m in received if m["event"] == "media"]
    assert len(media) >= 25
    assert {m["media"]["payload_base64_chars"] for m in media} == {216}  # 160 bytes: 20 ms PCMU


async def test_events_resume_across_a_service_restart_with_no_gap_and_no_duplicate(
    browser: Browser, tmp_path: Path
) -> None:
    with running_service(tmp_path) as service:
        console = await open_console(browser, service)
        await console.page.evaluate(
            """() => {
                window.events = new window.cb.CallEvents({
                    backoff: { initial: 200, max: 1000 }, token: window.tokens,
                });
                window.events.addEventListener('event', (e) => window.seen.push(e.detail.seq));
                window.events.connect();
            }"""
        )
        await console.line("✅ Connected to call events WebSocket")
        first = await dial(service, "+15550100004")  # answered, then hung up after 5 s
        await console.until("window.seen.length >= 3")
        service.stop()
        await console.until("window.events.status === 'reconnecting'")
        service.start()
        await console.line("✅ Connected to call events WebSocket", count=2)
        second = await dial(service, "+15550100002")  # busy: a handful of events
        async with httpx.AsyncClient(base_url=service.url, headers=service.api_headers) as api:
            expected = {
                e["seq"]
                for call in (first, second)
                for e in (await api.get(f"/api/calls/{call}/events")).json()["data"]
            }
        await console.until(f"window.seen.length >= {len(expected)}")
        seen = await console.page.evaluate("window.seen")
    assert seen == sorted(set(seen))  # in order, none twice
    assert seen == list(range(seen[0], seen[-1] + 1))  # and no hole, before or after the restart
    assert expected <= set(seen)
    assert console.errors == []
