"""The hub routes events and audio frames between producers and the
connections that want them: in-process by default, Redis for several instances."""

from callbridge.hub.base import EventSubscription, Hub, open_hub
from callbridge.hub.live import (
    AudioItem,
    LiveQueue,
    StreamNotice,
    TalkAudio,
    TalkControl,
    TalkItem,
)
from callbridge.hub.memory import MemoryHub

__all__ = [
    "AudioItem",
    "EventSubscription",
    "Hub",
    "LiveQueue",
    "MemoryHub",
    "StreamNotice",
    "TalkAudio",
    "TalkControl",
    "TalkItem",
    "open_hub",
]
