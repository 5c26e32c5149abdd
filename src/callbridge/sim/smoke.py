"""`callbridge simulate --target URL`: the runbook's checks, run end to end against a deployment.

The simulator plays Telnyx for a callbridge that was configured to use it (TELNYX_BASE_URL,
TELNYX_PUBLIC_KEY and TELNYX_API_KEY from the simulator), typically through the real proxy. The
smoke test then behaves like the front end and its backend: with an API key it mints a browser
token, watches `/call-events`, dials, listens on `/frontend-audio`, and hangs up. Each step
that fails says what to check, because each one exercises a different path: REST to the
service, the service's REST to Telnyx, Telnyx's webhooks to the service, Telnyx's media socket
to the service, and the service's sockets to browsers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from callbridge.sim.auth import api_headers, explain_refusal, mint_token, token_subprotocols

__all__ = ["SMOKE_STEPS", "SmokeStep", "run_smoke"]

STEP_TIMEOUT = 20.0
SMOKE_STEPS = 8
FRAMES_TO_HEAR = 50  # one second of one track


@dataclasses.dataclass(slots=True)
class SmokeStep:
    name: str
    ok: bool
    detail: str
    seconds: float


class SmokeFailed(Exception):
    """A step failed; the message says what to look at."""


def _ws_base(target: str) -> str:
    scheme, _, rest = target.rstrip("/").partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest


async def _json_until(
    connection: ClientConnection, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    while True:
        raw = await connection.recv()
        if isinstance(raw, bytes):
            continue
        message: dict[str, Any] = orjson.loads(raw)
        if predicate(message):
            return message


class _Smoke:
    def __init__(
        self,
        target: str,
        number: str,
        public_key: str,
        base_url: str,
        step_timeout: float,
        api_key: str | None = None,
    ) -> None:
        self.step_timeout = step_timeout
        self.api_key = api_key
        self.token = ""
        self.target = target.rstrip("/")
        self.ws = _ws_base(target)
        self.number = number
        self.public_key = public_key
        self.base_url = base_url
        self.steps: list[SmokeStep] = []
        self.call_id = ""
        self.hung_up = False
        self.events: ClientConnection | None = None
        self.knows_call: Callable[[str], bool] = lambda _call_id: True

    async def step(self, name: str, action: Callable[[], Awaitable[str]], hint: str) -> None:
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.step_timeout):
                detail = await action()
        except Exception as exc:  # every failure becomes a step with its explanation
            why = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            self.steps.append(SmokeStep(name, False, f"{why}. {hint}", time.monotonic() - began))
            raise SmokeFailed(name) from exc
        self.steps.append(SmokeStep(name, True, detail, time.monotonic() - began))

    async def run(self) -> None:
        async with httpx.AsyncClient(
            base_url=self.target, timeout=10.0, headers=api_headers(self.api_key)
        ) as http:
            await self.step(
                "service answers",
                lambda: self._health(http),
                f"Is callbridge reachable at {self.target}?",
            )
            await self.step(
                "API key accepted",
                lambda: self._token(http),
                "POST /api/tokens must answer 201 to the API key, which mints the browser "
                "token the sockets need.",
            )
            await self.step(
                "/call-events welcome",
                self._open_events,
                "The WebSocket upgrade failed or no welcome came: a proxy that does not pass "
                "Upgrade/Connection answers a plain GET.",
            )
            events = self.events
            assert events is not None
            try:
                await self.step(
                    "dial through the simulator",
                    lambda: self._dial(http),
                    "The service could not reach the simulator: set TELNYX_BASE_URL="
                    f"{self.base_url} and TELNYX_API_KEY to the simulator's key.",
                )
                await self.step(
                    "webhooks reach the service",
                    lambda: self._event(events, "call.answered"),
                    "No signed webhook was accepted: set TELNYX_PUBLIC_KEY="
                    f"{self.public_key} and check that the simulator reaches the service's "
                    "webhook_url (CALLBRIDGE_PUBLIC_URL).",
                )
                await self.step(
                    "media socket reaches the service",
                    lambda: self._event(events, "media.started"),
                    "The simulator could not open /audio-stream: check CALLBRIDGE_PUBLIC_URL "
                    "(the stream_url is built from it) and the proxy's WebSocket location.",
                )
                await self.step(
                    "a listener hears the call",
                    self._listen,
                    "No audio reached /frontend-audio: check the proxy's location for it.",
                )
                await self.step(
                    "hang up",
                    lambda: self._hangup(http, events),
                    "The hangup did not come back as call.hangup.",
                )
            finally:
                await events.close()
                if self.call_id and not self.hung_up:  # leave nothing ringing behind
                    with contextlib.suppress(httpx.HTTPError):
                        await http.post(f"/api/calls/{self.call_id}/hangup")

    async def _health(self, http: httpx.AsyncClient) -> str:
        response = await http.get("/api/health")
        response.raise_for_status()
        return f"version {response.json().get('version')}"

    async def _token(self, http: httpx.AsyncClient) -> str:
        # Long enough for every step to use its whole timeout; the service caps it anyway.
        ttl = min(86_400, max(600, math.ceil(SMOKE_STEPS * self.step_timeout) + 60))
        self.token = await mint_token(http, rights=("events", "listen"), ttl=ttl)
        return "a browser token for /call-events and /frontend-audio"

    async def _open_events(self) -> str:
        self.events = await connect(
            f"{self.ws}/call-events",
            subprotocols=token_subprotocols(self.token),
            open_timeout=10,
        )
        welcome = await _json_until(self.events, lambda m: m.get("type") == "welcome")
        return f"seq {welcome['seq']}"

    async def _dial(self, http: httpx.AsyncClient) -> str:
        response = await http.post("/api/calls", json={"to": self.number})
        if response.status_code in (401, 403):
            raise RuntimeError(explain_refusal(response, self.api_key is not None))
        if response.status_code != 201:
            raise RuntimeError(f"POST /api/calls answered {response.status_code}: {response.text}")
        self.call_id = response.json()["data"]["call_control_id"]
        if not self.knows_call(self.call_id):
            raise RuntimeError(
                "this simulator never saw the call: the service dialled through another Telnyx "
                "(its own embedded simulator, or the real one)"
            )
        return self.call_id

    async def _event(self, events: ClientConnection, event_type: str) -> str:
        event = await _json_until(
            events,
            lambda m: m.get("type") == event_type and m.get("call_control_id") == self.call_id,
        )
        return f"seq {event['seq']}"

    async def _listen(self) -> str:
        url = f"{self.ws}/frontend-audio?call_control_id={self.call_id}"
        protocols = token_subprotocols(self.token)
        async with connect(url, subprotocols=protocols, open_timeout=10) as listener:
            announced = await _json_until(
                listener, lambda m: m.get("type") == "format" and m.get("codec") is not None
            )
            frames = 0
            while frames < FRAMES_TO_HEAR:
                if isinstance(await listener.recv(), bytes):
                    frames += 1
        codec = announced["codec"]
        return f"{frames} frames of {codec['encoding']} at {codec['sample_rate']} Hz"

    async def _hangup(self, http: httpx.AsyncClient, events: ClientConnection) -> str:
        response = await http.post(f"/api/calls/{self.call_id}/hangup")
        response.raise_for_status()
        self.hung_up = True
        return await self._event(events, "call.hangup")


async def run_smoke(
    target: str,
    *,
    public_key: str,
    base_url: str,
    number: str = "+15550100011",
    step_timeout: float = STEP_TIMEOUT,
    knows_call: Callable[[str], bool] | None = None,
    api_key: str | None = None,
) -> list[SmokeStep]:
    """Run every step until one fails; the list says what passed and what did not.

    `knows_call` tells whether the simulator saw a call id, so that a service that dials
    through some other Telnyx fails the dial step instead of passing by accident."""
    smoke = _Smoke(target, number, public_key, base_url, step_timeout, api_key)
    if knows_call is not None:
        smoke.knows_call = knows_call
    with contextlib.suppress(SmokeFailed):
        await smoke.run()
    return smoke.steps
