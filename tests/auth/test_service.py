"""Authentication and limits on a running service: REST keys, browser tokens, origins, limits.

Every refusal must say why (an HTTP 4xx body or a close code with a reason) and be counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from callbridge.auth.tokens import Right
from callbridge.sim import WebhookSigner
from tests.conftest import API_KEY, ServiceProcess, mint_token, running_service, service_env
from tests.helpers import new_call_id, post_webhook, webhook

WAIT = 15.0
EVENTS_ONLY = (Right.EVENTS,)
LISTEN_ONLY = (Right.LISTEN,)


async def _open(url: str, **kwargs: Any) -> ClientConnection:
    return await connect(url, open_timeout=WAIT, **kwargs)


async def _closed_with(url: str, **kwargs: Any) -> tuple[int, str]:
    """Open a socket the service should refuse; the close code and reason it gave."""
    async with await _open(url, **kwargs) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
    frame = closed.value.rcvd
    assert frame is not None, "closed without a close frame"
    return frame.code, frame.reason


async def _welcome(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert message["type"] == "welcome", message
    return message


async def _until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if message.get("type") == kind:
            return message


def _refusals(service: ServiceProcess) -> str:
    return httpx.get(f"{service.url}/metrics").text


# --- REST -------------------------------------------------------------------------------------


def test_rest_without_a_key_is_401_with_a_reason(service: ServiceProcess) -> None:
    with httpx.Client(base_url=service.url) as anonymous:
        response = anonymous.post("/api/calls", json={"to": "+15550100001"})
        assert response.status_code == 401
        assert response.json()["error"] == "missing_credentials"
        assert "Authorization: Bearer" in response.json()["detail"]
        assert response.headers["www-authenticate"].startswith("Bearer")
        wrong = anonymous.get("/api/calls", headers={"Authorization": "Bearer cbk_not-a-key"})
        assert (wrong.status_code, wrong.json()["error"]) == (401, "unknown_api_key")
        basic = anonymous.get("/api/calls", headers={"Authorization": "Basic dXNlcjpwdw=="})
        assert (basic.status_code, basic.json()["error"]) == (401, "bad_credentials")
        # Liveness, readiness, info and metrics stay open for probes and scrapers.
        for path in ("/api/health", "/api/ready", "/api/info", "/metrics"):
            assert anonymous.get(path).status_code == 200, path
    service.wait_for_log(
        lambda e: e.get("event") == "API request refused" and e.get("path") == "/api/calls"
    )
    assert 'callbridge_refusals_total{reason="missing_credentials",surface="api"}' in _refusals(
        service
    )


def test_a_browser_token_reads_only_its_calls_and_acts_on_none(
    service: ServiceProcess, api: httpx.Client, signer: WebhookSigner
) -> None:
    mine, other = new_call_id(), new_call_id()
    for call_id in (mine, other):
        post_webhook(api, signer, webhook("call.initiated", call_id, direction="incoming"))
    token = mint_token([mine], EVENTS_ONLY)
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {token}"}) as page:
        listed = page.get("/api/calls", params={"limit": 500}).json()["data"]
        assert [c["call_control_id"] for c in listed] == [mine]
        assert page.get(f"/api/calls/{mine}").status_code == 200
        assert page.get(f"/api/calls/{mine}/events").status_code == 200
        assert page.get(f"/api/calls/{other}").status_code == 404
        hangup = page.post(f"/api/calls/{mine}/hangup")
        assert (hangup.status_code, hangup.json()["error"]) == (401, "api_key_required")
    listen_only = mint_token([mine], LISTEN_ONLY)
    refused = httpx.get(
        f"{service.url}/api/calls", headers={"Authorization": f"Bearer {listen_only}"}
    )
    assert refused.status_code == 403
    assert "events" in refused.json()["detail"]


def test_tokens_are_issued_to_api_keys_only(service: ServiceProcess, api: httpx.Client) -> None:
    issued = api.post(
        "/api/tokens", json={"calls": ["v3:a", "v3:b"], "rights": ["listen"], "ttl": 120}
    )
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert body["calls"] == ["v3:a", "v3:b"]
    assert body["rights"] == ["listen"]
    assert 110 <= body["expires_in"] <= 120
    capped = api.post("/api/tokens", json={"ttl": 86_400}).json()
    assert capped["expires_in"] <= 3600  # CALLBRIDGE_TOKEN_MAX_TTL
    assert capped["rights"] == ["events", "listen"]
    assert capped["calls"] == "*"
    bad = api.post("/api/tokens", json={"rights": ["admin"]})
    assert bad.status_code == 422
    assert "rights" in bad.json()["detail"]
    empty = api.post("/api/tokens", json={"calls": []})
    assert empty.status_code == 422
    with httpx.Client(base_url=service.url) as anonymous:
        assert anonymous.post("/api/tokens", json={}).status_code == 401
    token_holder = httpx.post(
        f"{service.url}/api/tokens",
        json={},
        headers={"Authorization": f"Bearer {body['token']}"},
    )
    assert token_holder.status_code == 401  # a token cannot mint tokens


# --- browser sockets --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "code", "words"),
    [
        ("", 4401, "token is required"),
        ("?token=garbage", 4401, "malformed"),
        (f"?token={mint_token(secret='forged-secret-' + 'f' * 40)}", 4401, "signature"),
        (f"?token={mint_token(ttl=-60)}", 4401, "expired"),
        (f"?token={mint_token(rights=LISTEN_ONLY)}", 4403, "events"),
        (f"?token={mint_token(['v3:a'], EVENTS_ONLY)}&call_control_id=v3:b", 4403, "cover"),
    ],
    ids=["missing", "malformed", "forged", "expired", "no-events-right", "out-of-scope"],
)
async def test_call_events_refuses_bad_tokens_with_a_reason(
    service: ServiceProcess, query: str, code: int, words: str
) -> None:
    got, reason = await _closed_with(f"{service.ws_url}/call-events{query}")
    assert got == code
    assert words in reason


async def test_a_token_in_the_subprotocol_works_and_is_answered(service: ServiceProcess) -> None:
    token = mint_token(rights=EVENTS_ONLY)
    async with await _open(
        f"{service.ws_url}/call-events",
        subprotocols=["callbridge", f"callbridge.token.{token}"],  # type: ignore[list-item]
    ) as ws:
        assert ws.subprotocol == "callbridge"
        assert (await _welcome(ws))["token_expires_at"] > 0


async def test_a_token_for_one_call_sees_only_that_call(
    service: ServiceProcess, api: httpx.Client, signer: WebhookSigner
) -> None:
    mine, other = new_call_id(), new_call_id()
    token = mint_token([mine], EVENTS_ONLY)
    async with await _open(f"{service.ws_url}/call-events?token={token}") as ws:
        welcome = await _welcome(ws)
        assert welcome["filter"] == [mine]
        post_webhook(api, signer, webhook("call.initiated", other, direction="incoming"))
        post_webhook(api, signer, webhook("call.initiated", mine, direction="incoming"))
        event = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert event["call_control_id"] == mine


async def test_frontend_audio_checks_the_call_and_the_talk_right(
    service: ServiceProcess, api: httpx.Client, signer: WebhookSigner
) -> None:
    call_id = new_call_id()
    post_webhook(api, signer, webhook("call.initiated", call_id, direction="incoming"))
    url = f"{service.ws_url}/frontend-audio?call_control_id={call_id}"
    other = mint_token(["v3:someone-else"])
    assert await _closed_with(f"{url}&token={other}") == (4403, "token does not cover this call")
    assert (await _closed_with(url))[0] == 4401
    listen = mint_token([call_id], LISTEN_ONLY)
    async with await _open(f"{url}&token={listen}") as ws:
        await _until(ws, "format")
        await ws.send(orjson.dumps({"type": "talk.start"}).decode())
        refused = await _until(ws, "talk.refused")
        assert refused["code"] == 4403
        assert "talk" in refused["reason"]


async def test_a_refreshed_token_keeps_the_socket_past_the_old_expiry(
    service: ServiceProcess, api: httpx.Client, signer: WebhookSigner
) -> None:
    """Two sockets with the same short token: the one that refreshes outlives the other and
    still receives events (the JS client does this before expiry)."""
    short = mint_token(rights=EVENTS_ONLY, ttl=2)
    url = f"{service.ws_url}/call-events?token={short}"
    async with await _open(url) as stale, await _open(url) as refreshed:
        await _welcome(stale)
        await _welcome(refreshed)
        fresh = mint_token(rights=EVENTS_ONLY, ttl=600)
        await refreshed.send(orjson.dumps({"type": "token", "token": fresh}).decode())
        accepted = await _until(refreshed, "token.accepted")
        assert accepted["expires_at"] > 0
        narrower = mint_token(["v3:x"], EVENTS_ONLY)
        await refreshed.send(orjson.dumps({"type": "token", "token": narrower}).decode())
        assert "call_control_id" in (await _until(refreshed, "token.refused"))["reason"]
        with pytest.raises(ConnectionClosed) as expired:
            await asyncio.wait_for(stale.recv(), WAIT)
        assert expired.value.rcvd is not None
        assert (expired.value.rcvd.code, expired.value.rcvd.reason) == (
            4401,
            "token expired; reconnect with a fresh token",
        )
        call_id = new_call_id()
        post_webhook(api, signer, webhook("call.initiated", call_id, direction="incoming"))
        event = await _until(refreshed, "call.state")
        assert event["call_control_id"] == call_id


async def test_oversized_messages_close_call_events_with_1009(service: ServiceProcess) -> None:
    async with await _open(f"{service.ws_url}/call-events?token={service.ws_token}") as ws:
        await _welcome(ws)
        await ws.send("x" * 5000)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


# --- origins, proxies and limits (a service with tight settings) -------------------------------


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with running_service(
        tmp_path_factory.mktemp("strict"),
        CALLBRIDGE_ALLOWED_ORIGINS="https://app.example.com",
        CALLBRIDGE_MAX_CONNECTIONS_PER_TOKEN="2",
        CALLBRIDGE_MAX_CONNECTIONS_PER_IP="3",
        CALLBRIDGE_DIAL_RATE_PER_MINUTE="1",
        CALLBRIDGE_DIAL_BURST="2",
        CALLBRIDGE_TRUSTED_PROXIES="10.9.9.9",  # not us: our X-Forwarded-For must be ignored
    ) as svc:
        yield svc


async def test_only_allowed_origins_open_browser_sockets(strict: ServiceProcess) -> None:
    url = f"{strict.ws_url}/call-events?token={strict.ws_token}"
    code, reason = await _closed_with(url, origin="https://evil.example.net")  # type: ignore[arg-type]
    assert (code, reason) == (4403, "origin https://evil.example.net is not allowed")
    for origin in ("https://app.example.com", f"http://127.0.0.1:{strict.port}"):
        async with await _open(url, origin=origin) as ws:  # type: ignore[arg-type]
            await _welcome(ws)


async def test_connections_per_token_and_per_address_are_bounded(strict: ServiceProcess) -> None:
    token = mint_token(rights=EVENTS_ONLY)
    url = f"{strict.ws_url}/call-events?token={token}"
    first, second = await _open(url), await _open(url)
    for ws in (first, second):
        await _welcome(ws)
    assert await _closed_with(url) == (4429, "too many connections for this token")
    await first.close()
    async with await _open(url) as again:  # a closed socket gives its slot back
        await _welcome(again)
        # Spoofed X-Forwarded-For from an untrusted peer changes nothing: same address.
        other = f"{strict.ws_url}/call-events?token={mint_token(rights=EVENTS_ONLY)}"
        third = await _open(other, additional_headers={"X-Forwarded-For": "203.0.113.7"})
        await _welcome(third)
        assert await _closed_with(other, additional_headers={"X-Forwarded-For": "203.0.113.8"}) == (
            4429,
            "too many connections from this address",
        )
        await third.close()
    await second.close()
    metrics = _refusals(strict)
    assert 'reason="too_many_token",surface="call-events"' in metrics
    assert 'reason="too_many_ip",surface="call-events"' in metrics


def test_dials_are_rate_limited_per_key(strict: ServiceProcess) -> None:
    with httpx.Client(base_url=strict.url, headers=strict.api_headers, timeout=WAIT) as api:
        for _ in range(2):
            assert api.post("/api/calls", json={"to": "+15550100012"}).status_code == 201
        limited = api.post("/api/calls", json={"to": "+15550100012"})
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    """From a configured proxy (here 127.0.0.1), X-Forwarded-For is the client: two browsers
    behind the proxy are two addresses, each with its own limit."""
    with running_service(tmp_path, CALLBRIDGE_MAX_CONNECTIONS_PER_IP="1") as svc:
        url = f"{svc.ws_url}/call-events?token={svc.ws_token}"
        one = await _open(url, additional_headers={"X-Forwarded-For": "203.0.113.1"})
        two = await _open(url, additional_headers={"X-Forwarded-For": "203.0.113.2"})
        for ws in (one, two):
            await _welcome(ws)
        assert await _closed_with(url, additional_headers={"X-Forwarded-For": "203.0.113.2"}) == (
            4429,
            "too many connections from this address",
        )
        await one.close()
        await two.close()


# --- start-up rules -----------------------------------------------------------------------------


def test_the_demo_key_is_generated_printed_and_works(tmp_path: Path) -> None:
    with running_service(tmp_path, CALLBRIDGE_API_KEYS="", CALLBRIDGE_TOKEN_SECRET="") as svc:
        line = svc.wait_for_log(lambda e: str(e.get("event", "")).startswith("Demo API key"))
        key = line["api_key"]
        assert key.startswith("cbk_")
        assert key != API_KEY
        assert line["console"].endswith(f"/#key={key}")
        with httpx.Client(base_url=svc.url) as client:
            ok = client.get("/api/calls", headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200
            test_key = client.get("/api/calls", headers={"Authorization": f"Bearer {API_KEY}"})
            assert test_key.status_code == 401


@pytest.mark.parametrize(
    ("unset", "named"),
    [
        ({"CALLBRIDGE_API_KEYS": ""}, "CALLBRIDGE_API_KEYS"),
        ({"CALLBRIDGE_TOKEN_SECRET": ""}, "CALLBRIDGE_TOKEN_SECRET"),
    ],
)
def test_a_real_telnyx_account_without_auth_refuses_to_start(
    tmp_path: Path, signer: WebhookSigner, unset: dict[str, str], named: str
) -> None:
    env = service_env(
        tmp_path,
        TELNYX_API_KEY="KEY0123456789",
        TELNYX_PUBLIC_KEY=signer.public_key_b64,
        **unset,
    )
    process = ServiceProcess(env, tmp_path)
    with pytest.raises(AssertionError, match="service exited"):
        process.start()
    refusal = next(e for e in process.logs if e.get("event") == "Cannot start")
    assert named in refusal["reason"]
    assert "refusing" in refusal["reason"]
    assert process.stop() == 2


def test_allowed_origins_may_read_calls_across_origins(strict: ServiceProcess) -> None:
    """CORS follows the same allowlist: a page of an allowed origin can refetch calls with its
    token; any other origin gets no CORS grant, so its browser keeps the answer from it."""
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    with httpx.Client(base_url=strict.url) as client:
        allowed = client.options(
            "/api/calls", headers={"Origin": "https://app.example.com", **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        other = client.options(
            "/api/calls", headers={"Origin": "https://evil.example.net", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers
