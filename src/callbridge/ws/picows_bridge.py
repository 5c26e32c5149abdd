"""WebSockets on picows, behind uvicorn's HTTP parser, for the same ASGI application.

Measured (docs/benchmarks.md): the per-frame cost of uvicorn's WebSocket protocols (websockets'
Python frame parser, an ASGI message dict and a coroutine wake-up per frame) was most of what
callbridge spent relaying audio. picows parses and writes frames in Cython and calls back
synchronously. So every WebSocket upgrade that uvicorn's httptools protocol accepts is handed
to a picows protocol on the same TCP connection (the same port, 5006), and the application
runs as ASGI on top of it: routing, middleware (drain tracking, proxy headers), the gate and the
handlers are unchanged. Two hooks in `scope["extensions"]` let the audio handlers skip ASGI on
their hot paths: a text hook that gets each carrier frame synchronously, and the picows
transport itself with its back-pressure state (`FastSocket.writable`) for direct sends.

uvicorn hands an upgrade over by creating `config.ws_protocol_class`, feeding it the request
bytes it parsed and installing it on the transport; `PicowsUpgrade` is that class. It feeds the
request to a picows `WSProtocol` and, one loop turn later, puts that protocol on the transport
itself, so frames then go from uvloop straight into picows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import unquote

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in its stub
from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from callbridge.logs import get_logger

__all__ = ["BINARY", "FAST_SOCKET", "FastSocket", "PicowsUpgrade", "answer_subprotocol"]

log = get_logger(__name__)
BINARY = WSMsgType.BINARY
TEXT = WSMsgType.TEXT
FAST_SOCKET = "callbridge.fast_socket"  # the scope["extensions"] key of a FastSocket
MAX_REQUEST_LINE = 8192  # as websockets: a longer request line gets 414
MAX_HEADER_LINE = 8192  # a longer header line, or more headers, gets 431
MAX_HEADERS = 128
READ_BUFFER = 2048  # picows's smallest; grows as messages need (10,000 idle sockets: -140 MB)
INBOX_LIMIT = 32  # messages the application has not read yet before the peer is not read
CLOSE_TIMEOUT = 2.0  # after our close frame, how long the peer has to answer with its own
WRITE_BUFFER_HIGH = 16 * 1024  # beyond this, a socket is "not writable" and audio is dropped


class _PicowsLogger:
    """picows's log lines, into ours: its INFO per connect and disconnect dropped, and a peer's
    protocol error (a bad or over-long frame; the peer gets its close code) a warning, not an
    error of ours.

    Not a `logging.Logger` on purpose: for one, picows makes a child Logger per connection,
    and ten thousand sockets would hold ten thousand Logger objects."""

    name = "picows"

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.WARNING

    def log(self, level: int, message: str, *args: Any, **kwargs: Any) -> None:
        if level >= logging.ERROR:
            self.error(message, *args)
        elif level >= logging.WARNING:
            self.warning(message, *args)

    def debug(self, message: str, *args: Any, **kwargs: Any) -> None:
        return None

    info = debug

    def warning(self, message: str, *args: Any, **kwargs: Any) -> None:
        log.warning("WebSocket: " + (message % args if args else message))

    def error(self, message: str, *args: Any, **kwargs: Any) -> None:
        text = message % args if args else message
        if message.startswith("WS parser error"):  # the peer sent what the protocol forbids
            log.warning("WebSocket protocol error from the peer; closed", detail=text)
        else:
            log.error("WebSocket: " + text)

    def exception(self, message: str, *args: Any, **kwargs: Any) -> None:
        log.exception("WebSocket: " + (message % args if args else message))


_QUIET = _PicowsLogger()

# Gets each whole text message; a memoryview valid only during the call (or a str). It must
# check the text is UTF-8 (orjson does).
TextHook = Callable[[str | bytes | memoryview], None]


def answer_subprotocol(offered: list[str]) -> str | None:
    """The subprotocol the handshake answers: browsers need one of those they offered.

    `callbridge` when offered, else the token entry itself (see ws/gate.py)."""
    if "callbridge" in offered:
        return "callbridge"
    for protocol in offered:
        if protocol.startswith("callbridge.token."):
            return protocol
    return None


def _offered_subprotocols(request: WSUpgradeRequest) -> list[str]:
    offered: list[str] = []
    for value in request.headers.getall("sec-websocket-protocol", []):
        offered.extend(part.strip() for part in value.split(",") if part.strip())
    return offered


def _refusal(status: bytes, reason: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(reason)).encode() + b"\r\nconnection: close\r\n\r\n" + reason
    )


def _oversized_head(head: bytes) -> bytes | None:
    """The answer websockets gave to an over-long request line or header section."""
    lines = head.split(b"\r\n")
    if len(lines[0]) > MAX_REQUEST_LINE:
        return _refusal(b"414 Request-URI Too Long", b"request line too long")
    headers = [line for line in lines[1:] if line]
    if len(headers) > MAX_HEADERS or any(len(line) > MAX_HEADER_LINE for line in headers):
        return _refusal(b"431 Request Header Fields Too Large", b"request headers too large")
    return None


class Keepalive:
    """Pings for every socket of one server from one periodic sweep.

    A peer that sent nothing since the last sweep gets a ping; one that still has not answered
    (or sent anything) `ws_ping_timeout` later is closed with 1011, as uvicorn did. Dead peers
    (a browser tab killed, a NAT that forgot us) are found, and proxies see traffic. One timer
    instead of picows's task per socket: 10,000 idle browsers hold 10,000 fewer tasks."""

    _of: ClassVar[weakref.WeakKeyDictionary[ServerState, Keepalive]] = weakref.WeakKeyDictionary()

    def __init__(self, interval: float | None, timeout: float | None) -> None:
        self.sockets: set[FastSocket] = set()
        self.interval = interval
        self.timeout = timeout or interval or 20.0
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, server_state: ServerState, config: Config) -> Keepalive:
        keepalive = cls._of.get(server_state)
        if keepalive is None:
            keepalive = cls._of[server_state] = cls(config.ws_ping_interval, config.ws_ping_timeout)
            keepalive._schedule()
        return keepalive

    def _schedule(self) -> None:
        if self.interval:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(min(self.interval, self.timeout) / 2, self.sweep)

    def sweep(self) -> None:
        now = time.monotonic()
        for socket in list(self.sockets):
            if socket.heard:
                socket.heard = False
                socket.pinged_at = None
            elif socket.pinged_at is None:
                socket.pinged_at = now
                if socket.transport is not None and not socket.closed:
                    socket.transport.send_ping()
            elif now - socket.pinged_at > self.timeout:
                log.info("Keepalive ping unanswered; closing", path=socket.scope["path"])
                socket.close_now(1011, "keepalive ping timeout")
                if socket.transport is not None:  # a dead peer never drains what we queued
                    socket.transport.disconnect(False)
        self._schedule()


class PicowsUpgrade(asyncio.Protocol):
    """uvicorn's `ws` protocol class: takes over the connection at the upgrade."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.socket: FastSocket | None = None
        self.refused = False
        self.keepalive = Keepalive.of(server_state, config)
        self.inner = WSProtocol(
            None,  # host and port: client side only
            None,  # path: client side only
            False,  # server side
            self._listener_for,
            _QUIET,
            True,  # an exception in a callback disconnects (ours are caught before)
            5.0,  # handshake timeout (the request is already here)
            False,  # pings: one Keepalive sweep for all sockets, not a task per socket
            20.0,
            20.0,
            WSAutoPingStrategy.PING_WHEN_IDLE,
            True,  # answer pings
            config.ws_max_size,
            None,  # extra response headers
            READ_BUFFER,
        )

    # --- asyncio.Protocol, until picows has the transport --------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's, not asyncio's class
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.socket is None and b"\r\n\r\n" in data:
            answer = _oversized_head(data.partition(b"\r\n\r\n")[0])
            if answer is not None:
                self.refused = True
                assert self.transport is not None
                self.transport.write(answer)
                self.transport.close()
                return
        view = data
        while view:
            buffer = self.inner.get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            self.inner.buffer_updated(size)
            view = view[size:]
        self.loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self.refused:
            transport.set_protocol(self.inner)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self.inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # --- uvicorn's shutdown ----------------------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn's last step: 1012 to what is still open (the drain closed the rest)."""
        if self.socket is not None:
            self.socket.close_now(1012, "")
        elif self.transport is not None:
            self.transport.close()

    # --- the handshake ---------------------------------------------------------------------

    def _listener_for(self, request: WSUpgradeRequest) -> Any:
        offered = _offered_subprotocols(request)
        socket = FastSocket(self, self._scope(request, offered))
        self.socket = socket
        answer = answer_subprotocol(offered)
        if answer is None:
            return socket
        response = WSUpgradeResponse.create_101_response({"Sec-WebSocket-Protocol": answer})
        return WSUpgradeResponseWithListener(response, socket)

    def _scope(self, request: WSUpgradeRequest, offered: list[str]) -> dict[str, Any]:
        assert self.transport is not None
        raw_path, _, query = request.path.partition(b"?")
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in request.headers.items()
        ]
        return {
            "type": "websocket",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(self.transport) else "ws",
            "server": get_local_addr(self.transport),
            "client": get_remote_addr(self.transport),
            "root_path": self.config.root_path,
            "path": unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": query,
            "headers": headers,
            "subprotocols": offered,
            "state": self.app_state.copy(),
            "extensions": {},
        }

    def _ended(self) -> None:
        self.server_state.connections.discard(self)


class FastSocket(WSListener):
    """One WebSocket: picows callbacks below, ASGI `receive`/`send` above, hooks beside."""

    __slots__ = (
        "_close_timer",
        "_connect_sent",
        "_inbox",
        "_part_type",
        "_parts",
        "_resumed",
        "_waiter",
        "closed",
        "heard",
        "pinged_at",
        "scope",
        "task",
        "text_hook",
        "transport",
        "upgrade",
        "writable",
    )

    def __init__(self, upgrade: PicowsUpgrade, scope: dict[str, Any]) -> None:
        self.upgrade = upgrade
        self.scope = scope
        scope["extensions"][FAST_SOCKET] = self
        self.transport: WSTransport | None = None
        self.text_hook: TextHook | None = None
        self.writable = True
        self.closed = False  # a close frame was sent or received, or the connection dropped
        self._connect_sent = False
        self._inbox: deque[dict[str, Any]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._resumed: asyncio.Future[None] | None = None
        self._parts: list[bytes] = []
        self._part_type = WSMsgType.TEXT
        self._close_timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.heard = True  # a frame came since the last keepalive sweep
        self.pinged_at: float | None = None  # when the unanswered keepalive ping went out

    # --- picows callbacks ------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        with contextlib.suppress(Exception):
            transport.underlying_transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        upgrade = self.upgrade
        upgrade.keepalive.sockets.add(self)
        self.task = upgrade.loop.create_task(self._run_app())
        upgrade.server_state.tasks.add(self.task)
        self.task.add_done_callback(upgrade.server_state.tasks.discard)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        hook = self.text_hook
        self.heard = True
        if hook is not None and kind is TEXT and frame.fin and not self._parts:
            try:  # the hot path: the payload in place, decoded (and UTF-8 checked) by the hook
                hook(frame.get_payload_as_memoryview())
            except Exception:  # a bug of ours: the peer gets 1011 and a reason
                log.exception("WebSocket frame handler failed", path=self.scope["path"])
                self.close_now(1011, "internal error")
            return
        if kind is WSMsgType.CLOSE:
            self._peer_closed(transport, frame)
            return
        if kind is WSMsgType.PING or kind is WSMsgType.PONG or self.closed:
            return  # pings are answered by picows; after a close, data is ignored (RFC 6455)
        if kind is WSMsgType.CONTINUATION or not frame.fin or self._parts:
            self._fragment(frame)
            return
        if kind is WSMsgType.TEXT:
            try:
                text = frame.get_payload_as_utf8_text()
            except UnicodeDecodeError:
                self.close_now(1007, "text frames must be UTF-8")
                return
            self._text(text)
        elif kind is WSMsgType.BINARY:
            self._push({"type": "websocket.receive", "bytes": frame.get_payload_as_bytes()})

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        self.writable = False
        if self._close_timer is not None:
            self._close_timer.cancel()
        received = transport.close_handshake.recv if transport.close_handshake else None
        code = (_as_int(received.code) or 1005) if received is not None else 1006
        reason = received.reason if received is not None else ""
        self._push({"type": "websocket.disconnect", "code": code, "reason": reason})
        self._wake_senders()
        self.upgrade.keepalive.sockets.discard(self)
        self.upgrade._ended()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        if not self.closed:
            self.writable = True
        self._wake_senders()

    # --- frames in -------------------------------------------------------------------------

    def _text(self, text: str) -> None:
        hook = self.text_hook
        if hook is None:
            self._push({"type": "websocket.receive", "text": text})
            return
        try:
            hook(text)
        except Exception:  # a bug of ours: the peer gets 1011 and a reason, not a dead socket
            log.exception("WebSocket frame handler failed", path=self.scope["path"])
            self.close_now(1011, "internal error")

    def _fragment(self, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.CONTINUATION:
            if self._parts:
                self.close_now(1002, "a new message before the last one ended")
                return
            self._part_type = frame.msg_type
        elif not self._parts:
            self.close_now(1002, "continuation without a message")
            return
        self._parts.append(frame.get_payload_as_bytes())
        if sum(map(len, self._parts)) > self.upgrade.config.ws_max_size:
            self._parts.clear()
            self.close_now(1009, "message too big")
            return
        if not frame.fin:
            return
        payload = b"".join(self._parts)
        self._parts.clear()
        if self._part_type is WSMsgType.TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                self.close_now(1007, "text frames must be UTF-8")
                return
            self._text(text)
        else:
            self._push({"type": "websocket.receive", "bytes": payload})

    def _peer_closed(self, transport: WSTransport, frame: WSFrame) -> None:
        code = _as_int(frame.get_close_code())
        if not self.closed:
            self.closed = True
            self.writable = False
            transport.send_close(_close_code(code or 1000))
        transport.disconnect()

    # --- ASGI ------------------------------------------------------------------------------

    def _push(self, message: dict[str, Any]) -> None:
        self._inbox.append(message)
        if len(self._inbox) == INBOX_LIMIT and self.transport is not None and not self.closed:
            # The application is not reading (awaiting the store, say): stop reading the peer,
            # as websockets did, rather than queue without bound.
            self.transport.underlying_transport.pause_reading()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    @property
    def backlog(self) -> int:
        """Messages queued for `receive()` that the application has not read yet."""
        return len(self._inbox)

    def wake(self) -> None:
        """Let the handler's `receive()` return (an empty message): a hook left it work."""
        self._push({"type": "websocket.receive", "bytes": None, "text": None})

    async def receive(self) -> dict[str, Any]:
        if not self._connect_sent:
            self._connect_sent = True
            return {"type": "websocket.connect"}
        while not self._inbox:
            self._waiter = self.upgrade.loop.create_future()
            await self._waiter
        message = self._inbox.popleft()
        if len(self._inbox) == INBOX_LIMIT - 1 and self.transport is not None:
            with contextlib.suppress(Exception):  # the connection may be gone already
                self.transport.underlying_transport.resume_reading()
        if message["type"] == "websocket.disconnect":
            self._inbox.append(message)  # every later receive says so too
        return message

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        transport = self.transport
        if kind == "websocket.send":
            if self.closed or transport is None:
                raise ClientDisconnected
            while not self.writable:
                await self._until_resumed()
                if self.closed:
                    raise ClientDisconnected
            text = message.get("text")
            if text is not None:
                transport.send(WSMsgType.TEXT, text.encode())
            else:
                transport.send(WSMsgType.BINARY, message.get("bytes") or b"")
        elif kind == "websocket.close":
            self.close_now(int(message.get("code") or 1000), message.get("reason") or "")
        elif kind == "websocket.accept":
            chosen = message.get("subprotocol")
            if chosen != answer_subprotocol(list(self.scope["subprotocols"])):
                log.warning("Subprotocol differs from the handshake's", subprotocol=chosen)
        else:  # websocket.http.response.*: the 101 is already sent
            raise RuntimeError(f"unsupported ASGI message {kind!r} after the upgrade")

    async def _until_resumed(self) -> None:
        if self._resumed is None or self._resumed.done():
            self._resumed = self.upgrade.loop.create_future()
        await self._resumed

    def _wake_senders(self) -> None:
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)

    # --- closing -------------------------------------------------------------------------

    def close_now(self, code: int, reason: str) -> None:
        """Send a close frame (once), then drop the connection when the peer answers or after
        CLOSE_TIMEOUT."""
        transport = self.transport
        if self.closed or transport is None:
            return
        self.closed = True
        self.writable = False
        transport.send_close(_close_code(code), reason.encode()[:123])
        # Not graceful after the timeout: a peer that does not answer may not read either, and
        # a graceful close would wait for our write buffer to drain (for TCP's retries: minutes).
        self._close_timer = self.upgrade.loop.call_later(CLOSE_TIMEOUT, transport.disconnect, False)
        self._wake_senders()

    async def _run_app(self) -> None:
        try:
            await self.upgrade.config.loaded_app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except Exception:
            log.exception("WebSocket application failed", path=self.scope["path"])
            self.close_now(1011, "internal error")
        else:
            self.close_now(1000, "")
        finally:
            self.scope["extensions"].pop(FAST_SOCKET, None)  # no cycle left for the collector


def _as_int(code: Any) -> int:
    return int(code.value if isinstance(code, WSCloseCode) else code)


def _close_code(code: int) -> Any:
    """picows types close codes as its enum, which also carries the 4xxx codes as ints."""
    try:
        return WSCloseCode(code)
    except ValueError:
        return code
