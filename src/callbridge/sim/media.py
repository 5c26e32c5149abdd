"""Telnyx's side of a media-streaming WebSocket, as a network client.

The simulator uses it to stream a call's audio to the `stream_url` it was given; tests and the
load generator use it to play Telnyx exactly, down to string-typed `sequence_number`, `chunk`
and `timestamp`, a top-level `stream_id`, and the auth token in the handshake header.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from websockets.asyncio.client import ClientConnection, connect

from callbridge.carrier.telnyx.media import AUTH_HEADER

__all__ = ["TelnyxMediaStream"]

AuthVia = Literal["header", "query", "connected", "none"]


class TelnyxMediaStream:
    """One media socket: `connected`, `start`, then `media`/`dtmf`/`mark`/`stop` frames.

    Every message built here takes the next `sequence_number`; per track, `chunk` counts frames
    and `timestamp` counts milliseconds of audio, unless the caller passes its own values.
    """

    def __init__(
        self,
        connection: ClientConnection,
        *,
        call_control_id: str,
        token: str | None,
        encoding: str = "PCMU",
        sample_rate: int = 8000,
        stream_id: str | None = None,
    ) -> None:
        self.connection = connection
        self.call_control_id = call_control_id
        self.token = token
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.stream_id = stream_id or str(uuid.uuid4())
        self.seq = 0
        self.chunks = {"inbound": 0, "outbound": 0}
        self.millis = {"inbound": 0, "outbound": 0}

    @classmethod
    async def open(
        cls,
        stream_url: str,
        *,
        call_control_id: str,
        token: str | None,
        auth_via: AuthVia = "header",
        encoding: str = "PCMU",
        sample_rate: int = 8000,
        open_timeout: float = 10.0,
    ) -> TelnyxMediaStream:
        headers = {AUTH_HEADER: token} if token and auth_via == "header" else {}
        url = f"{stream_url}?token={token}" if token and auth_via == "query" else stream_url
        connection = await connect(
            url, additional_headers=headers, open_timeout=open_timeout, max_size=2**20
        )
        stream = cls(
            connection,
            call_control_id=call_control_id,
            token=token if auth_via == "connected" else None,
            encoding=encoding,
            sample_rate=sample_rate,
        )
        return stream

    def _next_seq(self) -> str:
        self.seq += 1
        return str(self.seq)

    # --- messages --------------------------------------------------------------------------

    def connected_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"event": "connected", "version": "1.0.0"}
        if self.token:
            message[AUTH_HEADER] = self.token
        return message

    def start_message(self, **start: Any) -> dict[str, Any]:
        return {
            "event": "start",
            "sequence_number": self._next_seq(),
            "stream_id": self.stream_id,
            "start": {
                "user_id": "3e6f995f-85f7-4705-9741-53b116d28237",
                "call_control_id": self.call_control_id,
                "call_session_id": str(uuid.uuid4()),
                "from": "+15550101111",
                "to": "+15550102222",
                "tags": [],
                "client_state": None,
                "custom_parameters": {},
                "media_format": {
                    "encoding": self.encoding,
                    "sample_rate": self.sample_rate,
                    "channels": 1,
                },
                **start,
            },
        }

    def media_message(
        self,
        payload: bytes,
        track: str = "inbound",
        *,
        chunk: int | None = None,
        timestamp: int | None = None,
    ) -> dict[str, Any]:
        """The next frame of `track`; its chunk and timestamp advance unless given."""
        if chunk is None:
            self.chunks[track] += 1
            chunk = self.chunks[track]
        if timestamp is None:
            timestamp = self.millis[track]
            bytes_per_ms = self.sample_rate // 1000 * (2 if self.encoding == "L16" else 1)
            self.millis[track] += len(payload) // max(bytes_per_ms, 1)
        return {
            "event": "media",
            "sequence_number": self._next_seq(),
            "stream_id": self.stream_id,
            "media": {
                "track": track,
                "chunk": str(chunk),
                "timestamp": str(timestamp),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
        }

    def dtmf_message(self, digit: str, occurred_at: str | None = None) -> dict[str, Any]:
        return {
            "event": "dtmf",
            "stream_id": self.stream_id,
            "occurred_at": occurred_at
            or datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "sequence_number": self._next_seq(),
            "dtmf": {"digit": digit},
        }

    def mark_message(self, name: str) -> dict[str, Any]:
        return {
            "event": "mark",
            "stream_id": self.stream_id,
            "sequence_number": self._next_seq(),
            "mark": {"name": name},
        }

    def stop_message(self) -> dict[str, Any]:
        return {
            "event": "stop",
            "sequence_number": self._next_seq(),
            "stop": {"user_id": "3e6f995f", "call_control_id": self.call_control_id},
            "stream_id": self.stream_id,
        }

    @staticmethod
    def error_message(code: int, title: str, detail: str) -> dict[str, Any]:
        return {"event": "error", "payload": {"code": code, "title": title, "detail": detail}}

    # --- I/O ---------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            await self.connection.send(orjson.dumps(message).decode())
        else:
            await self.connection.send(message)

    async def begin(self, **start: Any) -> None:
        """`connected` then `start`, as Telnyx opens every stream."""
        await self.send(self.connected_message())
        await self.send(self.start_message(**start))

    async def media(self, payload: bytes, track: str = "inbound") -> None:
        await self.send(self.media_message(payload, track))

    async def stop(self) -> None:
        await self.send(self.stop_message())

    async def receive(self) -> dict[str, Any]:
        """The next message the service sent us (talk-back `media`, `clear`, `mark`)."""
        raw = await self.connection.recv()
        message: dict[str, Any] = orjson.loads(raw)
        return message

    async def close(self) -> None:
        await self.connection.close()
