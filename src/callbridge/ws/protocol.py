"""The WebSocket protocol uvicorn runs for us: its sans-I/O one, with refused handshakes answered.

websockets refuses some upgrade requests itself, before any route sees them: a request line
over 8 KiB (414, e.g. a huge query string), header lines too long or too many (431), bytes that
are not HTTP at all. It writes the answer into its output buffer; uvicorn 0.54 only flushes
that buffer for requests it parsed, so the answer was never sent and the connection stayed
open: the client hung until its own timeout, holding a socket of ours. Here the answer goes
out and the connection is closed, as for any other refused handshake.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["WebSocketProtocol"]


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
