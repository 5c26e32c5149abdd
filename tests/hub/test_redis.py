"""The Redis hub against real Redis: several hubs in one process stand for several instances.

Most tests share the Redis that scripts/test starts, each under a key prefix of its own; the
restart test runs a redis-server of its own, which it kills and starts again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from callbridge.calls.events import StoredEvent
from callbridge.hub import StreamNotice, TalkAudio, TalkControl
from callbridge.hub.base import EventSubscription, open_hub
from callbridge.hub.live import AudioItem, LiveQueue
from callbridge.hub.redis import RedisHub, decode_item, encode_item
from tests.backends import SHARED_REDIS_URL, RedisServer
from tests.conftest import free_port

WAIT = 10.0
MakeHub = Callable[..., Awaitable[RedisHub]]


AT = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)


def event(seq: int, call_id: str = "v3:a") -> StoredEvent:
    return StoredEvent(seq, "x.test", call_id, AT, {"n": seq, "s": "é"})


async def take(queue: LiveQueue[Any], count: int) -> list[Any]:
    async with asyncio.timeout(WAIT):
        return [await queue.get() for _ in range(count)]


async def next_event(subscription: EventSubscription) -> StoredEvent | None:
    return await asyncio.wait_for(subscription.get(), WAIT)


@pytest.fixture
async def make_hub() -> AsyncIterator[MakeHub]:
    """Started hubs on one prefix (one "deployment"), closed after the test."""
    prefix = "test-" + uuid.uuid4().hex[:8]
    opened: list[RedisHub] = []

    async def make(url: str = SHARED_REDIS_URL, **options: Any) -> RedisHub:
        hub = RedisHub(url, prefix=prefix, **options)
        await hub.start()
        opened.append(hub)
        return hub

    yield make
    for hub in opened:
        await hub.close()


def test_open_hub_knows_redis_urls() -> None:
    assert isinstance(open_hub("redis://127.0.0.1:6379/0"), RedisHub)
    assert isinstance(open_hub("rediss://example.invalid:6380/0"), RedisHub)
    with pytest.raises(ValueError, match="memory://, redis:// or rediss://"):
        open_hub("kafka://x")


@pytest.mark.parametrize(
    "item",
    [
        b"\x01\x00\x00\x00" + bytes(range(256)),
        StreamNotice("format", {"codec": {"encoding": "PCMU"}, "stream_id": "s"}),
        TalkAudio(b"\x01\x02" * 160, 16000),
        TalkControl("start", sample_rate=8000),
        TalkControl("mark", name="m-1"),
    ],
)
def test_live_items_survive_the_wire(item: Any) -> None:
    kind, body = encode_item(item)
    assert decode_item(kind, body) == item


async def test_audio_and_notices_cross_instances_in_order_and_are_not_echoed(
    make_hub: MakeHub,
) -> None:
    carrier, listener = await make_hub(), await make_hub()
    remote = listener.subscribe_audio("v3:x", 100)
    local = carrier.subscribe_audio("v3:x", 100)
    await listener.subscribed("v3:x")
    await carrier.subscribed("v3:x")
    items: list[AudioItem] = [
        StreamNotice("format", {"stream_id": "s1"}),
        *(bytes([1, 0, 0, 0, n]) * 40 for n in range(20)),
        StreamNotice("stream.stopped", {"stream_id": "s1", "reason": "stream_stopped"}),
    ]
    for item in items:
        carrier.publish_audio("v3:x", item)
    assert await take(remote, len(items)) == items
    assert await take(local, len(items)) == items
    carrier.publish_audio("v3:x", b"last")  # nothing came twice before it
    assert await take(local, 1) == [b"last"]
    assert await take(remote, 1) == [b"last"]


async def test_talk_back_reaches_the_instance_holding_the_carrier_stream(
    make_hub: MakeHub,
) -> None:
    carrier, browser = await make_hub(), await make_hub()
    talk = carrier.subscribe_talk("v3:t", 100)
    await carrier.subscribed("v3:t")
    sent = [
        TalkControl("start", sample_rate=16000),
        TalkAudio(bytes(range(200)) * 3, 16000),
        TalkControl("mark", name="after-hello"),
        TalkControl("stop"),
    ]
    for item in sent:
        browser.publish_talk("v3:t", item)
    assert await take(talk, len(sent)) == sent


async def test_events_reach_every_instance_once(make_hub: MakeHub) -> None:
    hubs = [await make_hub() for _ in range(3)]
    subscriptions = [hub.subscribe_events(100) for hub in hubs]
    published = [event(seq) for seq in range(1, 11)]
    for stored in published:
        await hubs[stored.seq % 2].publish_event(stored)  # two publishers, interleaved
    for subscription in subscriptions:
        got = [await next_event(subscription) for _ in published]
        assert sorted(got, key=lambda e: e.seq if e else 0) == published
        from_each = [[e.seq for e in got if e and e.seq % 2 == parity] for parity in (0, 1)]
        assert all(seqs == sorted(seqs) for seqs in from_each)  # each publisher's order kept
    last = event(11)
    await hubs[2].publish_event(last)
    for subscription in subscriptions:
        assert await next_event(subscription) == last  # and nothing more before it


async def test_one_talker_per_call_across_instances(make_hub: MakeHub) -> None:
    a, b = await make_hub(), await make_hub()
    assert await a.claim_talker("v3:c", "alice")
    assert not await b.claim_talker("v3:c", "bob")
    await b.release_talker("v3:c", "bob")  # not the talker: no effect
    assert not await b.claim_talker("v3:c", "bob")
    assert await a.claim_talker("v3:c", "alice")  # the talker may claim again
    key = "talker:v3:c"
    ttl = await a._redis.pttl(f"{a._prefix}:{key}")
    assert 0 < ttl <= 10_000
    await a._redis.pexpire(f"{a._prefix}:{key}", 500)
    await a.renew_talkers()  # what the renewal task does every few seconds
    assert await a._redis.pttl(f"{a._prefix}:{key}") > 500
    await a.release_talker("v3:c", "alice")
    assert await b.claim_talker("v3:c", "bob")


async def test_publishing_never_waits_for_an_absent_broker_and_drops_are_counted() -> None:
    hub = RedisHub(f"redis://127.0.0.1:{free_port()}/0", queue_size=100)  # nobody listens

    def dropped(kind: str) -> float:
        return REGISTRY.get_sample_value("callbridge_hub_dropped_total", {"kind": kind}) or 0.0

    audio_before, control_before = dropped("audio"), dropped("control")
    for n in range(50):
        hub.publish_audio("v3:z", bytes([n]))  # a plain call: returns at once
    for n in range(150):
        hub.publish_audio("v3:z", StreamNotice("mark", {"name": str(n)}))
    assert dropped("audio") - audio_before == 50  # stale by the time the broker is back
    assert dropped("control") - control_before == 50  # the queue holds 100
    assert len(hub._out) == 100
    oldest, newest = (decode_item(m[2][8], m[2][9:]) for m in (hub._out[0], hub._out[-1]))
    assert (oldest, newest) == (
        StreamNotice("mark", {"name": "50"}),
        StreamNotice("mark", {"name": "149"}),
    )
    with pytest.raises(Exception, match="Connect"):
        await hub.ping()
    await hub.close()


async def test_an_event_that_never_reached_the_broker_is_caught_by_the_head_check(
    make_hub: MakeHub,
) -> None:
    head = [0]

    async def last_seq() -> int:
        return head[0]

    hub = await make_hub(last_seq=last_seq, check_interval=0.05)
    subscription = hub.subscribe_events(100)
    head[0] = 1  # stored on an instance that died before it could publish
    assert await next_event(subscription) is None  # "catch up from the store"
    assert subscription.lagged


async def test_a_redis_restart_reconnects_audio_and_sends_event_clients_to_the_store(
    make_hub: MakeHub, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path).start()
    try:
        carrier = await make_hub(redis.url, check_interval=0)
        listener = await make_hub(redis.url, check_interval=0)
        queue = listener.subscribe_audio("v3:r", 1000)
        subscription = listener.subscribe_events(100)
        await listener.subscribed("v3:r")
        carrier.publish_audio("v3:r", b"before")
        assert await take(queue, 1) == [b"before"]
        await carrier.publish_event(event(1))
        assert await next_event(subscription) == event(1)

        redis.stop()  # kill -9: the stream and every subscription are gone with it
        with pytest.raises(Exception, match="Connect"):
            await listener.ping()
        redis.start()
        await listener.ping()

        # The stream the listener read from is gone: its event clients go to the store.
        assert await next_event(subscription) is None
        # Audio flows again once both sides are back; the sender paces itself, 20 ms a frame.
        async with asyncio.timeout(WAIT):
            while True:
                carrier.publish_audio("v3:r", b"after")
                try:
                    got = await asyncio.wait_for(queue.get(), 0.02)
                except TimeoutError:
                    continue
                if got == b"after":
                    break
        await carrier.publish_event(event(2))
        assert await next_event(subscription) == event(2)
    finally:
        redis.stop()
