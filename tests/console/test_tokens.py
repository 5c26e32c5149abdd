"""Tokens in real Chromium: the JS client refreshes its token on the open socket before it
expires (no reconnect, no lost event), a static token that expires ends with 4401, and the
console signs in with the key from its link and keeps it out of the address bar."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser

from callbridge.sim import WebhookSigner
from tests.conftest import API_KEY, ServiceProcess, mint_token
from tests.console.browser import Console, chromium
from tests.helpers import new_call_id, post_webhook, webhook

SHORT_TTL = 12  # seconds: the client refreshes 5 s before expiry


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def test_the_client_refreshes_tokens_without_reconnecting(
    browser: Browser, service: ServiceProcess, api: httpx.Client, signer: WebhookSigner
) -> None:
    page = await browser.new_page()
    console = Console(page)
    await page.goto(service.url + "/api/health")
    await page.evaluate(
        """async ({ key, ttl, fixed }) => {
            const cb = await import('/static/callbridge.js');
            window.opens = 0; window.refreshed = []; window.seen = []; window.staticClose = null;
            const source = cb.tokenFromApi({ apiKey: key, rights: ['events'], ttl });
            window.live = new cb.CallEvents({ token: source });
            window.live.addEventListener('status', (e) => {
                if (e.detail.status === 'open') window.opens += 1;
            });
            window.live.addEventListener('token', (e) => window.refreshed.push(e.detail));
            window.live.addEventListener('event', (e) => window.seen.push(e.detail));
            window.live.connect();
            // Same lifetime, but a fixed string: nothing can refresh it.
            window.fixed = new cb.CallEvents({ token: fixed });
            window.fixed.addEventListener('status', (e) => {
                if (e.detail.status === 'closed') window.staticClose = e.detail;
            });
            window.fixed.connect();
        }""",
        {"key": API_KEY, "ttl": SHORT_TTL, "fixed": mint_token(rights=(), ttl=SHORT_TTL)},
    )
    # A token without the events right is refused at once with 4403, and not retried.
    refused = await console.until("window.staticClose")
    assert refused["code"] == 4403
    await page.evaluate(
        """(fixed) => {
            window.staticClose = null;
            window.fixed = new (window.live.constructor)({ token: fixed });
            window.fixed.addEventListener('status', (e) => {
                if (e.detail.status === 'closed') window.staticClose = e.detail;
            });
            window.fixed.connect();
        }""",
        mint_token(ttl=SHORT_TTL),
    )
    accepted = await console.until("window.refreshed.find((m) => m.type === 'token.accepted')")
    assert accepted["expires_at"] > 0
    # The fixed token's socket is closed at expiry, and stays closed (no source for a new one).
    expired = await console.until("window.staticClose")
    assert expired["code"] == 4401
    assert expired["reason"] == "token expired; reconnect with a fresh token"
    # The refreshing socket outlived the same expiry without reconnecting, and still delivers.
    call_id = new_call_id()
    post_webhook(api, signer, webhook("call.initiated", call_id, direction="incoming"))
    await console.until("(id) => window.seen.some((e) => e.call_control_id === id)", call_id)
    assert await page.evaluate("window.opens") == 1
    assert console.errors == []


async def test_the_console_signs_in_from_its_link_or_asks(
    browser: Browser, service: ServiceProcess
) -> None:
    page = await browser.new_page()
    console = Console(page)
    await page.goto(f"{service.url}/#key={API_KEY}")
    await console.line("✅ Connected to call events WebSocket")
    assert "#key" not in page.url  # taken out of the address bar (and history)
    assert await page.get_by_test_id("key-card").is_hidden()

    other = await browser.new_page()  # a fresh tab: sessionStorage is per tab
    asking = Console(other)
    await other.goto(service.url + "/")
    await other.get_by_test_id("key-card").wait_for(state="visible")
    await other.get_by_test_id("key-input").fill("cbk_wrong")
    await other.get_by_test_id("key-save").click()
    await asking.until(
        "document.querySelector('[data-testid=key-error]').textContent.includes('refused')"
    )
    await other.get_by_test_id("key-input").fill(API_KEY)
    await other.get_by_test_id("key-save").click()
    await asking.line("✅ Connected to call events WebSocket")
    assert await other.get_by_test_id("key-card").is_hidden()
