"""Screenshots of the console with a call in progress, for the README (not a test).

Starts callbridge on free ports in a temporary directory (simulator mode, a fresh API key that
the console gets from its link's #key=), dials the hour-long scenario in Debian's Chromium,
listens, holds Talk for a moment so both meters move, and saves docs/console.png (1280x800) and
docs/console-phone.png (390x844).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.auth import BenchAuth
from playwright.async_api import Page
from tests.console.browser import Console, chromium

DOCS = Path(__file__).parents[1] / "docs"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _call_in_progress(page: Page, url: str) -> None:
    console = Console(page)
    await page.goto(url)
    await console.line("✅ Connected to call events WebSocket")
    await page.get_by_test_id("dial-to").fill("+15550100011")
    await page.get_by_test_id("dial").click()
    await page.locator('[data-testid="call-row"][data-state="streaming"]').first.wait_for()
    await page.get_by_test_id("listen").click()
    await console.line("✅ Connected to audio stream")
    await console.until("window.callbridgeConsole.audio.stats.played > 4 * 48000")
    await page.get_by_test_id("talk").dispatch_event("pointerdown")
    await console.until("window.callbridgeConsole.audio.stats.talkFrames >= 150")
    await console.until("window.callbridgeConsole.audio.levels.outbound > 0.02")


async def _shoot(url: str) -> None:
    async with chromium() as browser:
        for name, width, height in (("console.png", 1280, 800), ("console-phone.png", 390, 844)):
            page = await browser.new_page(viewport={"width": width, "height": height})
            await _call_in_progress(page, url)  # and still talking: both tracks move
            await page.screenshot(path=str(DOCS / name))
            await page.get_by_test_id("talk").dispatch_event("pointerup")
            print(f"wrote docs/{name}")
            await page.close()


def main() -> None:
    auth = BenchAuth()
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        env = {
            **os.environ,
            **auth.env(),
            "CALLBRIDGE_PORT": str(port),
            "CALLBRIDGE_SIM_PORT": str(_free_port()),
            "CALLBRIDGE_DATABASE_URL": f"sqlite:///{tmp}/callbridge.db",
            "CALLBRIDGE_LOG_FORMAT": "json",
        }
        service = subprocess.Popen(
            [sys.executable, "-m", "callbridge", "serve"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert service.stderr is not None
            for line in service.stderr:
                if '"callbridge ready"' in line:
                    break
            asyncio.run(_shoot(f"http://127.0.0.1:{port}/#key={auth.api_key}"))
        finally:
            service.terminate()
            service.wait(timeout=30)


if __name__ == "__main__":
    main()
