"""A minimal WebSocket client on a bare socket: it answers pings only when told to.

Libraries answer pings by themselves; testing what the server does to a client that does not
needs a client that can stay silent.
"""

from __future__ import annotations

import base64
import os
import socket
import struct

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class RawWebSocket:
    def __init__(
        self, host: str, port: int, path: str, timeout: float = 15.0, rcvbuf: int | None = None
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the TCP window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ", 2)[1])

    def _read_exact(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_frame(self) -> tuple[int, bytes] | None:
        """The next (opcode, payload), or None when the server closed the TCP connection."""
        header = self._read_exact(2)
        if header is None:
            return None
        opcode, length = header[0] & 0x0F, header[1] & 0x7F
        if length == 126:
            raw = self._read_exact(2)
            assert raw is not None
            length = struct.unpack("!H", raw)[0]
        elif length == 127:
            raw = self._read_exact(8)
            assert raw is not None
            length = struct.unpack("!Q", raw)[0]
        payload = self._read_exact(length)
        return None if payload is None else (opcode, payload)

    def send(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        first = (0x80 if fin else 0) | opcode
        self.sock.sendall(bytes([first, 0x80 | len(payload)]) + mask + masked)

    def until_close(self) -> tuple[int, str] | None:
        """Read until the server's close frame: its (code, reason), or None if it only hung up."""
        while (frame := self.read_frame()) is not None:
            opcode, payload = frame
            if opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return code, payload[2:].decode()
        return None

    def close(self) -> None:
        self.sock.close()
