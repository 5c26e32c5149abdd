"""Pure-Python groundwork for live call audio (Telnyx media streaming).

Media frames arrive as PCMU/PCMA (G.711) or L16 over a WebSocket, possibly out of order;
``g711`` converts them to and from signed 16-bit little-endian PCM, and ``reorder`` puts them
back in sequence-number order with bounded latency. Nothing here needs ``audioop`` or numpy.
"""

from __future__ import annotations

from callbridge.audio.g711 import (
    alaw_decode,
    alaw_encode,
    l16_be_to_le,
    l16_le_to_be,
    ulaw_decode,
    ulaw_encode,
)
from callbridge.audio.reorder import ReorderBuffer

__all__ = [
    "ReorderBuffer",
    "alaw_decode",
    "alaw_encode",
    "l16_be_to_le",
    "l16_le_to_be",
    "ulaw_decode",
    "ulaw_encode",
]
