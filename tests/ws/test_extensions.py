"""No permessage-deflate on any socket: audio does not compress, and zlib state per socket
costs memory and CPU per frame (docs/benchmarks.md)."""

from __future__ import annotations

from websockets.asyncio.client import connect

from tests.conftest import ServiceProcess
from tests.helpers import with_token


async def test_compression_offered_by_the_client_is_declined(service: ServiceProcess) -> None:
    for path in ("/call-events", "/frontend-audio?call_control_id=v3:none"):
        async with connect(
            f"{service.ws_url}{with_token(path)}", compression="deflate", open_timeout=15
        ) as ws:
            assert ws.request is not None
            assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
