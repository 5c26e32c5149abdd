"""`/call-events`: welcome, live order, resume with `since`, filters, resync and bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from callbridge.sim import WebhookSigner
from tests.conftest import ServiceProcess, mint_token, running_service
from tests.helpers import EventsClient, new_call_id, post_webhook, webhook


def _send_burst(api: httpx.Client, signer: WebhookSigner, call_id: str, digits: str) -> list[int]:
    seqs: list[int] = []
    for digit in digits:
        response = post_webhook(api, signer, webhook("call.dtmf.received", call_id, digit=digit))
        seqs.extend(response.json()["seq"])
    return seqs


async def test_welcome_carries_version_seq_epoch_and_ping_interval(
    service: ServiceProcess,
) -> None:
    async with await EventsClient.open(service.ws_url) as client:
        welcome = await client.next()
    assert welcome["type"] == "welcome"
    assert welcome["version"]
    assert isinstance(welcome["seq"], int)
    assert len(welcome["epoch"]) == 32
    assert welcome["ping_interval"] == 20.0
    for line in (
        "WebSocket upgrade request",
        "Upgrading to call-events WebSocket",
        "New client connected to call events WebSocket",
        "Welcome message sent to client",
    ):
        service.wait_for_log(lambda e, line=line: e.get("event") == line)


async def test_resume_with_since_gets_exactly_the_missed_events(
    service: ServiceProcess, api: httpx.Client, signer: WebhookSigner
) -> None:
    call_id = new_call_id()
    client = await EventsClient.open(service.ws_url)
    await client.next()
    seen = _send_burst(api, signer, call_id, "12")
    for seq in seen:
        await client.until(lambda m, seq=seq: m.get("seq") == seq)
    last_seen = client.events()[-1]["seq"]
    await client.close()

    missed = _send_burst(api, signer, call_id, "345")
    async with await EventsClient.open(service.ws_url, f"?since={last_seen}") as resumed:
        welcome = await resumed.next()
        assert welcome["seq"] >= missed[-1]
        replay_done = await resumed.until(lambda m: m["type"] == "replayed")
        assert replay_done["from"] == last_seen
        replayed = [m["seq"] for m in resumed.events()]
        assert replayed == list(range(last_seen + 1, welcome["seq"] + 1))
        assert set(missed) <= set(replayed)
        assert [
            m["payload"]["digit"] for m in resumed.events() if m["call_control_id"] == call_id
        ] == list("345")
        # Live events continue right after the replay, with no gap and no duplicate.
        live = _send_burst(api, signer, call_id, "6")
        await resumed.until(lambda m: m.get("seq") == live[-1])
        everything = [m["seq"] for m in resumed.events()]
        assert everything == list(range(last_seen + 1, live[-1] + 1))


async def test_two_clients_see_the_same_sequence(
    service: ServiceProcess, api: httpx.Client, signer: WebhookSigner
) -> None:
    call_id = new_call_id()
    async with (
        await EventsClient.open(service.ws_url) as first,
        await EventsClient.open(service.ws_url) as second,
    ):
        await first.next()
        await second.next()
        sent = await asyncio.gather(
            *(
                asyncio.to_thread(_send_burst, api, signer, call_id, digits)
                for digits in ("123", "456", "789")
            )
        )
        last = max(seq for seqs in sent for seq in seqs)
        await first.until(lambda m: m.get("seq") == last)
        await second.until(lambda m: m.get("seq") == last)
        assert [m["seq"] for m in first.events()] == [m["seq"] for m in second.events()]
        seqs = [m["seq"] for m in first.events()]
        assert seqs == list(range(seqs[0], last + 1))


async def test_filter_by_call_control_id(
    service: ServiceProcess, api: httpx.Client, signer: WebhookSigner
) -> None:
    wanted, other, also = new_call_id(), new_call_id(), new_call_id()
    query = f"?call_control_id={wanted}&call_control_id={also}"
    async with await EventsClient.open(service.ws_url, query) as client:
        welcome = await client.next()
        assert welcome["filter"] == sorted([wanted, also])
        _send_burst(api, signer, other, "1")
        _send_burst(api, signer, wanted, "2")
        _send_burst(api, signer, other, "3")
        last = _send_burst(api, signer, also, "4")[-1]
        await client.until(lambda m: m.get("seq") == last)
    assert {m["call_control_id"] for m in client.events()} == {wanted, also}
    digits = [m["payload"]["digit"] for m in client.events() if m["type"] == "call.dtmf.received"]
    assert digits == ["2", "4"]


@pytest.mark.parametrize(
    ("query", "reason"),
    [("?since=abc", "integer"), ("?since=-4", "negative")],
)
async def test_bad_query_is_closed_with_4400_and_reason(
    service: ServiceProcess, query: str, reason: str
) -> None:
    client = await EventsClient.open(service.ws_url, query)
    with pytest.raises(ConnectionClosed) as closed:
        await client.next()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4400
    assert reason in closed.value.rcvd.reason


async def test_resume_that_cannot_be_served_says_resync(
    service: ServiceProcess, api: httpx.Client, signer: WebhookSigner
) -> None:
    _send_burst(api, signer, new_call_id(), "1")
    async with await EventsClient.open(service.ws_url, "?since=999999999") as ahead:
        welcome = await ahead.next()
        resync = await ahead.next()
        assert resync == {"type": "resync", "reason": resync["reason"], "seq": welcome["seq"]}
        assert resync["reason"].startswith("seq_ahead")
    async with await EventsClient.open(service.ws_url, "?since=0&epoch=another") as other_log:
        await other_log.next()
        resync = await other_log.next()
        assert resync["type"] == "resync"
        assert resync["reason"].startswith("epoch_changed")


async def test_resume_too_far_behind_is_told_to_refetch(
    tmp_path: Path, signer: WebhookSigner
) -> None:
    with running_service(tmp_path, CALLBRIDGE_EVENTS_REPLAY_MAX="3") as svc:
        with httpx.Client(base_url=svc.url) as api:
            _send_burst(api, signer, new_call_id(), "1234")
        async with await EventsClient.open(svc.ws_url, "?since=0") as client:
            welcome = await client.next()
            resync = await client.next()
        assert resync["type"] == "resync"
        assert resync["reason"].startswith("too_far_behind")
        assert resync["seq"] == welcome["seq"] == 5  # 4 digits and the call's first state


async def test_client_messages_ping_and_garbage(service: ServiceProcess) -> None:
    async with await EventsClient.open(service.ws_url) as client:
        await client.next()
        await client.connection.send('{"type":"ping"}')
        assert await client.next() == {"type": "pong"}
        await client.connection.send("garbage")
        error = await client.next()
        assert error["type"] == "error"
        await client.connection.send('{"type":"ping"}')
        assert await client.next() == {"type": "pong"}  # still open and serving


async def test_events_survive_a_service_restart(tmp_path: Path, signer: WebhookSigner) -> None:
    call_id = new_call_id()
    with running_service(tmp_path) as svc:
        env = svc.env
        with httpx.Client(base_url=svc.url) as api:
            before = _send_burst(api, signer, call_id, "12")
    with running_service(tmp_path, CALLBRIDGE_PORT=env["CALLBRIDGE_PORT"]) as again:
        async with await EventsClient.open(again.ws_url, f"?since={before[0] - 1}") as client:
            welcome = await client.next()
            assert welcome["seq"] == before[-1]
            await client.until(lambda m: m["type"] == "replayed")
        assert [m["seq"] for m in client.events()] == before


async def test_query_strings_never_reach_the_logs(service: ServiceProcess) -> None:
    marker = "SECRETMARK" + "x" * 8
    token = mint_token()
    query = f"?since=0&epoch={marker}"
    async with await EventsClient.open(service.ws_url, query, token=token) as client:
        await client.next()
    service.wait_for_log(lambda e: e.get("event") == "Welcome message sent to client")
    assert not any(marker in line for line in service.raw_lines)
    assert not any(token in line for line in service.raw_lines)
