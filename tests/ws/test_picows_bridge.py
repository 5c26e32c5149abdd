"""The WebSocket layer under every route (ws/picows_bridge.py), seen from a bare socket:
fragmented messages, bad frames, and an upgrade on a connection that already served HTTP."""

from __future__ import annotations

import base64
import json
import os
import socket

from tests.conftest import ServiceProcess
from tests.helpers import with_token
from tests.ws.rawws import OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, RawWebSocket


def _events(service: ServiceProcess) -> RawWebSocket:
    client = RawWebSocket("127.0.0.1", service.port, "/call-events" + with_token(""))
    assert client.status == 101
    _opcode, payload = _next_data(client)
    assert json.loads(payload)["type"] == "welcome"
    return client


def _next_data(client: RawWebSocket) -> tuple[int, bytes]:
    """The next text or binary frame (pings and pongs skipped)."""
    while True:
        frame = client.read_frame()
        assert frame is not None, "the server hung up"
        if frame[0] in (0x1, 0x2, 0x8):
            return frame


def test_a_message_in_three_fragments_is_one_message(service: ServiceProcess) -> None:
    client = _events(service)
    try:
        client.send(OP_TEXT, b'{"type"', fin=False)
        client.send(OP_CONTINUATION, b':"pi', fin=False)
        client.send(OP_CONTINUATION, b'ng"}')
        opcode, payload = _next_data(client)
        assert (opcode, json.loads(payload)) == (OP_TEXT, {"type": "pong"})
    finally:
        client.close()


def test_text_that_is_not_utf8_closes_1007_with_a_reason(service: ServiceProcess) -> None:
    client = _events(service)
    try:
        client.send(OP_TEXT, b'{"type":"\xff\xfe"}')
        assert client.until_close() == (1007, "text frames must be UTF-8")
    finally:
        client.close()


def test_a_continuation_without_a_message_closes_1002(service: ServiceProcess) -> None:
    client = _events(service)
    try:
        client.send(OP_CONTINUATION, b"orphan")
        assert client.until_close() == (1002, "continuation without a message")
    finally:
        client.close()


def test_a_new_message_inside_a_fragmented_one_closes_1002(service: ServiceProcess) -> None:
    client = _events(service)
    try:
        client.send(OP_TEXT, b'{"type"', fin=False)
        client.send(OP_TEXT, b'{"type":"ping"}')
        assert client.until_close() == (1002, "a new message before the last one ended")
    finally:
        client.close()


def test_an_upgrade_after_a_plain_request_on_one_connection(service: ServiceProcess) -> None:
    """A proxy may reuse a kept-alive connection for an upgrade: it reaches picows too."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=15) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: callbridge\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(4096)
        head, _, body = received.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
        key = base64.b64encode(os.urandom(16)).decode()
        path = "/call-events" + with_token("")
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: callbridge\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        received = body[length:]
        while b"\r\n\r\n" not in received:
            received += sock.recv(4096)
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
            rest += sock.recv(4096)
        assert rest[0] & 0x0F == OP_TEXT
        assert b'"welcome"' in rest


def test_control_frames_between_fragments_are_allowed(service: ServiceProcess) -> None:
    """RFC 6455 §5.4: pings and pongs may come between the fragments of a message."""
    client = _events(service)
    try:
        client.send(OP_TEXT, b'{"type"', fin=False)
        client.send(OP_PONG, b"unsolicited")
        client.send(OP_PING, b"are you there")
        client.send(OP_CONTINUATION, b':"ping"}')
        opcode, payload = _next_data(client)
        assert (opcode, json.loads(payload)) == (OP_TEXT, {"type": "pong"})
    finally:
        client.close()
