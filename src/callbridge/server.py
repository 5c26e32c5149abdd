"""uvicorn's server, with callbridge's drain between "stop accepting" and uvicorn's shutdown.

uvicorn 0.54 on SIGTERM: closes the listening sockets, calls `shutdown()` on every connection
(an idle HTTP connection closes, a busy one closes after its response; a WebSocket gets close
1012 without a reason and its TCP connection is dropped at once), waits up to
`timeout_graceful_shutdown` for the connections and their tasks, then runs the lifespan's
shutdown. Here, the same first step, then idle keep-alive connections are closed (a proxy
reusing one would bring this instance a new request, or a handed-over media stream, while it
leaves), then the application's drain runs (lifecycle.py: browsers closed with 1012 and a
reason, media streams handed over) while WebSockets are still open, and only then uvicorn's
own shutdown.

uvicorn also raises the signal again once it has shut down, so the process ends "killed by
SIGTERM"; a clean stop here exits 0. The embedded simulator's server takes no signals: the
service's server stops it when it is done.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator

import uvicorn

from callbridge.logs import get_logger

__all__ = ["Server"]

log = get_logger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Server(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        *,
        drain: Callable[[], Awaitable[None]] | None = None,
        signals: bool = True,
    ) -> None:
        super().__init__(config)
        self._drain = drain
        self._signals = signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self._signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # new connections are refused from here on
        http = self.config.http_protocol_class
        for connection in list(self.server_state.connections):
            if isinstance(connection, http):
                connection.shutdown()
        if self._drain is not None and not self.force_exit:
            try:
                await self._drain()
            except Exception:  # a failed drain must not keep the process from stopping
                log.exception("Drain failed")
        await super().shutdown(sockets=sockets)
