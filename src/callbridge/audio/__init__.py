"""Pure-Python audio for live calls (Telnyx media streaming), no I/O.

Media frames arrive as PCMU/PCMA (G.711) or L16, possibly out of order: ``reorder`` puts them
back in sequence order with bounded latency and ``frames`` packs them, payload untouched, into
the binary frame browsers receive. Talk-back goes the other way: ``resample`` and ``talk`` turn
browser PCM into exact 20 ms frames of the call's codec, with ``g711`` doing the encoding.
Nothing here needs ``audioop`` or numpy.
"""

from __future__ import annotations

from callbridge.audio.frames import CodecInfo, Track, UnsupportedCodec, codec_info, pack_audio
from callbridge.audio.g711 import (
    alaw_decode,
    alaw_encode,
    l16_be_to_le,
    l16_le_to_be,
    ulaw_decode,
    ulaw_encode,
)
from callbridge.audio.reorder import ReorderBuffer
from callbridge.audio.resample import resampler
from callbridge.audio.talk import TalkEncoder

__all__ = [
    "CodecInfo",
    "ReorderBuffer",
    "TalkEncoder",
    "Track",
    "UnsupportedCodec",
    "alaw_decode",
    "alaw_encode",
    "codec_info",
    "l16_be_to_le",
    "l16_le_to_be",
    "pack_audio",
    "resampler",
    "ulaw_decode",
    "ulaw_encode",
]
