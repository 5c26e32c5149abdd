"""Baseline: the contract on the bare `websockets` library (asyncio, uvloop, orjson)."""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import unquote

import orjson
import uvloop
from bench.relays.common import END, FORMAT, call_of_query, frame_of
from websockets.asyncio.server import ServerConnection, serve

listeners: dict[str, set[ServerConnection]] = {}


async def handler(connection: ServerConnection) -> None:
    assert connection.request is not None
    path = connection.request.path
    if path.startswith("/frontend-audio"):
        call = unquote(call_of_query(path))
        listeners.setdefault(call, set()).add(connection)
        try:
            await connection.send(FORMAT.decode())
            await connection.wait_closed()
        finally:
            listeners[call].discard(connection)
        return
    call = ""
    async for raw in connection:
        message = orjson.loads(raw)
        event = message.get("event")
        if event == "media":
            frame = frame_of(message)
            for listener in listeners.get(call, ()):
                await listener.send(frame)
        elif event == "start":
            call = message["start"]["call_control_id"]
        elif event == "stop":
            for listener in list(listeners.get(call, ())):
                await listener.send(END.decode())
                await listener.close()
            return


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, ping_interval=None, compression=None):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
