"""Live queues: bounded, drop the oldest audio, never a control message; publish never waits."""

from __future__ import annotations

import asyncio

import pytest

from callbridge.hub import LiveQueue, MemoryHub, StreamNotice, TalkAudio, TalkControl
from callbridge.hub.live import AudioItem, TalkItem


def test_a_full_queue_drops_the_oldest_audio_and_counts_it() -> None:
    drops: list[int] = []
    queue: LiveQueue[AudioItem] = LiveQueue(3, lambda: drops.append(1))
    notice = StreamNotice("format", {})
    for item in (b"1", notice, b"2", b"3", b"4"):
        queue.offer(item)
    assert list(queue._items) == [notice, b"3", b"4"]
    assert queue.dropped == len(drops) == 2


def test_control_messages_are_never_dropped() -> None:
    queue: LiveQueue[TalkItem] = LiveQueue(2)
    controls = [TalkControl("start", 8000), TalkControl("mark", name="m"), TalkControl("stop")]
    for item in controls:
        queue.offer(item)
    assert list(queue._items) == controls
    queue.offer(TalkAudio(b"\x00\x00", 8000))
    assert queue.dropped == 0


async def test_get_waits_for_the_next_item() -> None:
    queue: LiveQueue[AudioItem] = LiveQueue(4)
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.offer(b"x")
    assert await waiting == b"x"


async def test_memory_hub_routes_by_call_and_has_one_talker() -> None:
    hub = MemoryHub()
    mine = hub.subscribe_audio("a", 4)
    theirs = hub.subscribe_audio("b", 4)
    hub.publish_audio("a", b"frame")
    assert (len(mine), len(theirs)) == (1, 0)
    hub.unsubscribe_audio("a", mine)
    hub.publish_audio("a", b"nobody listens")
    assert len(mine) == 1
    assert await hub.claim_talker("a", "alice")
    assert not await hub.claim_talker("a", "bob")
    await hub.release_talker("a", "bob")  # not the talker: no effect
    assert not await hub.claim_talker("a", "bob")
    await hub.release_talker("a", "alice")
    assert await hub.claim_talker("a", "bob")


def test_a_live_queue_holds_something() -> None:
    with pytest.raises(ValueError, match="at least one"):
        LiveQueue(0)
