"""Three instances behind nginx, sharing Redis and PostgreSQL, behave as one system.

Real processes throughout (see cluster.py). Instance A holds a call's carrier stream, listeners
on B and C hear it; a browser on B talks into it; webhooks land on every instance and every
/call-events client sees one sequence; an instance killed with SIGKILL and a Redis killed and
restarted mid-call lose nothing that is promised to be lossless.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from callbridge.audio.g711 import ulaw_encode
from callbridge.sim.auth import api_headers
from callbridge.sim.media import TelnyxMediaStream
from tests.conftest import API_KEY, ServiceProcess
from tests.helpers import EventsClient, webhook, with_token
from tests.scale.cluster import Cluster, dial, hang_up, running_cluster
from tests.signals import chunks, sweep, tone
from tests.ws.audio_client import OPENED, Frame, Listener, close_all, open_stream

WAIT = 20.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture(autouse=True)
async def _healthy(cluster: Cluster) -> AsyncIterator[None]:
    cluster.ensure_running()
    yield
    await close_all()


# --- helpers -----------------------------------------------------------------------------------


def post(instance: ServiceProcess, cluster: Cluster, document: dict[str, Any]) -> str:
    """Deliver a signed webhook to one instance; the service's answer status."""
    body = orjson.dumps(document)
    response = httpx.post(
        f"{instance.url}/api/webhooks/telnyx",
        content=body,
        headers=cluster.signer.headers(body),
        timeout=15,
    )
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def apost(client: httpx.AsyncClient, cluster: Cluster, url: str, document: Any) -> str:
    body = orjson.dumps(document)
    response = await client.post(
        f"{url}/api/webhooks/telnyx", content=body, headers=cluster.signer.headers(body)
    )
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


def stored_events(cluster: Cluster, call_id: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=cluster.url, timeout=15, headers=api_headers(API_KEY)) as api:
        response = api.get(f"/api/calls/{call_id}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events


def ready(instance: ServiceProcess) -> httpx.Response:
    return httpx.get(f"{instance.url}/api/ready", timeout=10)


def until_ready_is(instance: ServiceProcess, status: int) -> dict[str, Any]:
    """/api/ready has no push signal: poll it, bounded, until it answers `status`."""
    deadline = time.monotonic() + WAIT
    while True:
        response = ready(instance)
        if response.status_code == status:
            body: dict[str, Any] = response.json()
            return body
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)  # polling interval of a bounded readiness poll


def count_of(instance: ServiceProcess, event: str) -> int:
    return sum(entry.get("event") == event for entry in list(instance.logs))


def wait_for_count(instance: ServiceProcess, event: str, count: int) -> None:
    """Until `instance` has logged `event` `count` times (each line is looked at once)."""
    seen = [0]

    def reached(entry: dict[str, Any]) -> bool:
        seen[0] += entry.get("event") == event
        return seen[0] >= count

    instance.wait_for_log(reached)


async def closed(connection: Any) -> bool:
    """Read until the connection closes; True once it has."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(connection.recv(), WAIT)
    return True


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages]


def same_event(message: dict[str, Any]) -> tuple[Any, ...]:
    return (message["seq"], message["type"], message["call_control_id"], message["payload"])


async def events_until_seq(client: EventsClient, seq: int) -> list[dict[str, Any]]:
    await client.until(lambda m: m.get("seq", 0) >= seq and m.get("type") != "welcome", WAIT)
    return client.events()


async def listener_on(instance: ServiceProcess | str, call_id: str) -> Listener:
    if isinstance(instance, str):
        connection = await connect(
            f"{instance}/frontend-audio" + with_token(f"?call_control_id={call_id}"),
            open_timeout=WAIT,
        )
        OPENED.append(connection)
        return Listener(connection)
    return await Listener.open(instance, f"?call_control_id={call_id}")


async def codec_announced(listener: Listener) -> dict[str, Any]:
    while True:
        message = await listener.message("format")
        if message["codec"] is not None:
            return message


async def inbound_frames(listener: Listener, count: int) -> list[Frame]:
    while len([f for f in listener.frames if f.track == 0]) < count:
        await listener.next()
    return [f for f in listener.frames if f.track == 0]


async def carrier_media(stream: TelnyxMediaStream, count: int) -> list[bytes]:
    payloads: list[bytes] = []
    while len(payloads) < count:
        message = await asyncio.wait_for(stream.receive(), WAIT)
        if message["event"] == "media":
            payloads.append(base64.b64decode(message["media"]["payload"], validate=True))
    return payloads


@contextlib.asynccontextmanager
async def paced_audio(stream: TelnyxMediaStream) -> AsyncIterator[None]:
    """The carrier side keeps talking, one 20 ms PCMU frame every 20 ms, while the block runs."""
    frame = ulaw_encode(tone(0.02, 440.0))

    async def talk() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await stream.media(frame)
                await asyncio.sleep(0.02)  # pacing, as Telnyx does; nothing waits on it

    task = asyncio.create_task(talk())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def new_call_id() -> str:
    return "v3:scale-" + uuid.uuid4().hex


# --- live audio across instances ---------------------------------------------------------------


async def test_a_stream_on_a_is_heard_bit_exact_on_b_and_c_and_b_talks_back_to_a(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.instances
    call_id, token = dial(cluster)
    listeners = [await listener_on(instance, call_id) for instance in (b, c)]
    for listener in listeners:
        await listener.message("format")  # subscribed on its instance: nothing is missed now
    stream = await open_stream(a, call_id, token)  # straight to A
    await stream.begin()
    for listener in listeners:
        announced = await codec_announced(listener)
        assert announced["codec"]["encoding"] == "PCMU"
        assert announced["talk"]["codec"] == "PCMU"

    # 0.4 s per track: 40 frames sent at once fit a listener's queue (50), so none is dropped.
    inbound = [ulaw_encode(piece) for piece in chunks(sweep(0.4), 320)]
    outbound = [ulaw_encode(piece) for piece in chunks(tone(0.4, 440.0), 320)]
    for mine, theirs in zip(inbound, outbound, strict=True):
        await stream.media(mine, "inbound")
        await stream.media(theirs, "outbound")
    for listener in listeners:
        frames = await listener.frames_until(2 * len(inbound))
        assert [f.payload for f in frames if f.track == 0] == inbound
        assert [f.payload for f in frames if f.track == 1] == outbound
        assert [f.chunk for f in frames if f.track == 0] == list(range(1, len(inbound) + 1))

    # B talks; the carrier socket on A receives it as exact 20 ms PCMU frames.
    talker = listeners[0]
    await talker.send_json({"type": "talk.start", "encoding": "pcm16", "sample_rate": 8000})
    assert (await talker.message("talk.started"))["codec"] == "PCMU"
    refused_on_c = listeners[1]
    await refused_on_c.send_json({"type": "talk.start", "encoding": "pcm16", "sample_rate": 8000})
    assert (await refused_on_c.message("talk.refused"))["code"] == 4409  # one talker, any instance
    speech = sweep(0.4)  # 3200 samples: 20 frames exactly
    for piece in chunks(speech, 500):
        await talker.connection.send(piece)
    await talker.send_json({"type": "talk.stop"})
    await talker.message("talk.stopped")
    assert b"".join(await carrier_media(stream, 20)) == ulaw_encode(speech)

    await stream.stop()
    for listener in listeners:
        assert (await listener.message("end"))["reason"] == "stream_stopped"
    hang_up(cluster, call_id)


async def test_the_simulators_stream_lands_where_nginx_sends_it_and_every_instance_hears_it(
    cluster: Cluster,
) -> None:
    call_id, _token = dial(cluster, "+15550100011")  # `long`: the simulator streams speech
    listeners = [await listener_on(instance, call_id) for instance in cluster.instances]
    heard = []
    for listener in listeners:
        await codec_announced(listener)
        heard.append({f.chunk: f.payload for f in await inbound_frames(listener, 25)})
    common = set.intersection(*(set(h) for h in heard))
    assert common
    for chunk in common:
        assert len({h[chunk] for h in heard}) == 1  # the same audio on every instance
    hang_up(cluster, call_id)  # through nginx, to any instance: every listener hears the end
    for listener in listeners:
        assert (await listener.message("end"))["reason"] in ("call_ended", "stream_stopped")


# --- events across instances -------------------------------------------------------------------


async def test_webhooks_spread_over_instances_give_every_client_one_sequence(
    cluster: Cluster,
) -> None:
    instances = cluster.instances
    call_id = new_call_id()
    token = cluster.mint_token()  # by one instance, for all: they share the token secret
    first = await EventsClient.open(instances[0].ws_url, token=token)
    start = (await first.next())["seq"]
    clients = [first] + [
        await EventsClient.open(url, f"?since={start}", token=token)
        for url in (instances[1].ws_url, instances[2].ws_url, cluster.ws_url)
    ]
    for client in clients[1:]:
        await client.until(lambda m: m["type"] == "replayed")  # from `start`, like the first

    assert post(instances[0], cluster, webhook("call.initiated", call_id, direction="outgoing"))
    digits = [webhook("call.dtmf.received", call_id, digit=str(n % 10)) for n in range(30)]
    duplicate = webhook("call.dtmf.received", call_id, digit="#")
    async with httpx.AsyncClient(timeout=15) as http:
        outcomes = await asyncio.gather(
            # Concurrent, spread over every instance: the broker sees them out of seq order.
            *(
                apost(http, cluster, instances[n % 3].url, document)
                for n, document in enumerate(digits)
            ),
            # The same delivery to two instances at the same moment.
            apost(http, cluster, instances[1].url, duplicate),
            apost(http, cluster, instances[2].url, duplicate),
        )
    assert outcomes[:30] == ["accepted"] * 30
    assert sorted(outcomes[30:]) == ["accepted", "duplicate"]

    log = stored_events(cluster, call_id)
    assert sum(e["payload"].get("digit") == "#" for e in log) == 1  # stored once
    last = log[-1]["seq"]
    received = [await events_until_seq(client, last) for client in clients]
    for events in received:
        got = [same_event(m) for m in events if m["seq"] <= last]
        assert got == [same_event(m) for m in received[0] if m["seq"] <= last]  # identical
        assert seqs(events)[: last - start] == list(range(start + 1, last + 1))  # no gap, once
    ours = [same_event(m) for m in received[0] if m["call_control_id"] == call_id]
    assert ours == [same_event(m) for m in log]
    for client in clients:
        await client.close()


# --- failures ----------------------------------------------------------------------------------


async def test_an_instance_killed_mid_call_loses_its_browsers_to_another_that_resumes_them(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.instances  # nginx's failover port sends browsers to B while B lives
    call_id, token = dial(cluster)
    stream = await open_stream(a, call_id, token)
    await stream.begin()
    query = f"?call_control_id={call_id}"
    joined = count_of(b, "New client connected to call events WebSocket")
    events = await EventsClient.open(cluster.failover_ws_url, query)
    welcome = await events.next()
    listener = await listener_on(cluster.failover_ws_url, call_id)
    await codec_announced(listener)
    # Both browsers are on B.
    b.wait_for_log(lambda e: e.get("event") == "Frontend client connected to audio stream"
                   and e.get("call_control_id") == call_id)  # fmt: skip
    wait_for_count(b, "New client connected to call events WebSocket", joined + 1)
    for n in range(3):
        await stream.media(ulaw_encode(tone(0.02, 300.0 + n)))
    await inbound_frames(listener, 3)
    post(a, cluster, webhook("call.dtmf.received", call_id, digit="1"))
    post(c, cluster, webhook("call.dtmf.received", call_id, digit="2"))
    before = await events_until_seq(events, stored_events(cluster, call_id)[-1]["seq"])

    b.stop(signal.SIGKILL)
    assert await closed(events.connection)  # nginx lost the upstream under both
    assert await closed(listener.connection)

    # While the browser is away, more happens on the other instances.
    post(a, cluster, webhook("call.dtmf.received", call_id, digit="3"))
    post(c, cluster, webhook("call.dtmf.received", call_id, digit="4"))

    # It reconnects through nginx, which now sends it to A or C, and resumes from its seq.
    resumed = await EventsClient.open(
        cluster.failover_ws_url,
        f"{query}&since={before[-1]['seq']}&epoch={welcome['epoch']}",
    )
    await resumed.until(lambda m: m["type"] == "replayed")
    post(a, cluster, webhook("call.dtmf.received", call_id, digit="5"))
    log = stored_events(cluster, call_id)
    after = await events_until_seq(resumed, log[-1]["seq"])
    delivered = [same_event(m) for m in before + after]
    assert delivered == [same_event(m) for m in log if m["seq"] > welcome["seq"]]

    # The listener reconnects too, to a live instance, and hears what A relays from now on.
    again = await listener_on(cluster.failover_ws_url, call_id)
    await codec_announced(again)
    chunk_before = stream.chunks["inbound"]
    for n in range(5):
        await stream.media(ulaw_encode(tone(0.02, 500.0 + n)))
    frames = await inbound_frames(again, 5)
    assert [f.chunk for f in frames] == list(range(chunk_before + 1, chunk_before + 6))
    await stream.stop()
    await resumed.close()
    hang_up(cluster, call_id)


async def test_a_redis_restart_mid_call_loses_no_event_and_audio_resumes(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.instances
    call_id, token = dial(cluster)
    stream = await open_stream(a, call_id, token)
    await stream.begin()
    listener = await listener_on(b, call_id)
    await codec_announced(listener)
    query = f"?call_control_id={call_id}"
    clients = [await EventsClient.open(i.ws_url, query) for i in cluster.instances]
    for client in clients:
        await client.next()  # welcome
    async with paced_audio(stream):
        await inbound_frames(listener, 5)
        post(c, cluster, webhook("call.dtmf.received", call_id, digit="1"))

        cluster.redis.stop()  # kill -9, nothing persisted: the event stream is gone too
        down = until_ready_is(b, 503)
        assert down["status"] == "unavailable"
        assert down["checks"]["store"] == {"ok": True, "error": None}
        assert down["checks"]["hub"]["ok"] is False
        assert down["checks"]["hub"]["error"]

        # Webhooks keep being stored while the hub is down, on every instance.
        for n, instance in enumerate(cluster.instances):
            post(instance, cluster, webhook("call.dtmf.received", call_id, digit=str(5 + n)))

        cluster.redis.start()
        restarted_at = stream.chunks["inbound"]
        for instance in cluster.instances:
            until_ready_is(instance, 200)
        # Audio to the listener on B resumes: frames sent after the restart arrive.
        while not [f for f in listener.frames if f.track == 0 and f.chunk > restarted_at]:
            await listener.next()

    post(c, cluster, webhook("call.dtmf.received", call_id, digit="9"))
    log = stored_events(cluster, call_id)
    for client in clients:
        got = await events_until_seq(client, log[-1]["seq"])
        assert [same_event(m) for m in got] == [
            same_event(m) for m in log if m["seq"] > client.received[0]["seq"]
        ]
    for instance in (a, b, c):
        instance.wait_for_log(lambda e: e.get("event") == "Hub connected to the broker")
    await stream.stop()
    for client in clients:
        await client.close()
    hang_up(cluster, call_id)


async def test_instances_started_at_once_on_a_fresh_database_share_one_log(
    cluster: Cluster,
) -> None:
    """The three started together on an empty database: one migrated, all name one epoch."""
    welcomes = []
    for instance in cluster.instances:
        async with await EventsClient.open(instance.ws_url) as client:
            welcomes.append(await client.next())
    assert len({welcome["epoch"] for welcome in welcomes}) == 1
