"""Upgrades that websockets refuses before any route runs are answered, and closed."""

from __future__ import annotations

import pytest

from tests.conftest import ServiceProcess
from tests.ws.rawws import RawWebSocket


@pytest.mark.parametrize("path", ["/call-events", "/audio-stream", "/frontend-audio"])
def test_a_request_line_over_8_kib_gets_414_and_the_connection_closes(
    service: ServiceProcess, path: str
) -> None:
    """Found by the fuzz suite: websockets wrote a 414 that uvicorn never sent, and the socket
    stayed open: the client hung until its own timeout."""
    raw = RawWebSocket("127.0.0.1", service.port, f"{path}?since={'9' * 9000}")
    try:
        assert raw.status == 414
        while raw.sock.recv(65536):  # the rest of the answer, then the end of the connection
            pass
    finally:
        raw.close()
