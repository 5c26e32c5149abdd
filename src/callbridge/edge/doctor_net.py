"""Raw HTTP/1.1 and WebSocket over asyncio streams, so the doctor sees the exact answer.

A WebSocket client library hides what a diagnosis needs: the status line, every header and the
body of a refused handshake, and whether a connection ended with a close frame or just a TCP
close. The handshake is written by hand here; once it succeeded, frames go through websockets'
sans-I/O `Protocol`, which answers server pings (as a browser does) and tracks the close codes.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import hashlib
import os
import re
import ssl
import time
from typing import Any

import orjson
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import Protocol, Side, State

from callbridge import __version__

__all__ = [
    "Endpoint",
    "Handshake",
    "ProbeError",
    "RawResponse",
    "WsSession",
    "close_writer",
    "connect",
    "http_get",
    "http_request",
    "ws_accept",
    "ws_handshake",
]

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024
MAX_MESSAGE = 1024 * 1024
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
USER_AGENT = f"callbridge-doctor/{__version__}"
_STATUS_LINE = re.compile(r"^HTTP/(\d\.\d) (\d{3})(?: (.*))?$")


class ProbeError(Exception):
    """A connection-level failure, already worded for an operator."""


@dataclasses.dataclass(slots=True)
class Endpoint:
    """Where to connect (`address`) and who we say we talk to (`host`: SNI and Host)."""

    host: str
    port: int
    address: str
    tls: ssl.SSLContext | None

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls is not None else 80
        return name if self.port == default else f"{name}:{self.port}"


@dataclasses.dataclass(slots=True)
class RawResponse:
    status_line: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    seconds: float

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return ", ".join(values) if values else None

    def header_values(self, name: str) -> list[str]:
        key = name.lower()
        return [value for header, value in self.headers if header.lower() == key]

    def body_text(self, limit: int = 200) -> str:
        """The body on one line, cut: enough to recognise an nginx page or a JSON error."""
        text = " ".join(self.body.decode("utf-8", "replace").split())
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def summary(self) -> str:
        shown = [
            f"{name}: {value}"
            for name, value in self.headers
            if name.lower()
            in {"server", "via", "location", "content-type", "upgrade", "connection"}
        ]
        return "; ".join([self.status_line, *shown])

    def to_dict(self) -> dict[str, Any]:
        return {
            "status_line": self.status_line,
            "status": self.status,
            "headers": [list(pair) for pair in self.headers],
            "body": self.body_text(500),
            "ms": round(self.seconds * 1000, 1),
        }


async def connect(
    endpoint: Endpoint, wait: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """TCP (and TLS) to the endpoint; failures become `ProbeError` with a plain-words reason."""
    kwargs: dict[str, Any] = {"limit": MAX_HEAD}
    if endpoint.tls is not None:
        kwargs.update(ssl=endpoint.tls, server_hostname=endpoint.host, ssl_handshake_timeout=wait)
    try:
        async with asyncio.timeout(wait):
            return await asyncio.open_connection(endpoint.address, endpoint.port, **kwargs)
    except TimeoutError:
        raise ProbeError(
            f"no answer from {endpoint.address}:{endpoint.port} within {wait:g} s"
        ) from None
    except ssl.SSLError as exc:
        raise ProbeError(f"TLS failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise ProbeError(f"cannot connect to {endpoint.address}:{endpoint.port}: {exc}") from None


async def close_writer(writer: asyncio.StreamWriter, wait: float = 2.0) -> None:
    """Close politely, but never wait long: a TLS peer may not answer close_notify."""
    writer.close()
    try:
        async with asyncio.timeout(wait):
            await writer.wait_closed()
    except (TimeoutError, OSError, ssl.SSLError):
        writer.transport.abort()


async def _read_head(reader: asyncio.StreamReader, wait: float) -> bytes:
    try:
        async with asyncio.timeout(wait):
            return await reader.readuntil(b"\r\n\r\n")
    except TimeoutError:
        raise ProbeError(f"no HTTP answer within {wait:g} s") from None
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ProbeError("the server closed the connection without answering") from None
        if not exc.partial.startswith(b"HTTP/"):
            raise ProbeError(_not_http(exc.partial)) from None
        raise ProbeError("the server closed the connection in the middle of its answer") from None
    except asyncio.LimitOverrunError:
        raise ProbeError(f"the answer's headers exceed {MAX_HEAD} bytes") from None
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError(f"the connection failed while reading the answer: {exc}") from None


def _not_http(data: bytes) -> str:
    if data[3:4] == b"\x04" or data.startswith(b"\x00\x00"):
        return (
            "the answer is not HTTP/1.1 but looks like HTTP/2 frames: the server ignored ALPN "
            "http/1.1 (WebSockets need HTTP/1.1 with nginx)"
        )
    return f"the answer is not HTTP: {data[:40]!r}"


def _parse_head(head: bytes, seconds: float) -> RawResponse:
    lines = head.decode("latin-1").split("\r\n")
    match = _STATUS_LINE.match(lines[0])
    if match is None:
        raise ProbeError(_not_http(head))
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return RawResponse(lines[0], int(match[2]), match[3] or "", headers, b"", seconds)


async def _read_body(reader: asyncio.StreamReader, response: RawResponse, wait: float) -> bytes:
    """As much of the body as the evidence needs, however it is framed."""
    if response.status in (101, 204, 304) or 100 <= response.status < 200:
        return b""
    body = bytearray()
    try:
        async with asyncio.timeout(wait):
            if "chunked" in (response.header("transfer-encoding") or "").lower():
                while len(body) < MAX_BODY:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        break
                    body += await reader.readexactly(size)
                    await reader.readexactly(2)
            elif (length := response.header("content-length")) is not None:
                body += await reader.readexactly(min(int(length.split(",")[0]), MAX_BODY))
            else:
                while len(body) < MAX_BODY and (chunk := await reader.read(MAX_BODY)):
                    body += chunk
    except asyncio.IncompleteReadError as exc:
        body += exc.partial
    except (TimeoutError, ValueError, OSError, ssl.SSLError, asyncio.LimitOverrunError):
        pass  # what arrived is the evidence
    return bytes(body[:MAX_BODY])


async def read_response(
    reader: asyncio.StreamReader, wait: float, started: float, *, body: bool = True
) -> RawResponse:
    head = await _read_head(reader, wait)
    response = _parse_head(head, time.monotonic() - started)
    if body:
        response.body = await _read_body(reader, response, wait)
    return response


async def http_get(
    endpoint: Endpoint, path: str, wait: float, headers: dict[str, str] | None = None
) -> RawResponse:
    """One GET with Connection: close, answered in full (body cut at 16 KiB)."""
    return await http_request(endpoint, "GET", path, wait, headers)


async def http_request(
    endpoint: Endpoint,
    method: str,
    path: str,
    wait: float,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> RawResponse:
    """One request with Connection: close, answered in full (body cut at 16 KiB)."""
    started = time.monotonic()
    reader, writer = await connect(endpoint, wait)
    try:
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {endpoint.host_header}",
            f"User-Agent: {USER_AGENT}",
            "Accept: */*",
            "Connection: close",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        if body or method not in ("GET", "HEAD"):
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        return await read_response(reader, wait, started)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError(f"the connection failed: {exc}") from None
    finally:
        await close_writer(writer)


def ws_accept(key: str) -> str:
    """Sec-WebSocket-Accept for `key` (RFC 6455 §4.2.2)."""
    return base64.b64encode(
        hashlib.sha1((key + WS_GUID).encode(), usedforsecurity=False).digest()
    ).decode()


@dataclasses.dataclass(slots=True)
class Handshake:
    response: RawResponse
    problems: list[str]  # why a 101 is not a valid WebSocket answer
    session: WsSession | None


async def ws_handshake(endpoint: Endpoint, target: str, origin: str, wait: float) -> Handshake:
    """An upgrade request on `target`; with a valid 101 the open session comes back."""
    key = base64.b64encode(os.urandom(16)).decode()
    started = time.monotonic()
    reader, writer = await connect(endpoint, wait)
    keep = False
    try:
        request = "\r\n".join(
            [
                f"GET {target} HTTP/1.1",
                f"Host: {endpoint.host_header}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
                f"Origin: {origin}",
                f"User-Agent: {USER_AGENT}",
            ]
        )
        writer.write((request + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        response = await read_response(reader, wait, started, body=False)
        if response.status != 101:
            response.body = await _read_body(reader, response, wait)
            return Handshake(response, [], None)
        problems = []
        if (response.header("upgrade") or "").lower() != "websocket":
            problems.append(f"Upgrade is {response.header('upgrade')!r}, not websocket")
        tokens = {t.strip().lower() for t in (response.header("connection") or "").split(",")}
        if "upgrade" not in tokens:
            problems.append(f"Connection is {response.header('connection')!r}, not upgrade")
        accept = response.header("sec-websocket-accept")
        if accept != ws_accept(key):
            problems.append(f"Sec-WebSocket-Accept is {accept!r}, expected {ws_accept(key)!r}")
        if problems:
            return Handshake(response, problems, None)
        keep = True
        return Handshake(response, [], WsSession(reader, writer))
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError(f"the connection failed: {exc}") from None
    finally:
        if not keep:
            await close_writer(writer)


class WsSession:
    """An open WebSocket: frames in, pings answered and counted, close codes recorded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=MAX_MESSAGE)
        self.pings = 0
        self.error: str | None = None
        self._frames: collections.deque[Frame] = collections.deque()

    @property
    def closed(self) -> bool:
        return self.protocol.state is State.CLOSED

    @property
    def close_rcvd(self) -> Close | None:
        """The peer's close frame; None after a bare TCP close (a 1006)."""
        return self.protocol.close_rcvd

    @property
    def close_code(self) -> int | None:
        return self.protocol.close_code

    async def next_frame(self, wait: float) -> Frame | None:
        """The next frame (pings included, already answered); None once the TCP closed.

        Raises TimeoutError when nothing arrived within `wait`.
        """
        while not self._frames:
            if self.closed:
                return None
            async with asyncio.timeout(wait):
                try:
                    data = await self.reader.read(65536)
                except (OSError, ssl.SSLError) as exc:
                    self.error = str(exc) or type(exc).__name__
                    data = b""
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            for frame in self.protocol.events_received():
                if not isinstance(frame, Frame):  # only frames once the connection is open
                    continue
                if frame.opcode is Opcode.PING:
                    self.pings += 1
                self._frames.append(frame)
            await self._flush()
        return self._frames.popleft()

    async def next_message(self, wait: float) -> Frame | None:
        """The next text, binary or close frame; control frames are skipped."""
        while True:
            frame = await self.next_frame(wait)
            if frame is None or frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CLOSE):
                return frame

    async def close(self, code: int, reason: str, wait: float) -> bool:
        """Send a close frame and wait for the peer's; True if it came back in time."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            await self._flush()
        try:
            while await self.next_frame(wait) is not None:
                pass
        except TimeoutError:
            return False
        finally:
            await self.abort()
        return self.close_rcvd is not None

    async def abort(self) -> None:
        await close_writer(self.writer, 1.0)

    async def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if not data:  # the sans-I/O layer's "half-close now"
                if self.writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        self.writer.write_eof()
                continue
            self.writer.write(data)
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.drain()
