"""The in-process hub: one service process, no broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from callbridge.calls.events import StoredEvent
from callbridge.hub.base import EventSubscription
from callbridge.hub.live import AudioItem, LiveQueue, TalkItem

__all__ = ["MemoryHub"]

T = TypeVar("T")


def _remove(channels: dict[str, set[LiveQueue[T]]], key: str, queue: LiveQueue[T]) -> None:
    queues = channels.get(key)
    if queues is not None:
        queues.discard(queue)
        if not queues:
            del channels[key]


class MemoryHub:
    """Fan-out inside one process; no publish ever waits on a subscriber."""

    def __init__(self) -> None:
        self._event_subscriptions: set[EventSubscription] = set()
        self._audio: dict[str, set[LiveQueue[AudioItem]]] = {}
        self._talk: dict[str, set[LiveQueue[TalkItem]]] = {}
        self._talkers: dict[str, str] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._event_subscriptions.clear()
        self._audio.clear()
        self._talk.clear()
        self._talkers.clear()

    async def ping(self) -> None:
        return None

    async def publish_event(self, event: StoredEvent) -> None:
        for subscription in tuple(self._event_subscriptions):
            subscription.offer(event)

    def subscribe_events(self, maxsize: int) -> EventSubscription:
        subscription = EventSubscription(maxsize)
        self._event_subscriptions.add(subscription)
        return subscription

    def unsubscribe_events(self, subscription: EventSubscription) -> None:
        self._event_subscriptions.discard(subscription)

    def publish_audio(self, call_control_id: str, item: AudioItem) -> None:
        queues = self._audio.get(call_control_id)
        if queues:
            for queue in queues:
                queue.offer(item)

    def subscribe_audio(
        self,
        call_control_id: str,
        maxsize: int,
        on_drop: Callable[[], None] | None = None,
        queue: LiveQueue[AudioItem] | None = None,
    ) -> LiveQueue[AudioItem]:
        queue = queue if queue is not None else LiveQueue(maxsize, on_drop)
        self._audio.setdefault(call_control_id, set()).add(queue)
        return queue

    def unsubscribe_audio(self, call_control_id: str, queue: LiveQueue[AudioItem]) -> None:
        _remove(self._audio, call_control_id, queue)

    def publish_talk(self, call_control_id: str, item: TalkItem) -> None:
        for queue in self._talk.get(call_control_id, ()):
            queue.offer(item)

    def subscribe_talk(
        self, call_control_id: str, maxsize: int, on_drop: Callable[[], None] | None = None
    ) -> LiveQueue[TalkItem]:
        queue: LiveQueue[TalkItem] = LiveQueue(maxsize, on_drop)
        self._talk.setdefault(call_control_id, set()).add(queue)
        return queue

    def unsubscribe_talk(self, call_control_id: str, queue: LiveQueue[TalkItem]) -> None:
        _remove(self._talk, call_control_id, queue)

    async def subscribed(self, call_control_id: str) -> None:
        return None

    async def claim_talker(self, call_control_id: str, owner: str) -> bool:
        return self._talkers.setdefault(call_control_id, owner) == owner

    async def release_talker(self, call_control_id: str, owner: str) -> None:
        if self._talkers.get(call_control_id) == owner:
            del self._talkers[call_control_id]
