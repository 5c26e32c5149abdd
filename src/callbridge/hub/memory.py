"""The in-process hub: one service process, no broker."""

from __future__ import annotations

from callbridge.calls.events import StoredEvent
from callbridge.hub.base import EventSubscription

__all__ = ["MemoryHub"]


class MemoryHub:
    """Fan-out inside one process; `publish_event` never blocks on a subscriber."""

    def __init__(self) -> None:
        self._event_subscriptions: set[EventSubscription] = set()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._event_subscriptions.clear()

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
