"""What every baseline relay does per message, written once: the contract, nothing more.

Carrier side: Telnyx's JSON (`start` names the call, `media` carries base64 PCMU with string
`chunk` and `timestamp`, `stop` ends it). Listener side: a `format` message, then the 12-byte
binary frame (kind, track, reserved, chunk, timestamp) + the payload, then `end` on stop.
"""

from __future__ import annotations

import binascii
import struct
from typing import Any

import orjson

HEADER = struct.Struct(">BBHII")
TRACKS = {"inbound": 0, "outbound": 1}
FORMAT = orjson.dumps(
    {"type": "format", "codec": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}
)
END = orjson.dumps({"type": "end", "reason": "stream_stopped", "dropped": 0})


def call_of_query(path: str) -> str:
    """The call_control_id of `/frontend-audio?call_control_id=…`."""
    _, _, query = path.partition("?")
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == "call_control_id":
            return value
    return ""


def frame_of(message: dict[str, Any]) -> bytes:
    media = message["media"]
    payload = binascii.a2b_base64(media["payload"])
    header = HEADER.pack(
        1,
        TRACKS.get(media.get("track", "inbound"), 0),
        0,
        int(media["chunk"]) & 0xFFFFFFFF,
        int(media["timestamp"]) & 0xFFFFFFFF,
    )
    return header + payload
