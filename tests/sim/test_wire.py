"""The simulator's webhooks, checked the way Telnyx's own users check Telnyx: with the official
SDK's signature verification and event parsing, and against the documented field types."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from telnyx import Telnyx
from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature

from callbridge.calls.carrier import CallStatus
from callbridge.carrier.telnyx.client import TelnyxClient
from callbridge.sim import Simulator, WebhookSigner
from tests.conftest import SEED

WAIT = 15.0


class Receiver:
    """An HTTP endpoint that keeps every webhook, raw, with its headers."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.changed = asyncio.Condition()

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        async with self.changed:
            self.received.append((body, dict(request.headers)))
            self.changed.notify_all()
        return Response(status_code=200)

    async def until(self, event_type: str, call_control_id: str) -> None:
        async with asyncio.timeout(WAIT), self.changed:
            await self.changed.wait_for(
                lambda: any(
                    _data(body)["event_type"] == event_type
                    and _data(body)["payload"]["call_control_id"] == call_control_id
                    for body, _ in self.received
                )
            )


def _data(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(body)["data"]
    return data


@pytest.fixture
def receiver() -> tuple[Receiver, str]:
    return Receiver(), "http://hooks.test/hooks"


@pytest.fixture
async def simulator(
    receiver: tuple[Receiver, str],
) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    """The simulator's REST app, with its webhook client wired to the receiver's ASGI app."""
    keeper, _ = receiver
    hooks = Starlette(routes=[Route("/hooks", keeper.endpoint, methods=["POST"])])
    sim = Simulator(signer=WebhookSigner.from_seed_b64(SEED), pace=0.02)
    await sim._http.aclose()
    sim._http = httpx.AsyncClient(transport=httpx.ASGITransport(app=hooks))
    transport = httpx.ASGITransport(app=sim.app)
    headers = {"authorization": f"Bearer {sim.api_key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://sim", headers=headers) as c:
        yield sim, c
    await sim.close()


async def test_webhooks_verify_and_parse_with_the_official_sdk(
    receiver: tuple[Receiver, str], simulator: tuple[Simulator, httpx.AsyncClient]
) -> None:
    keeper, url = receiver
    sim, client = simulator
    response = await client.post(
        "/v2/calls",
        json={
            "connection_id": "c1",
            "to": "+15550100004",  # answered, then the far end hangs up
            "from": "+15550100000",
            "webhook_url": url,
            "client_state": "aGVsbG8=",
        },
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert set(data) >= {"call_control_id", "call_leg_id", "call_session_id", "record_type"}
    call_id = data["call_control_id"]
    await keeper.until("call.hangup", call_id)

    public_key = sim.signer.public_key_b64
    sdk = Telnyx(api_key="unused", public_key=public_key)
    seen: list[str] = []
    for body, headers in keeper.received:
        verify_webhook_signature(body, headers, public_key)  # raises if Telnyx would reject it
        event = sdk.webhooks.unwrap(body.decode(), headers=headers)
        document = orjson.loads(body)
        assert event.data is not None
        assert event.data.event_type == document["data"]["event_type"]
        seen.append(document["data"]["event_type"])
        envelope = document["data"]
        assert envelope["record_type"] == "event"
        assert isinstance(envelope["id"], str)
        assert envelope["occurred_at"].endswith("Z")
        assert isinstance(document["meta"]["attempt"], int)
        assert document["meta"]["delivered_to"] == url
        payload = envelope["payload"]
        for field in ("call_control_id", "call_leg_id", "call_session_id", "connection_id"):
            assert isinstance(payload[field], str), field
        assert payload["client_state"] == "aGVsbG8="
        if envelope["event_type"] == "call.initiated":
            assert payload["direction"] == "outgoing"
            assert (payload["from"], payload["to"]) == ("+15550100000", "+15550100004")
        if envelope["event_type"] == "call.hangup":
            assert payload["hangup_cause"] == "normal_clearing"
            assert payload["hangup_source"] == "callee"
            assert isinstance(payload["sip_hangup_cause"], str)
    assert seen[0] == "call.initiated"
    assert seen[-1] == "call.hangup"
    assert "call.answered" in seen

    forged_body, forged_headers = keeper.received[0]  # the call.initiated, altered
    assert b"call.initiated" in forged_body
    forged = forged_body.replace(b"call.initiated", b"call.answered")
    with pytest.raises(WebhookVerificationError):
        verify_webhook_signature(forged, forged_headers, public_key)


async def test_rest_errors_have_telnyx_shape(
    simulator: tuple[Simulator, httpx.AsyncClient],
) -> None:
    _, client = simulator
    unauthorised = await client.post("/v2/calls", json={}, headers={"authorization": "Bearer x"})
    assert unauthorised.status_code == 401
    missing = await client.post("/v2/calls", json={"connection_id": "c1", "from": "+1555"})
    assert missing.status_code == 422
    for response in (unauthorised, missing):
        (error,) = response.json()["errors"]
        assert set(error) == {"code", "title", "detail"}
        assert isinstance(error["code"], str)
    dead = await client.post("/v2/calls/v3:nope/actions/hangup", json={})
    assert dead.json()["errors"][0]["code"] == "90015"


async def test_call_status_answers_as_telnyx_and_the_client_reads_it(
    receiver: tuple[Receiver, str], simulator: tuple[Simulator, httpx.AsyncClient]
) -> None:
    keeper, url = receiver
    sim, client = simulator
    dialed = await client.post(
        "/v2/calls",
        json={
            "connection_id": "c1",
            "to": "+15550100011",
            "from": "+15550100000",
            "webhook_url": url,
        },
    )
    call_id = dialed.json()["data"]["call_control_id"]
    alive = await client.get(f"/v2/calls/{call_id}")
    assert alive.status_code == 200
    assert alive.json()["data"]["record_type"] == "call"
    assert alive.json()["data"]["is_alive"] is True
    unknown = await client.get("/v2/calls/v3:nope")
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["code"] == "10005"

    telnyx = TelnyxClient(base_url="http://sim/v2", api_key=sim.api_key, connection_id="c1")
    headers = telnyx._http.headers
    await telnyx._http.aclose()
    telnyx._http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url="http://sim/v2", headers=headers
    )
    try:
        assert await telnyx.call_status(call_id) == CallStatus(known=True, alive=True)
        assert await telnyx.call_status("v3:nope") == CallStatus(known=False, alive=False)
        await client.post(f"/v2/calls/{call_id}/actions/hangup", json={})
        await keeper.until("call.hangup", call_id)
        assert await telnyx.call_status(call_id) == CallStatus(known=True, alive=False)
    finally:
        await telnyx.close()
