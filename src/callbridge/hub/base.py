"""The hub interface, and the per-subscriber bounded queue every broker uses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from callbridge.calls.events import StoredEvent
from callbridge.hub.live import AudioItem, LiveQueue, TalkItem
from callbridge.metrics import EVENT_SUBSCRIBER_OVERFLOWS

__all__ = ["EventSubscription", "Hub", "open_hub"]


class EventSubscription:
    """A bounded queue of live events for one subscriber.

    Events are lossless, but a live queue need not be: when it is full the subscriber is marked
    `lagged` and later catches up from the store, which holds every event. Nothing waits on a
    slow subscriber.

    A hub that may have lost events on their way (a broker that restarted) calls `resync()`:
    the subscriber is marked lagged and woken with `None`, so it catches up from the store even
    when no further event arrives.
    """

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[StoredEvent | None] = asyncio.Queue(maxsize)
        self.lagged = False

    def offer(self, event: StoredEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True
            EVENT_SUBSCRIBER_OVERFLOWS.inc()

    def resync(self) -> None:
        """Tell the subscriber to catch up from the store (its queue may miss events)."""
        self.lagged = True
        with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes it anyway
            self.queue.put_nowait(None)

    async def get(self) -> StoredEvent | None:
        """The next live event, or None: catch up from the store now (see `lagged`)."""
        return await self.queue.get()


class Hub(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the broker cannot be reached."""

    async def publish_event(self, event: StoredEvent) -> None:
        """Hand a stored event to every subscriber of every instance."""

    def subscribe_events(self, maxsize: int) -> EventSubscription: ...

    def unsubscribe_events(self, subscription: EventSubscription) -> None: ...

    # --- live audio: lossy, never blocks the publisher ------------------------------------

    def publish_audio(self, call_control_id: str, item: AudioItem) -> None:
        """Offer a frame or notice to every listener of the call, on every instance."""

    def subscribe_audio(
        self,
        call_control_id: str,
        maxsize: int,
        on_drop: Callable[[], None] | None = None,
        queue: LiveQueue[AudioItem] | None = None,
    ) -> LiveQueue[AudioItem]:
        """A listener's queue for the call (`queue`, if given: one that sends as it is
        offered, see ws/frontend_audio.py)."""
        ...

    def unsubscribe_audio(self, call_control_id: str, queue: LiveQueue[AudioItem]) -> None: ...

    def publish_talk(self, call_control_id: str, item: TalkItem) -> None:
        """Offer talk-back audio or a talk command to the carrier stream of the call."""

    def subscribe_talk(
        self, call_control_id: str, maxsize: int, on_drop: Callable[[], None] | None = None
    ) -> LiveQueue[TalkItem]: ...

    def unsubscribe_talk(self, call_control_id: str, queue: LiveQueue[TalkItem]) -> None: ...

    async def subscribed(self, call_control_id: str) -> None:
        """Return once this instance's subscriptions to the call's channels are in effect, so
        that anything published from now on, on any instance, reaches their queues. At once in
        process; a broker round trip otherwise (bounded: an unreachable broker does not hold
        the caller)."""

    async def claim_talker(self, call_control_id: str, owner: str) -> bool:
        """Become the one talker of the call; False if someone else is."""

    async def release_talker(self, call_control_id: str, owner: str) -> None:
        """Stop being the talker (no effect if `owner` is not the talker)."""


def open_hub(
    url: str,
    *,
    last_seq: Callable[[], Awaitable[int]] | None = None,
    queue_size: int = 10_000,
    check_interval: float = 1.0,
) -> Hub:
    """The hub for a broker URL: `memory://` (one process) or `redis://`/`rediss://`.

    `last_seq` reads the newest seq in the store; a networked hub uses it to notice an event
    that the broker lost (see hub/redis.py). `queue_size` bounds what waits for the broker, and
    `check_interval` is how often that head is checked.
    """
    if url.startswith("memory://"):
        from callbridge.hub.memory import MemoryHub

        return MemoryHub()
    if url.startswith(("redis://", "rediss://")):
        from callbridge.hub.redis import RedisHub

        return RedisHub(
            url, last_seq=last_seq, queue_size=queue_size, check_interval=check_interval
        )
    raise ValueError(
        f"unsupported broker URL scheme in {url.split('://')[0]!r}; "
        "use memory://, redis:// or rediss://"
    )
