"""The hub routes events (and, with the media issue, audio frames) between producers and the
connections that want them: in-process by default, Redis for several instances."""

from callbridge.hub.base import EventSubscription, Hub, open_hub
from callbridge.hub.memory import MemoryHub

__all__ = ["EventSubscription", "Hub", "MemoryHub", "open_hub"]
