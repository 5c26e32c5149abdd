"""What the reliability tests share: how a socket was closed, and what a stopped service stored."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.ws.audio_client import Frame, Listener

WAIT = 20.0
LONG_CALL = "+15550100011"  # answered, an hour long, and the simulator streams speech into it
RECONNECT = "service restarting; reconnect"


async def close_of(connection: ClientConnection) -> tuple[int | None, str | None]:
    """Read (and drop) whatever still comes until the server closes; its code and reason."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(connection.recv(), WAIT)
    return connection.close_code, connection.close_reason


async def stream_format(listener: Listener, not_stream: str | None = None) -> dict[str, Any]:
    """The next `format` that announces a live stream (other than `not_stream`)."""
    while True:
        message = await listener.message("format")
        if message["codec"] is not None and message["stream_id"] != not_stream:
            return message


async def frames_after(listener: Listener, start: int, count: int) -> list[Frame]:
    """`count` inbound frames received after the first `start` frames."""
    while len([f for f in listener.frames[start:] if f.track == 0]) < count:
        await listener.next()
    return [f for f in listener.frames[start:] if f.track == 0]


def sqlite_events(database: Path, call_id: str | None = None) -> list[dict[str, Any]]:
    """The event log a stopped service left in its SQLite file, read directly."""
    connection = sqlite3.connect(database)
    try:
        query = "SELECT seq, event_id, call_control_id, type, payload FROM events"
        rows = connection.execute(query + " ORDER BY seq").fetchall()
    finally:
        connection.close()
    events = [
        {"seq": seq, "event_id": event_id, "call_control_id": cid, "type": kind}
        | {"payload": orjson.loads(payload)}
        for seq, event_id, cid, kind, payload in rows
    ]
    return [e for e in events if call_id is None or e["call_control_id"] == call_id]
