"""Live channels: the lossy half of the hub, for audio to listeners and talk-back to calls.

Audio is live: a listener that falls behind should hear *now*, not a growing backlog. So every
subscriber owns a bounded queue that drops its oldest audio when full, counts the drop, and never
makes the publisher wait. Control messages (a new stream format, the end of a stream, a talk
command) are few and must not vanish, so they are never the ones dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import orjson

__all__ = [
    "AudioItem",
    "LiveQueue",
    "StreamNotice",
    "TalkAudio",
    "TalkControl",
    "TalkItem",
]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class StreamNotice:
    """A control message for a call's listeners, sent between its audio frames as JSON.

    `type` is one of `format` (a stream started: codec and layout of what follows),
    `stream.stopped` (a stream ended, with why), `call.ended`, `mark` (a talk-back mark played).
    """

    type: str
    data: dict[str, Any]

    def to_json(self) -> str:
        return orjson.dumps({"type": self.type, **self.data}).decode()


AudioItem = bytes | StreamNotice
"""What a call's listeners receive: packed binary frames (see audio/frames.py) or notices."""


@dataclasses.dataclass(frozen=True, slots=True)
class TalkAudio:
    """Microphone audio for a call, as signed 16-bit little-endian PCM at `sample_rate`."""

    pcm16le: bytes
    sample_rate: int


@dataclasses.dataclass(frozen=True, slots=True)
class TalkControl:
    """`start` (a talk spurt at `sample_rate`), `stop` (send what is buffered), `clear`
    (drop what the carrier has queued) or `mark` (tell me when the audio so far has played)."""

    action: str
    sample_rate: int | None = None
    name: str | None = None


TalkItem = TalkAudio | TalkControl


def _droppable(item: object) -> bool:
    return isinstance(item, bytes | TalkAudio)


class LiveQueue(Generic[T]):
    """A bounded queue that drops its oldest *audio* when full; the publisher never waits."""

    __slots__ = ("_items", "_on_drop", "_waiter", "dropped", "maxsize")

    def __init__(self, maxsize: int, on_drop: Callable[[], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("a live queue holds at least one item")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: deque[T] = deque()
        self._on_drop = on_drop
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: T) -> None:
        items = self._items
        if len(items) >= self.maxsize:
            self._drop_oldest_audio()
        items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _drop_oldest_audio(self) -> None:
        for index, old in enumerate(self._items):
            if _droppable(old):
                del self._items[index]
                self.dropped += 1
                if self._on_drop is not None:
                    self._on_drop()
                return
        # Only control messages are queued: keep them all; there are never many.

    async def get(self) -> T:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._items.popleft()
