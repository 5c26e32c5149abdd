"""The one audio WebSocket handler behind `/audio-stream` and `/frontend-audio`.

The old runbook served both paths with one handler and chose the role by path; we keep that
(and its log lines), so an operator reading logs sees the same story for both sockets.
"""

from __future__ import annotations

from starlette.websockets import WebSocket

from callbridge.logs import get_logger
from callbridge.runtime import runtime_of
from callbridge.ws.audio_stream import CarrierStream
from callbridge.ws.frontend_audio import FrontendListener

__all__ = ["CARRIER_PATH", "FRONTEND_PATH", "audio_endpoint"]

log = get_logger(__name__)
CARRIER_PATH = "/audio-stream"
FRONTEND_PATH = "/frontend-audio"


async def audio_endpoint(websocket: WebSocket) -> None:
    path = websocket.url.path
    log.info("WebSocket upgrade request", path=path)
    log.info(f"Upgrading to audio-stream WebSocket (path: {path})")
    runtime = runtime_of(websocket)
    if path.rstrip("/").endswith(FRONTEND_PATH):
        await FrontendListener(websocket, runtime).run()
    else:
        await CarrierStream(websocket, runtime).run()
