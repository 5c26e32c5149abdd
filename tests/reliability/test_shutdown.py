"""SIGTERM on a lone instance: browsers are told to reconnect, webhooks are never 200-and-lost,
the media stream is recorded lost (nobody to hand it to), and the process exits 0.

Each test runs its own service (embedded simulator, SQLite) and stops it; what it stored is
read from the SQLite file after the process has exited.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from callbridge.sim import WebhookSigner
from tests.conftest import ServiceProcess, service_env
from tests.helpers import EventsClient, new_call_id, webhook
from tests.reliability.support import (
    LONG_CALL,
    RECONNECT,
    close_of,
    sqlite_events,
    stream_format,
)
from tests.ws.audio_client import Listener, close_all

POSTERS = 4  # concurrent webhook senders, each on its own connections
ANSWERED_BEFORE_SIGTERM = 20
MAX_POSTS = 2000  # per sender: a bound, should the service never stop accepting


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(service_env(tmp_path), tmp_path).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
async def _close_sockets() -> AsyncIterator[None]:
    yield
    await close_all()


def database(service: ServiceProcess) -> Path:
    return service.workdir / "callbridge.db"


async def test_sigterm_tells_browsers_to_reconnect_and_exits_0(service: ServiceProcess) -> None:
    with httpx.Client(base_url=service.url, headers=service.api_headers, timeout=15) as api:
        response = api.post("/api/calls", json={"to": LONG_CALL})
    assert response.status_code == 201, response.text
    call_id = response.json()["data"]["call_control_id"]
    events = await EventsClient.open(service.ws_url, token=service.ws_token)
    assert (await events.next())["type"] == "welcome"
    listener = await Listener.open(service, f"?call_control_id={call_id}", token=service.ws_token)
    announced = await stream_format(listener)  # the simulator's media stream has started
    await listener.frames_until(5)

    assert service.process is not None
    service.process.send_signal(signal.SIGTERM)
    assert await close_of(events.connection) == (1012, RECONNECT)
    assert await close_of(listener.connection) == (1012, RECONNECT)
    assert not [m for m in listener.messages if m["type"] == "end"]  # reconnect, not "ended"
    assert service.stop() == 0

    logged = [entry.get("event") for entry in service.logs]
    assert "No other instance to take over media streams" in logged
    assert "callbridge stopped" in logged
    stopped = [e for e in sqlite_events(database(service), call_id) if e["type"] == "media.stopped"]
    assert [(e["payload"]["stream_id"], e["payload"]["outcome"]) for e in stopped] == [
        (announced["stream_id"], "lost")
    ]
    assert stopped[0]["payload"]["reason"].startswith("instance stopped")


async def test_webhooks_posted_while_sigterm_arrives_are_refused_or_stored(
    service: ServiceProcess, signer: WebhookSigner
) -> None:
    call_id = new_call_id()
    outcomes: list[tuple[str, int | str]] = []  # (data.id, HTTP status or the error's name)
    answered = asyncio.Event()

    async def post_until_refused() -> None:
        async with httpx.AsyncClient(base_url=service.url, timeout=15) as client:
            for n in range(MAX_POSTS):
                document = webhook("call.dtmf.received", call_id, digit=str(n % 10))
                body = orjson.dumps(document)
                try:
                    response = await client.post(
                        "/api/webhooks/telnyx", content=body, headers=signer.headers(body)
                    )
                except httpx.TransportError as exc:  # refused, reset, closed before an answer
                    outcomes.append((document["data"]["id"], type(exc).__name__))
                    return
                outcomes.append((document["data"]["id"], response.status_code))
                if sum(status == 200 for _, status in outcomes) >= ANSWERED_BEFORE_SIGTERM:
                    answered.set()
                if response.status_code != 200:
                    return

    senders = [asyncio.create_task(post_until_refused()) for _ in range(POSTERS)]
    await asyncio.wait_for(answered.wait(), 30)
    assert service.process is not None
    service.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*senders), 120)
    assert service.stop() == 0

    stored = {e["event_id"] for e in sqlite_events(database(service), call_id)}
    accepted = {event_id for event_id, status in outcomes if status == 200}
    assert len(accepted) >= ANSWERED_BEFORE_SIGTERM
    assert accepted <= stored  # every 200 was stored before it was sent
    refused = [status for _, status in outcomes if status != 200]
    assert len(refused) == POSTERS  # each sender was refused in the end, and only once
    assert all(isinstance(status, str) or status == 503 for status in refused), refused
