"""Debian's Chromium under Playwright, with real audio: fake microphone, no autoplay gate."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

SPEECH_WAV = Path(__file__).parents[2] / "src" / "callbridge" / "sim" / "assets" / "speech.wav"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    f"--use-file-for-fake-audio-capture={SPEECH_WAV}",
]
WAIT_MS = 20_000


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


class Console:
    """A page of the console, with its console lines and errors recorded as they happen."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._changed = asyncio.Condition()
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _on_console(self, message: ConsoleMessage) -> None:
        self.lines.append(message.text)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def line(self, text: str, count: int = 1) -> None:
        """Wait until `text` has been logged `count` times."""
        async with asyncio.timeout(WAIT_MS / 1000), self._changed:
            await self._changed.wait_for(lambda: sum(text in line for line in self.lines) >= count)

    async def until(self, expression: str, arg: Any = None) -> Any:
        """Wait until a JavaScript expression is truthy in the page; return its value."""
        handle = await self.page.wait_for_function(expression, arg=arg, timeout=WAIT_MS)
        return await handle.json_value()
