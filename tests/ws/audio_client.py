"""Test clients for live audio: a browser listener, and a dialled call with its stream token."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from callbridge.audio.frames import unpack_frame
from callbridge.sim.media import AuthVia, TelnyxMediaStream
from tests.conftest import ServiceProcess
from tests.helpers import FULL_TOKEN, Token, with_token

WAIT = 15.0
OPENED: list[ClientConnection] = []  # closed by `close_all` after each test
NO_MEDIA = "+15550100012"  # an hour-long call whose media side the test plays itself


def dial(api: httpx.Client, sim: httpx.Client, to: str = NO_MEDIA) -> tuple[str, str]:
    """Place a call through the service; (call_control_id, the stream token Telnyx was given)."""
    response = api.post("/api/calls", json={"to": to})
    assert response.status_code == 201, response.text
    call_id = response.json()["data"]["call_control_id"]
    requests = sim.get("/_sim/requests").json()
    body = next(
        r["body"]
        for r in reversed(requests)
        if r["path"] == "/v2/calls" and r["body"].get("to") == to
    )
    return call_id, body["stream_auth_token"]


async def open_stream(
    service: ServiceProcess,
    call_id: str,
    token: str | None,
    *,
    encoding: str = "PCMU",
    sample_rate: int = 8000,
    auth_via: AuthVia = "header",
) -> TelnyxMediaStream:
    stream = await TelnyxMediaStream.open(
        f"{service.ws_url}/audio-stream",
        call_control_id=call_id,
        token=token,
        auth_via=auth_via,
        encoding=encoding,
        sample_rate=sample_rate,
    )
    OPENED.append(stream.connection)
    return stream


class Frame:
    __slots__ = ("chunk", "kind", "payload", "timestamp", "track")

    def __init__(self, raw: bytes) -> None:
        self.kind, self.track, self.chunk, self.timestamp, self.payload = unpack_frame(raw)


class Listener:
    """A browser on /frontend-audio: JSON messages and binary frames, kept apart."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.frames: list[Frame] = []
        self.messages: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, service: ServiceProcess, query: str, token: Token = FULL_TOKEN) -> Listener:
        """Connect with `token` (default: a full-rights one; None: no token at all)."""
        url = f"{service.ws_url}/frontend-audio{with_token(query, token)}"
        connection = await connect(url, open_timeout=WAIT)
        OPENED.append(connection)
        return cls(connection)

    async def next(self) -> Frame | dict[str, Any]:
        raw = await asyncio.wait_for(self.connection.recv(), WAIT)
        if isinstance(raw, bytes):
            frame = Frame(raw)
            self.frames.append(frame)
            return frame
        message: dict[str, Any] = orjson.loads(raw)
        self.messages.append(message)
        return message

    async def message(self, kind: str) -> dict[str, Any]:
        """Read until a JSON message of this type (frames on the way are kept)."""
        while True:
            item = await self.next()
            if isinstance(item, dict) and item.get("type") == kind:
                return item

    async def frames_until(self, count: int) -> list[Frame]:
        while len(self.frames) < count:
            await self.next()
        return self.frames

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.connection.send(orjson.dumps(message).decode())

    async def close(self) -> None:
        await self.connection.close()


async def close_all() -> None:
    while OPENED:
        await OPENED.pop().close()
