"""`POST /api/webhooks/telnyx`: signatures, bad input, duplicates and out-of-order delivery."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from callbridge.sim import WebhookSigner
from tests.conftest import ServiceProcess
from tests.helpers import new_call_id, post_webhook, webhook


def test_signed_webhook_is_accepted_and_numbered(api: httpx.Client, signer: WebhookSigner) -> None:
    call_id = new_call_id()
    response = post_webhook(api, signer, webhook("call.initiated", call_id, direction="outgoing"))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "accepted"
    assert len(body["seq"]) == 2  # the Telnyx event and our call.state
    assert body["seq"][1] == body["seq"][0] + 1
    assert api.get(f"/api/calls/{call_id}").json()["data"]["state"] == "initiated"


@pytest.mark.parametrize(
    ("case", "headers"),
    [
        ("unsigned", {"content-type": "application/json"}),
        ("no timestamp", {"telnyx-signature-ed25519": "AAAA"}),
        ("bad base64", {"telnyx-signature-ed25519": "***", "telnyx-timestamp": "{now}"}),
        ("short signature", {"telnyx-signature-ed25519": "AAAA", "telnyx-timestamp": "{now}"}),
        ("timestamp not a number", {"telnyx-signature-ed25519": "AAAA", "telnyx-timestamp": "x"}),
    ],
)
def test_unsigned_or_garbled_signature_is_401_and_stores_nothing(
    api: httpx.Client, case: str, headers: dict[str, str]
) -> None:
    call_id = new_call_id()
    sent = {k: v.replace("{now}", str(int(time.time()))) for k, v in headers.items()}
    response = post_webhook(api, WebhookSigner(), webhook("call.initiated", call_id), headers=sent)
    assert response.status_code == 401, case
    assert response.json()["error"] == "invalid_signature"
    assert response.json()["detail"]
    assert api.get(f"/api/calls/{call_id}").status_code == 404


def test_forged_signature_is_401_and_stores_nothing(api: httpx.Client) -> None:
    call_id = new_call_id()
    forger = WebhookSigner()  # a valid Ed25519 key, but not the one the service trusts
    response = post_webhook(api, forger, webhook("call.initiated", call_id))
    assert response.status_code == 401
    assert "does not match" in response.json()["detail"]
    assert api.get(f"/api/calls/{call_id}").status_code == 404


def test_tampered_body_is_401(api: httpx.Client, signer: WebhookSigner) -> None:
    call_id = new_call_id()
    body = orjson.dumps(webhook("call.initiated", call_id))
    headers = signer.headers(body)
    tampered = body.replace(b"+15550101111", b"+15550109999")
    response = post_webhook(api, signer, tampered, headers=headers)
    assert response.status_code == 401
    assert api.get(f"/api/calls/{call_id}").status_code == 404


@pytest.mark.parametrize("offset", [-301, 301, -3600])
def test_stale_or_future_timestamp_is_401(
    api: httpx.Client, signer: WebhookSigner, offset: int
) -> None:
    call_id = new_call_id()
    response = post_webhook(
        api, signer, webhook("call.initiated", call_id), timestamp=int(time.time()) + offset
    )
    assert response.status_code == 401
    assert "tolerance" in response.json()["detail"]
    assert api.get(f"/api/calls/{call_id}").status_code == 404


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "envelope"),
        (b'{"data": {"event_type": "call.answered"}}', "envelope"),
        (
            b'{"data": {"event_type": "call.answered", "id": "x", "occurred_at": "yesterday",'
            b' "payload": {}}}',
            "occurred_at",
        ),
        (
            b'{"data": {"event_type": "call.answered", "id": "x",'
            b' "occurred_at": "2026-01-01T00:00:00Z", "payload": {}}}',
            "call_control_id",
        ),
    ],
)
def test_malformed_signed_body_is_400_with_reason(
    api: httpx.Client, signer: WebhookSigner, body: bytes, reason: str
) -> None:
    response = post_webhook(api, signer, body)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_webhook"
    assert reason in response.json()["detail"]


def test_oversized_body_is_413(api: httpx.Client, signer: WebhookSigner) -> None:
    document = webhook("call.initiated", new_call_id(), padding="x" * 300_000)
    response = post_webhook(api, signer, document)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


def test_duplicate_webhook_is_stored_once(api: httpx.Client, signer: WebhookSigner) -> None:
    call_id = new_call_id()
    document = webhook("call.initiated", call_id, direction="outgoing")
    first = post_webhook(api, signer, document)
    document["meta"]["attempt"] = 2  # Telnyx's retry of the same event
    second = post_webhook(api, signer, document)
    assert first.json()["status"] == "accepted"
    assert second.status_code == 200
    assert second.json()["status"] == "duplicate"
    log = api.get(f"/api/calls/{call_id}/events").json()["data"]
    assert [e["type"] for e in log] == ["call.initiated", "call.state"]


async def test_concurrent_duplicates_are_stored_once(
    service: ServiceProcess, signer: WebhookSigner
) -> None:
    call_id = new_call_id()
    body = orjson.dumps(webhook("call.answered", call_id))
    async with httpx.AsyncClient(base_url=service.url) as client:
        responses = await asyncio.gather(
            *(
                client.post("/api/webhooks/telnyx", content=body, headers=signer.headers(body))
                for _ in range(8)
            )
        )
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["accepted"] + ["duplicate"] * 7
    async with httpx.AsyncClient(base_url=service.url, headers=service.api_headers) as client:
        log = (await client.get(f"/api/calls/{call_id}/events")).json()["data"]
    assert [e["type"] for e in log] == ["call.answered", "call.state"]


def test_out_of_order_webhooks_never_move_state_backwards(
    api: httpx.Client, signer: WebhookSigner
) -> None:
    call_id = new_call_id()
    t0 = datetime.now(UTC)

    def at(seconds: float) -> str:
        return (t0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    hangup = webhook("call.hangup", call_id, hangup_cause="normal_clearing", occurred_at=at(9))
    started = webhook("streaming.started", call_id, occurred_at=at(3))
    answered = webhook("call.answered", call_id, occurred_at=at(2))
    initiated = webhook("call.initiated", call_id, direction="outgoing", occurred_at=at(1))
    for document in (started, hangup, answered, initiated):
        assert post_webhook(api, signer, document).status_code == 200
    call = api.get(f"/api/calls/{call_id}").json()["data"]
    assert call["state"] == "ended"
    assert call["stream"] == "stopped"  # a stream cannot outlive its call
    assert call["hangup_cause"] == "normal_clearing"
    states = [
        e["payload"]["state"]
        for e in api.get(f"/api/calls/{call_id}/events").json()["data"]
        if e["type"] == "call.state"
    ]
    assert states == ["streaming", "ended"]


def test_stale_stream_news_does_not_override_newer(
    api: httpx.Client, signer: WebhookSigner
) -> None:
    call_id = new_call_id()
    t0 = datetime.now(UTC)
    stopped = webhook(
        "streaming.stopped", call_id, occurred_at=(t0 + timedelta(seconds=5)).isoformat()
    )
    started = webhook("streaming.started", call_id, occurred_at=t0.isoformat())
    post_webhook(api, signer, stopped)
    post_webhook(api, signer, started)
    call = api.get(f"/api/calls/{call_id}").json()["data"]
    assert call["stream"] == "stopped"
    assert call["state"] == "streaming"


def test_unknown_event_type_is_stored_and_forwarded(
    api: httpx.Client, signer: WebhookSigner
) -> None:
    call_id = new_call_id()
    post_webhook(api, signer, webhook("call.initiated", call_id, direction="incoming"))
    response = post_webhook(api, signer, webhook("call.machine.detection.ended", call_id))
    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    assert len(response.json()["seq"]) == 1  # no state change
    log = api.get(f"/api/calls/{call_id}/events").json()["data"]
    assert log[-1]["type"] == "call.machine.detection.ended"
    assert log[-1]["payload"] == {}


def test_rejections_are_logged_once_without_secrets(
    service: ServiceProcess, api: httpx.Client
) -> None:
    marker = new_call_id()
    post_webhook(api, WebhookSigner(), webhook("call.initiated", marker))
    entry = service.wait_for_log(
        lambda e: e.get("event") == "Webhook rejected" and "does not match" in e.get("reason", "")
    )
    assert entry["level"] == "warning"
    rejections = [
        e for e in service.logs if e.get("event") == "Webhook rejected" and marker in str(e)
    ]
    assert rejections == []  # the log says why, not what the forged body contained
    assert api.get(f"/api/calls/{marker}").status_code == 404
