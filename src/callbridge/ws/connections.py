"""Every WebSocket open on this instance, so that a drain can close each with a reason.

uvicorn's own shutdown closes the WebSockets left open with 1012 and no reason, and drops the
connection at once. Before that, a drain closes browser sockets itself, with 1012 and a reason
that tells the client to reconnect (it reaches another instance: this one no longer accepts),
and hands the carrier's media streams over (ws/handover.py). An ASGI middleware sees every
WebSocket of the application: what it accepted, what it closed, and the `send` to close it with.
While draining, a WebSocket that still arrives (on a connection kept alive from before) is
accepted and closed at once with 1012.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callbridge.ws.close_codes import CloseCode

if TYPE_CHECKING:
    from callbridge.ws.audio_stream import CarrierStream

__all__ = ["RECONNECT_REASON", "Connections", "TrackWebSockets"]

RECONNECT_REASON = "service restarting; reconnect"


class _Socket:
    """One accepted WebSocket: how to close it from outside its handler."""

    __slots__ = ("closed", "send")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.closed = False


class Connections:
    """The browser sockets and carrier streams of this instance."""

    def __init__(self) -> None:
        self.draining = False
        self._browsers: dict[int, _Socket] = {}
        self.streams: set[CarrierStream] = set()  # carrier streams that said `start`

    @property
    def browsers(self) -> int:
        return len(self._browsers)

    async def close_browsers(self, code: CloseCode, reason: str) -> int:
        """Close every browser socket with `code` and `reason`; how many were open.

        The handler learns of it from its next receive (the server queues a disconnect) and
        ends as if the browser had left; what it still sends is dropped."""
        closing = [socket for socket in self._browsers.values() if not socket.closed]
        for socket in closing:
            socket.closed = True
            with contextlib.suppress(Exception):  # the browser may be gone already
                await socket.send({"type": "websocket.close", "code": int(code), "reason": reason})
        return len(closing)


class TrackWebSockets:
    """The ASGI middleware that keeps `Connections` up to date (outermost, around everything)."""

    def __init__(self, app: ASGIApp, connections: Connections, carrier_path: str) -> None:
        self.app = app
        self.connections = connections
        self.carrier_path = carrier_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        connections = self.connections
        if connections.draining:
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send(
                {
                    "type": "websocket.close",
                    "code": int(CloseCode.SERVICE_RESTART),
                    "reason": RECONNECT_REASON,
                }
            )
            return
        socket = _Socket(send)
        key = id(socket)
        browser = not str(scope.get("path", "")).rstrip("/").endswith(self.carrier_path)

        async def tracked(message: Message) -> None:
            kind = message["type"]
            if socket.closed:
                if kind in ("websocket.send", "websocket.close"):
                    return  # a drain closed it; the handler finds out from receive
            elif kind == "websocket.accept" and browser:
                connections._browsers[key] = socket
            elif kind == "websocket.close":
                socket.closed = True
                connections._browsers.pop(key, None)
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            connections._browsers.pop(key, None)
