"""`/frontend-audio`: a browser listens to one call, and may talk into it.

The listener first gets a `format` message (codec, sample rate, byte order, frame layout,
tracks, call state), then one binary message per carrier frame, starting at live audio. Its
queue is bounded and drops the oldest audio when the browser cannot keep up, so a slow listener
never delays the carrier or another listener. When the stream or the call ends it gets an
`end` message and a normal close.

Talking: `{"type": "talk.start", "encoding": "pcm16", "sample_rate": 16000}`, then binary
messages of that audio, then `{"type": "talk.stop"}`. One talker per call; the service encodes
to the call's bidirectional codec in exact 20 ms frames (on whichever instance holds the
carrier stream, through the hub).
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from callbridge.audio.g711 import alaw_decode, ulaw_decode
from callbridge.auth.tokens import Grant, Right
from callbridge.calls.model import CallState
from callbridge.hub.live import AudioItem, LiveQueue, StreamNotice, TalkAudio, TalkControl
from callbridge.logs import get_logger
from callbridge.metrics import MEDIA, MEDIA_MALFORMED, REFUSALS, MediaStats
from callbridge.runtime import Runtime
from callbridge.ws.audio_format import TALK_INPUTS, TALK_RATES, format_notice
from callbridge.ws.close_codes import CloseCode, close_reason
from callbridge.ws.duplex import until_either_ends
from callbridge.ws.gate import Admission, admit
from callbridge.ws.picows_bridge import BINARY, FAST_SOCKET, FastSocket

__all__ = ["FrontendListener"]

log = get_logger(__name__)


def _end(reason: str, **details: Any) -> str:
    return orjson.dumps({"type": "end", "reason": reason, **details}).decode()


class FrontendListener:
    """One browser socket listening to one call (and maybe talking into it)."""

    def __init__(self, websocket: WebSocket, runtime: Runtime) -> None:
        self.websocket = websocket
        self.runtime = runtime
        self.settings = runtime.settings
        self.call_id = websocket.query_params.get("call_control_id") or ""
        self.owner = uuid.uuid4().hex
        self.talk_encoding: str | None = None
        self.talk_rate = 0
        self.talk_codec: str | None = None
        self.current_stream: str | None = None
        self._sent = 0  # by `_send`; a SendingQueue counts its own
        self.queue: LiveQueue[AudioItem] | None = None
        self._complaints: set[str] = set()
        self.admission: Admission  # set once the gate admits the socket

    @property
    def sent(self) -> int:
        """Audio frames sent to this browser."""
        queue = self.queue
        return self._sent + (queue.sent if isinstance(queue, SendingQueue) else 0)

    def _allowed(self, grant: Grant) -> None:
        grant.require(Right.LISTEN, self.call_id or None)
        if self.talk_encoding is not None:  # a refresh cannot take away the right in use
            grant.require(Right.TALK)

    async def run(self) -> None:
        admission = await admit(self.websocket, "frontend-audio", Right.LISTEN, self._allowed)
        if admission is None:
            return
        self.admission = admission
        try:
            await self._run()
        finally:
            admission.release()

    async def _run(self) -> None:
        log.info("Frontend client connected to audio stream", call_control_id=self.call_id)
        if not self.call_id:
            await self._close(CloseCode.BAD_REQUEST, "call_control_id query parameter is required")
            return
        stats = MEDIA.acquire(self.call_id)
        # Subscribe before reading the call: a stream that starts in between is then queued.
        # On picows, audio goes to the socket as it is published (SendingQueue); what cannot
        # go at once (notices, audio behind them or while the browser lags) waits in the queue.
        fast: FastSocket | None = self.websocket.scope.get("extensions", {}).get(FAST_SOCKET)
        maxsize = self.settings.listener_queue_frames
        queue = self.runtime.hub.subscribe_audio(
            self.call_id,
            maxsize,
            lambda: _count_drop(stats),
            None if fast is None else SendingQueue(maxsize, fast, stats),
        )
        self.queue = queue
        stats.listeners += 1
        try:
            await self._listen(queue, stats)
        except WebSocketDisconnect:
            pass
        except Exception:
            log.exception("frontend-audio handler failed", call_control_id=self.call_id)
            await self._close(CloseCode.INTERNAL_ERROR, "internal error; reconnect")
        finally:
            self.runtime.hub.unsubscribe_audio(self.call_id, queue)
            if self.talk_encoding is not None:
                await self._stop_talking()
            stats.listeners -= 1
            MEDIA.release(self.call_id)
            log.info(
                "Frontend client left audio stream",
                call_control_id=self.call_id,
                frames_sent=self.sent,
                frames_dropped=queue.dropped,
            )

    async def _listen(self, queue: LiveQueue[AudioItem], stats: MediaStats) -> None:
        await self.runtime.hub.subscribed(self.call_id)  # in effect on every instance
        call = await self.runtime.store.get_call(self.call_id)
        if call is None:
            await self._close(CloseCode.UNKNOWN_CALL, "unknown call_control_id")
            return
        self.talk_codec = call.talk_codec
        notice = format_notice(call)
        self.current_stream = notice.data["stream_id"]
        await self.websocket.send_text(notice.to_json())
        if isinstance(queue, SendingQueue):
            queue.direct = True  # the format is out: audio may go straight to the socket now
        if call.state is CallState.ENDED:
            await self.websocket.send_text(_end("call_ended", hangup_cause=call.hangup_cause))
            await self._close(CloseCode.NORMAL, "call ended")
            return
        await until_either_ends(self._receive(), self._send(queue, stats))

    async def _send(self, queue: LiveQueue[AudioItem], stats: MediaStats) -> None:
        """Queue → socket; returns after the `end` message and close."""
        send = self.websocket.send
        sending = queue if isinstance(queue, SendingQueue) else None
        while True:
            item = await queue.get()
            if sending is not None:  # what the publisher offers meanwhile must queue behind it
                sending.busy = True
            try:
                if type(item) is bytes:
                    await send({"type": "websocket.send", "bytes": item})
                    self._sent += 1
                    stats.frames_out += 1
                    stats.bytes_out += len(item)
                    continue
                assert isinstance(item, StreamNotice)
                if await self._notice(item, queue):
                    return
            finally:
                if sending is not None:
                    sending.busy = False

    async def _notice(self, notice: StreamNotice, queue: LiveQueue[AudioItem]) -> bool:
        """Forward a notice; True if it ended this listener's session."""
        text = self.websocket.send_text
        if notice.type == "format":
            self.current_stream = notice.data.get("stream_id")
            talk = notice.data.get("talk")  # an inbound call gets its talk codec on answer
            self.talk_codec = talk.get("codec") if isinstance(talk, dict) else None
            await text(notice.to_json())
            return False
        if notice.type == "stream.stopped":
            stream_id = notice.data.get("stream_id")
            if self.current_stream is not None and stream_id != self.current_stream:
                return False  # an older stream, replaced by the one we follow
            reason = str(notice.data.get("reason", "stream_stopped"))
            await text(_end(reason, stream_id=stream_id, frames=self.sent, dropped=queue.dropped))
            await self._close(CloseCode.NORMAL, reason)
            return True
        if notice.type == "call.ended":
            cause = notice.data.get("hangup_cause")
            await text(
                _end("call_ended", hangup_cause=cause, frames=self.sent, dropped=queue.dropped)
            )
            await self._close(CloseCode.NORMAL, "call ended")
            return True
        await text(notice.to_json())
        return False

    # --- what the browser says -------------------------------------------------------------

    async def _receive(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is not None:
                await self._talk_audio(data)
            else:
                await self._command(message.get("text") or "")

    async def _error(self, kind: str, reason: str, code: CloseCode = CloseCode.BAD_REQUEST) -> None:
        """Answer bad input with an error message, log it once per kind; the socket lives on."""
        MEDIA_MALFORMED.labels("browser", kind).inc()
        if kind not in self._complaints:
            self._complaints.add(kind)
            log.info("Bad message on frontend-audio", kind=kind, reason=reason)
        await self.websocket.send_text(
            orjson.dumps({"type": "error", "code": int(code), "reason": reason}).decode()
        )

    async def _command(self, text: str) -> None:
        try:
            command: Any = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self._error("bad_json", "messages must be JSON objects")
            return
        kind = command.get("type") if isinstance(command, dict) else None
        if kind == "ping":
            await self.websocket.send_text('{"type":"pong"}')
        elif kind == "token":
            await self.admission.handle_refresh(command, self._allowed)
        elif kind == "talk.start":
            await self._start_talking(command)
        elif kind == "talk.stop":
            if self.talk_encoding is None:
                await self._error("not_talking", "talk.stop without talk.start")
            else:
                await self._stop_talking()
                await self.websocket.send_text('{"type":"talk.stopped"}')
        elif kind in ("clear", "mark"):
            if self.talk_encoding is None:
                await self._error("not_talking", f"{kind} needs talk.start first")
                return
            name = command.get("name")
            if kind == "mark" and (not isinstance(name, str) or not name or len(name) > 128):
                await self._error("bad_mark", "mark needs a name (1-128 characters)")
                return
            self.runtime.hub.publish_talk(self.call_id, TalkControl(kind, name=name))
        else:
            await self._error("unknown_type", f"unknown message type {str(kind)[:40]!r}")

    async def _start_talking(self, command: dict[str, Any]) -> None:
        if Right.TALK not in self.admission.grant.rights:
            REFUSALS.labels("frontend-audio", "no_talk_right").inc()
            await self._refuse_talk(CloseCode.FORBIDDEN, "this token has no talk right")
            return
        encoding = command.get("encoding", "pcm16")
        rate = command.get("sample_rate", 8000)
        if encoding not in TALK_INPUTS:
            await self._error("bad_talk", f"encoding must be one of {', '.join(TALK_INPUTS)}")
            return
        if encoding != "pcm16":
            rate = 8000
        if rate not in TALK_RATES:
            await self._error("bad_talk", "sample_rate must be 8000 or 16000")
            return
        if self.talk_codec is None:
            await self._error(
                "no_talk_back", "this call's stream is not bidirectional", CloseCode.CONFLICT
            )
            return
        try:
            claimed = await self.runtime.hub.claim_talker(self.call_id, self.owner)
        except Exception as exc:  # the broker is unreachable: nobody can be sure to be alone
            log.warning("Talker claim failed", call_control_id=self.call_id, error=str(exc))
            await self._refuse_talk(CloseCode.INTERNAL_ERROR, "the hub is unreachable; try again")
            return
        if not claimed:
            await self._refuse_talk(CloseCode.CONFLICT, "another client is talking into this call")
            return
        self.talk_encoding, self.talk_rate = str(encoding), int(rate)
        self.runtime.hub.publish_talk(self.call_id, TalkControl("start", sample_rate=int(rate)))
        await self.websocket.send_text(
            orjson.dumps(
                {
                    "type": "talk.started",
                    "encoding": encoding,
                    "sample_rate": rate,
                    "codec": self.talk_codec,
                }
            ).decode()
        )

    async def _refuse_talk(self, code: CloseCode, reason: str) -> None:
        await self.websocket.send_text(
            orjson.dumps({"type": "talk.refused", "code": int(code), "reason": reason}).decode()
        )

    async def _stop_talking(self) -> None:
        self.runtime.hub.publish_talk(self.call_id, TalkControl("stop"))
        self.talk_encoding = None
        await self.runtime.hub.release_talker(self.call_id, self.owner)

    async def _talk_audio(self, data: bytes) -> None:
        if self.talk_encoding is None:
            await self._error("not_talking", "binary audio needs talk.start first")
            return
        if len(data) > self.settings.talk_max_message_bytes:
            await self._error(
                "oversized",
                f"talk messages are at most {self.settings.talk_max_message_bytes} bytes",
                CloseCode.TOO_BIG,
            )
            return
        if self.talk_encoding == "pcm16":
            if len(data) % 2:
                await self._error("torn_sample", "pcm16 audio needs an even number of bytes")
                return
            pcm = data
        elif self.talk_encoding == "PCMU":
            pcm = ulaw_decode(data)
        else:
            pcm = alaw_decode(data)
        self.runtime.hub.publish_talk(self.call_id, TalkAudio(pcm, self.talk_rate))

    async def _close(self, code: CloseCode, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(code, close_reason(reason))


class SendingQueue(LiveQueue[AudioItem]):
    """A listener's queue that sends audio as it is offered, when nothing waits before it.

    The carrier's frame callback publishes; each listener's frame then leaves in that same
    call, with no task wake-up per frame. A browser that is not keeping up (the socket's write
    buffer is over its mark) gets its audio queued instead, where the oldest is dropped."""

    __slots__ = ("busy", "direct", "sent", "socket", "stats")

    def __init__(self, maxsize: int, socket: FastSocket, stats: MediaStats) -> None:
        super().__init__(maxsize, lambda: _count_drop(stats))
        self.socket = socket
        self.stats = stats
        self.sent = 0
        self.direct = False  # until the listener's `format` is sent, everything queues
        self.busy = False  # the listener's task is sending an item it took from the queue

    def offer(self, item: AudioItem) -> None:
        socket = self.socket
        if (
            type(item) is bytes
            and socket.writable
            and self.direct
            and not self._items
            and not self.busy
        ):
            socket.transport.send(BINARY, item)  # type: ignore[union-attr]  # writable: set
            self.sent += 1
            stats = self.stats
            stats.frames_out += 1
            stats.bytes_out += len(item)
            return
        super().offer(item)


def _count_drop(stats: MediaStats) -> None:
    stats.listener_drops += 1
