"""Protocol pings: a client that answers stays, one that does not is closed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServiceProcess, running_service
from tests.helpers import with_token
from tests.ws.rawws import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawWebSocket


def _events_path() -> str:
    return "/call-events" + with_token("")


@pytest.fixture(scope="module")
def fast_pings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with running_service(
        tmp_path_factory.mktemp("pings"),
        CALLBRIDGE_WS_PING_INTERVAL="0.2",
        CALLBRIDGE_WS_PING_TIMEOUT="0.5",
    ) as svc:
        yield svc


def test_silent_client_is_closed_after_unanswered_ping(fast_pings: ServiceProcess) -> None:
    client = RawWebSocket("127.0.0.1", fast_pings.port, _events_path())
    assert client.status == 101
    opcodes: list[int] = []
    while (frame := client.read_frame()) is not None:
        opcodes.append(frame[0])
        if frame[0] == OP_CLOSE:
            break
    client.close()
    assert OP_TEXT in opcodes  # the welcome
    assert OP_PING in opcodes
    assert opcodes[-1] == OP_CLOSE or frame is None


def test_client_that_answers_pings_stays_connected(fast_pings: ServiceProcess) -> None:
    client = RawWebSocket("127.0.0.1", fast_pings.port, _events_path())
    pings = 0
    while pings < 5:  # five ping intervals, each longer than the pong deadline allows silence
        frame = client.read_frame()
        assert frame is not None, "server closed a client that answered every ping"
        opcode, payload = frame
        assert opcode != OP_CLOSE
        if opcode == OP_PING:
            pings += 1
            client.send(OP_PONG, payload)
    client.send(OP_TEXT, b'{"type":"ping"}')
    while (frame := client.read_frame()) is not None and frame[0] != OP_TEXT:
        if frame[0] == OP_PING:
            client.send(OP_PONG, frame[1])
    assert frame == (OP_TEXT, b'{"type":"pong"}')
    client.close()


def test_pings_can_be_disabled(tmp_path: Path) -> None:
    with running_service(tmp_path, CALLBRIDGE_WS_PING_INTERVAL="0") as svc:
        client = RawWebSocket("127.0.0.1", svc.port, _events_path())
        frame = client.read_frame()
        assert frame is not None
        assert frame[0] == OP_TEXT
        client.send(OP_TEXT, b'{"type":"ping"}')
        assert client.read_frame() == (OP_TEXT, b'{"type":"pong"}')  # no protocol ping between
        client.close()
