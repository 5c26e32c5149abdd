"""Baseline: the contract on `picows` (callbacks, no coroutine per message), uvloop, orjson."""

from __future__ import annotations

import sys
from urllib.parse import unquote

import orjson
import uvloop
from bench.relays.common import END, FORMAT, call_of_query, frame_of
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

listeners: dict[str, set[WSTransport]] = {}


class Listener(WSListener):
    def __init__(self, call: str) -> None:
        self.call = call

    def on_ws_connected(self, transport: WSTransport) -> None:
        listeners.setdefault(self.call, set()).add(transport)
        transport.send(WSMsgType.TEXT, FORMAT)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        listeners.get(self.call, set()).discard(transport)


class Carrier(WSListener):
    def __init__(self) -> None:
        self.call = ""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            if frame.msg_type is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        message = orjson.loads(frame.get_payload_as_bytes())
        event = message.get("event")
        if event == "media":
            data = frame_of(message)
            for listener in listeners.get(self.call, ()):
                listener.send(WSMsgType.BINARY, data)
        elif event == "start":
            self.call = message["start"]["call_control_id"]
        elif event == "stop":
            for listener in list(listeners.get(self.call, ())):
                listener.send(WSMsgType.TEXT, END)
                listener.send_close()
                listener.disconnect()


def factory(request: WSUpgradeRequest) -> WSListener:
    path = request.path.decode()
    if path.startswith("/frontend-audio"):
        return Listener(unquote(call_of_query(path)))
    return Carrier()


async def main(port: int) -> None:
    server = await ws_create_server(factory, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
