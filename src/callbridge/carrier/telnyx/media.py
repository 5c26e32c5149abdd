"""Telnyx media-streaming messages: parse what Telnyx sends, build what we send back.

The wire format (telnyx-protocol §3): JSON text frames; `sequence_number`, `media.chunk` and
`media.timestamp` are decimal *strings*; `stream_id` sits at the top level; `start` carries
`media_format`; `payload` is base64 of raw codec bytes (no RTP header). Every frame goes
through `parse_message`, which either returns one typed message or raises `MalformedFrame`
with a stable `kind` for metrics and a human `detail` for the log. This is the per-frame hot
path, so it reads dicts directly instead of building validation models.
"""

from __future__ import annotations

import binascii
import dataclasses
from typing import Any

import orjson

__all__ = [
    "AUTH_HEADER",
    "Connected",
    "Dtmf",
    "MalformedFrame",
    "Mark",
    "MediaFrame",
    "Start",
    "Stop",
    "StreamError",
    "StreamMessage",
    "clear_json",
    "decode_message",
    "mark_json",
    "media_json",
    "media_parts",
    "parse_message",
    "parse_object",
]

AUTH_HEADER = "x-telnyx-streaming-auth-token"
_TRACKS = {"inbound": 0, "outbound": 1, "inbound_track": 0, "outbound_track": 1}


class MalformedFrame(ValueError):
    """A frame that is not a valid Telnyx media-stream message; it is dropped and counted."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclasses.dataclass(frozen=True, slots=True)
class Connected:
    token: str | None
    version: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Start:
    seq: int | None
    stream_id: str
    call_control_id: str
    call_session_id: str | None
    encoding: str
    sample_rate: int | None
    channels: int | None
    client_state: str | None
    custom_parameters: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class MediaFrame:
    seq: int | None
    track: int  # 0 inbound, 1 outbound (the browser frame's numbering)
    chunk: int
    timestamp: int
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Stop:
    seq: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class Dtmf:
    seq: int | None
    digit: str
    occurred_at: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Mark:
    seq: int | None
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class StreamError:
    code: int | None
    title: str
    detail: str


StreamMessage = Connected | Start | MediaFrame | Stop | Dtmf | Mark | StreamError


# Numbers stay below 10**19, so that they and the counters made from them (gaps) fit the
# unsigned 64 bits JSON encoders and databases take; Telnyx's are far smaller.
_MAX_DIGITS = 19
# Ids and names longer than this come from no real Telnyx (a stream_id is a UUID).
_MAX_TEXT = 256
_MAX_STREAM_ID = 128


def _int(value: Any, field: str) -> int:
    """Telnyx sends numbers as decimal strings; accept real integers too, nothing else.

    ASCII digits only: `str.isdigit` also takes "²" and "١", which `int` refuses or reads."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        if len(value) <= _MAX_DIGITS:
            return int(value)
    elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**_MAX_DIGITS:
        return value
    raise MalformedFrame(
        "bad_number", f"{field} must be a non-negative decimal string of at most 19 digits"
    )


def _seq(message: dict[str, Any]) -> int | None:
    value = message.get("sequence_number")
    return None if value is None else _int(value, "sequence_number")


def _object(message: dict[str, Any], field: str) -> dict[str, Any]:
    value = message.get(field)
    if not isinstance(value, dict):
        raise MalformedFrame("missing_field", f"{field} must be an object")
    return value


def _text(container: dict[str, Any], field: str, limit: int = _MAX_TEXT) -> str:
    value = container.get(field)
    if not isinstance(value, str) or not value:
        raise MalformedFrame("missing_field", f"{field} must be a non-empty string")
    if len(value) > limit or "\x00" in value:
        raise MalformedFrame("bad_field", f"{field} is longer than {limit} characters or has NUL")
    return value


def media_parts(message: dict[str, Any]) -> tuple[int | None, int, int, int, bytes]:
    """(seq, track, chunk, timestamp, payload) of a `media` message: the relay's hot path
    takes these without building a MediaFrame. Numbers as Telnyx sends them (short ASCII
    digit strings) are read inline; anything else goes through `_int`, which says what is
    wrong."""
    media = message.get("media")
    if type(media) is not dict:
        raise MalformedFrame("missing_field", "media must be an object")
    name = media.get("track", "inbound")
    track = _TRACKS.get(name) if type(name) is str else None
    if track is None:
        raise MalformedFrame("bad_track", "media.track must be inbound or outbound")
    payload = media.get("payload")
    if type(payload) is not str:
        raise MalformedFrame("missing_field", "media.payload must be a base64 string")
    try:
        raw = binascii.a2b_base64(payload, strict_mode=True)
    except binascii.Error as exc:
        raise MalformedFrame("bad_base64", f"media.payload is not base64: {exc}") from None
    seq = message.get("sequence_number")
    chunk = media.get("chunk", "0")
    timestamp = media.get("timestamp", "0")
    return (
        None
        if seq is None
        else int(seq)
        if type(seq) is str and len(seq) <= _MAX_DIGITS and seq.isdigit() and seq.isascii()
        else _int(seq, "sequence_number"),
        track,
        int(chunk)
        if type(chunk) is str and len(chunk) <= _MAX_DIGITS and chunk.isdigit() and chunk.isascii()
        else _int(chunk, "media.chunk"),
        int(timestamp)
        if type(timestamp) is str
        and len(timestamp) <= _MAX_DIGITS
        and timestamp.isdigit()
        and timestamp.isascii()
        else _int(timestamp, "media.timestamp"),
        raw,
    )


def _media(message: dict[str, Any]) -> MediaFrame:
    return MediaFrame(*media_parts(message))


def _start(message: dict[str, Any]) -> Start:
    start = _object(message, "start")
    media_format = start.get("media_format") or {}
    if not isinstance(media_format, dict):
        raise MalformedFrame("missing_field", "start.media_format must be an object")
    encoding = media_format.get("encoding")
    rate = media_format.get("sample_rate")
    channels = media_format.get("channels")
    if not isinstance(encoding, str) or not encoding:
        raise MalformedFrame("missing_field", "start.media_format.encoding is missing")
    if rate is not None and not isinstance(rate, int):
        raise MalformedFrame("bad_number", "start.media_format.sample_rate must be an integer")
    if channels is not None and not isinstance(channels, int):
        raise MalformedFrame("bad_number", "start.media_format.channels must be an integer")
    custom = start.get("custom_parameters")
    return Start(
        seq=_seq(message),
        stream_id=_text(message, "stream_id", _MAX_STREAM_ID),
        call_control_id=_text(start, "call_control_id"),
        call_session_id=start.get("call_session_id"),
        encoding=encoding,
        sample_rate=rate,
        channels=channels,
        client_state=start.get("client_state"),
        custom_parameters=custom if isinstance(custom, dict) else {},
    )


def _dtmf(message: dict[str, Any]) -> Dtmf:
    dtmf = _object(message, "dtmf")
    occurred = message.get("occurred_at")
    return Dtmf(
        _seq(message), _text(dtmf, "digit"), occurred if isinstance(occurred, str) else None
    )


def _error(message: dict[str, Any]) -> StreamError:
    payload = message.get("payload")
    if not isinstance(payload, dict):
        payload = {}
    code = payload.get("code")
    return StreamError(
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        str(payload.get("title") or "unknown_error"),
        str(payload.get("detail") or ""),
    )


def decode_message(data: str | bytes | memoryview) -> dict[str, Any]:
    """The JSON object of one media-stream message (MalformedFrame if it is not one)."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedFrame("bad_json", "frame is not valid JSON (UTF-8)") from None
    if type(message) is not dict:
        raise MalformedFrame("bad_json", "frame is not a JSON object")
    return message


def parse_message(text: str | bytes | memoryview) -> StreamMessage:
    """One Telnyx media-stream message, or MalformedFrame saying what is wrong with it."""
    return parse_object(decode_message(text))


def parse_object(message: dict[str, Any]) -> StreamMessage:
    """The message a decoded JSON object is (see parse_message)."""
    event = message.get("event")
    if event == "media":
        return _media(message)
    if event == "start":
        return _start(message)
    if event == "stop":
        return Stop(_seq(message))
    if event == "dtmf":
        return _dtmf(message)
    if event == "mark":
        return Mark(_seq(message), _text(_object(message, "mark"), "name"))
    if event == "connected":
        token = message.get("x-telnyx-streaming-auth-token")
        version = message.get("version")
        return Connected(
            token if isinstance(token, str) else None,
            version if isinstance(version, str) else None,
        )
    if event == "error":
        return _error(message)
    raise MalformedFrame("unknown_event", f"unknown event {str(event)[:40]!r}")


def media_json(payload: bytes) -> str:
    """Audio back into the call (bidirectional `rtp` mode): raw codec bytes, no stream_id."""
    return (
        '{"event":"media","media":{"payload":"'
        + binascii.b2a_base64(payload, newline=False).decode("ascii")
        + '"}}'
    )


def clear_json() -> str:
    return '{"event":"clear"}'


def mark_json(name: str) -> str:
    return orjson.dumps({"event": "mark", "mark": {"name": name}}).decode()
