"""The binary audio frame browsers receive on `/frontend-audio`, and the codecs it may carry.

One WebSocket binary message per carrier media frame, no base64 and no JSON:

    u8 kind (1 = audio) | u8 track (0 = inbound, 1 = outbound) | u16 reserved (0) |
    u32 chunk | u32 timestamp | payload

Integers are big-endian. `chunk` and `timestamp` are the carrier's `media.chunk` and
`media.timestamp` carried through verbatim (mod 2**32), so a client can reorder, detect loss
and measure latency without asking us. The payload is the carrier's codec bytes unchanged:
transcoding belongs in the browser, not on the server's hot path. Benchmarks and third-party
clients depend on this layout; it only ever grows new `kind` values.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import Any

__all__ = [
    "FRAME_HEADER",
    "KIND_AUDIO",
    "CodecInfo",
    "Track",
    "UnsupportedCodec",
    "codec_info",
    "pack_audio",
    "unpack_frame",
]

FRAME_HEADER = struct.Struct(">BBHII")
KIND_AUDIO = 1
_U32 = 0xFFFFFFFF


class Track(enum.IntEnum):
    """Which side of the call a frame carries, numbered as in the frame header."""

    INBOUND = 0  # what the carrier hears from the far party
    OUTBOUND = 1  # what the carrier sends to the far party (e.g. our talk-back)


def pack_audio(track: int, chunk: int, timestamp: int, payload: bytes) -> bytes:
    """One browser frame; chunk and timestamp wrap modulo 2**32 as documented."""
    return FRAME_HEADER.pack(KIND_AUDIO, track, 0, chunk & _U32, timestamp & _U32) + payload


def unpack_frame(frame: bytes) -> tuple[int, int, int, int, bytes]:
    """(kind, track, chunk, timestamp, payload) of a browser frame; for clients and tests."""
    if len(frame) < FRAME_HEADER.size:
        raise ValueError(f"a frame has at least {FRAME_HEADER.size} bytes, got {len(frame)}")
    kind, track, _reserved, chunk, timestamp = FRAME_HEADER.unpack_from(frame)
    return kind, track, chunk, timestamp, frame[FRAME_HEADER.size :]


class UnsupportedCodec(ValueError):
    """The carrier streams a codec callbridge cannot hand to browsers; the message says what to
    ask for instead."""


@dataclasses.dataclass(frozen=True, slots=True)
class CodecInfo:
    """What a client needs to decode the payloads of a stream."""

    encoding: str  # PCMU, PCMA or L16, as Telnyx names them
    sample_rate: int
    channels: int
    bytes_per_sample: int
    byte_order: str | None  # "big" for L16 (network order); None for 8-bit G.711

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SUPPORTED = ("PCMU", "PCMA", "L16")


def codec_info(encoding: str, sample_rate: int | None, channels: int | None) -> CodecInfo:
    """Validate a carrier `media_format`; G722, OPUS and AMR-WB are refused, never garbled.

    Those need a decoder the browser client does not have (and would cost CPU per frame on the
    server); Telnyx transcodes to any of the supported codecs when `stream_codec` asks for it.
    """
    name = encoding.upper()
    channels = channels or 1
    if name not in _SUPPORTED:
        raise UnsupportedCodec(
            f"media encoding {encoding!r} is not supported; stream PCMU, PCMA or L16 "
            "(set stream_codec when dialing or answering)"
        )
    if channels != 1:
        raise UnsupportedCodec(f"{channels} channels; only mono streams are supported")
    if name in ("PCMU", "PCMA"):
        rate = sample_rate or 8000
        if rate != 8000:
            raise UnsupportedCodec(f"{name} at {rate} Hz; G.711 is 8000 Hz")
        return CodecInfo(name, 8000, 1, 1, None)
    rate = sample_rate or 16000
    if rate not in (8000, 16000):
        raise UnsupportedCodec(f"L16 at {rate} Hz; supported rates are 8000 and 16000 Hz")
    return CodecInfo("L16", rate, 1, 2, "big")
