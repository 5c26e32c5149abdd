"""The JSON messages of `/frontend-audio` that describe what the binary frames carry.

Built in one place because two parties send them: the listener's own handler when it joins
(from the stored call), and the carrier stream handler when a stream starts (via the hub).
"""

from __future__ import annotations

from typing import Any

from callbridge.audio.frames import FRAME_HEADER, KIND_AUDIO, codec_info
from callbridge.calls.model import Call, StreamState
from callbridge.hub.live import StreamNotice

__all__ = ["FRAME_LAYOUT", "TALK_INPUTS", "format_notice"]

FRAME_LAYOUT: dict[str, Any] = {
    "layout": "u8 kind | u8 track | u16 reserved | u32 chunk | u32 timestamp | payload",
    "byte_order": "big",
    "header_bytes": FRAME_HEADER.size,
    "kinds": {"audio": KIND_AUDIO},
    "tracks": ["inbound", "outbound"],
}
TALK_INPUTS = ("pcm16", "PCMU", "PCMA")
TALK_RATES = (8000, 16000)


def format_notice(call: Call) -> StreamNotice:
    """What a listener of `call` hears from now on: codec, layout, tracks, talk-back."""
    codec: dict[str, Any] | None = None
    live = call.stream is StreamState.ACTIVE and call.stream_encoding is not None
    if live and call.stream_encoding is not None:
        codec = codec_info(call.stream_encoding, call.stream_sample_rate, 1).describe()
    talk: dict[str, Any] | None = None
    if call.talk_codec is not None:
        talk = {
            "codec": call.talk_codec,
            "accepts": {"encodings": list(TALK_INPUTS), "sample_rates": list(TALK_RATES)},
        }
    return StreamNotice(
        "format",
        {
            "call_control_id": call.call_control_id,
            "call_state": call.state.value,
            "stream": call.stream.value,
            "stream_id": call.stream_id if live else None,
            "codec": codec,
            "frame": FRAME_LAYOUT,
            "talk": talk,
        },
    )
