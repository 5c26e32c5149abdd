"""`/audio-stream`: Telnyx's media WebSocket for one call, relayed to the call's listeners.

The socket is authenticated per call: the `stream_auth_token` we gave Telnyx when dialing or
answering arrives as the `x-telnyx-streaming-auth-token` header (or a `token` query parameter,
or inside `connected`), and must match the token stored for the call named in `start`.

After `start`, each `media` frame is put back in sequence order within a small window, packed
into the browser frame (audio/frames.py) with its payload untouched, and offered to the hub;
nothing on this path waits for a listener or touches the database. `dtmf`, `error` and the
end of the stream become call events; a socket that drops without `stop` marks the stream
`lost`, so no call is left "streaming" forever. Talk-back from a browser comes the other way
through the hub and leaves as Telnyx `media` frames. When this instance stops, `leave()` ends
the stream the way the drain decided (handed over, or lost with the instance).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import time
from collections import deque
from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from callbridge.audio.frames import CodecInfo, UnsupportedCodec, codec_info, pack_audio
from callbridge.audio.reorder import ReorderBuffer
from callbridge.audio.talk import TalkEncoder
from callbridge.calls.model import Call, CallState, StreamState
from callbridge.calls.service import hash_token
from callbridge.carrier.telnyx.media import (
    AUTH_HEADER,
    Connected,
    Dtmf,
    MalformedFrame,
    Mark,
    Start,
    Stop,
    StreamError,
    StreamMessage,
    clear_json,
    decode_message,
    mark_json,
    media_json,
    media_parts,
    parse_message,
    parse_object,
)
from callbridge.hub.live import LiveQueue, StreamNotice, TalkAudio, TalkControl, TalkItem
from callbridge.logs import get_logger
from callbridge.metrics import MEDIA, MEDIA_MALFORMED, MEDIA_STREAMS_ENDED, MediaStats
from callbridge.runtime import Runtime
from callbridge.ws.audio_format import format_notice
from callbridge.ws.close_codes import CloseCode, close_reason
from callbridge.ws.picows_bridge import FAST_SOCKET, FastSocket

__all__ = ["CarrierStream", "Departure"]

log = get_logger(__name__)
TALK_QUEUE = 500  # 10 s of 20 ms frames; Telnyx queues and plays what we send
FINISH_WAIT = 5.0  # most `leave()` waits for the end of the stream to be recorded


@dataclasses.dataclass(frozen=True, slots=True)
class Departure:
    """How a stream ends because this instance stops (see ws/handover.py).

    `outcome` and `reason` are recorded if the socket closes because we close it (a `stop`
    from the carrier is recorded as such). `notify`: tell the call's listeners the stream
    ended (not when another stream takes over: they follow its `format`). `keep`: a stream
    lost this way stays this instance's, so a live instance asks the carrier for it again.
    """

    outcome: StreamState
    reason: str
    notify: bool = True
    keep: bool = False


class _Refused(Exception):
    """Close the socket with this code and reason; the stream never started."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class CarrierStream:
    """One Telnyx media socket, from handshake to the end of its stream."""

    def __init__(self, websocket: WebSocket, runtime: Runtime) -> None:
        self.websocket = websocket
        self.runtime = runtime
        self.settings = runtime.settings
        self.token = websocket.headers.get(AUTH_HEADER) or websocket.query_params.get("token")
        self.call_id = ""  # known once `start` is authorised
        self.stream_id = ""
        self.malformed: dict[str, int] = {}
        # Media waits in the window as its packed browser frame; other messages as themselves.
        self.reorder: ReorderBuffer[bytes | StreamMessage] = ReorderBuffer(
            self.settings.media_reorder_window
        )
        self.stats = MediaStats()  # replaced by the call's shared stats once known
        self._reorder_counted = (0, 0, 0, 0)
        self._frames = 0
        self.departure: Departure | None = None  # set when this instance stops
        self.done = asyncio.Event()  # the end of the stream is recorded
        self.notified = False  # listeners were told the stream ended
        self._sample_bytes = 1
        self._stopped = False  # `stop` was read: later frames are ignored
        self._slow: deque[StreamMessage] = deque()  # for `_relay`'s coroutine, in order
        self._wake: Callable[[], None] = _nothing
        self._publish = runtime.hub.publish_audio
        self._max_bytes = self.settings.media_max_message_bytes

    # --- bad input: dropped, counted, logged once per kind ----------------------------------

    def _malformed(self, kind: str, detail: str) -> None:
        MEDIA_MALFORMED.labels("carrier", kind).inc()
        count = self.malformed.get(kind, 0)
        self.malformed[kind] = count + 1
        if count == 0:
            log.warning(
                "Malformed frame on media stream dropped",
                kind=kind,
                detail=detail,
                call_control_id=self.call_id or None,
                stream_id=self.stream_id or None,
            )

    def _parse(self, message: MutableMapping[str, Any]) -> StreamMessage | None:
        text = message.get("text")
        if text is None:
            self._malformed("binary", "Telnyx media messages are JSON text frames")
            return None
        if len(text) > self.settings.media_max_message_bytes:
            self._malformed("oversized", f"{len(text)} bytes")
            return None
        try:
            return parse_message(text)
        except MalformedFrame as exc:
            self._malformed(exc.kind, exc.detail)
            return None

    # --- handshake ---------------------------------------------------------------------------

    async def _await_start(self) -> tuple[Start, Call] | None:
        """Read up to `start`, then check the token against the call it names."""
        async with asyncio.timeout(self.settings.media_start_timeout):
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    log.info("Media socket closed before start")
                    return None
                parsed = self._parse(message)
                if isinstance(parsed, Connected):
                    self.token = self.token or parsed.token
                elif isinstance(parsed, Start):
                    return parsed, await self._authorise(parsed)
                elif parsed is not None:
                    self._malformed("before_start", f"{type(parsed).__name__} before start")

    async def _authorise(self, start: Start) -> Call:
        if not self.token:
            raise _Refused(
                CloseCode.POLICY_VIOLATION,
                f"missing stream token ({AUTH_HEADER} header or token query parameter)",
            )
        call = await self.runtime.store.get_call(start.call_control_id)
        if call is None:
            raise _Refused(CloseCode.POLICY_VIOLATION, "unknown call_control_id in start")
        expected = call.stream_token_hash or ""
        if not hmac.compare_digest(hash_token(self.token), expected):
            raise _Refused(CloseCode.POLICY_VIOLATION, "invalid stream token for this call")
        if call.state is CallState.ENDED:
            raise _Refused(CloseCode.POLICY_VIOLATION, "the call has ended")
        return call

    # --- the stream ----------------------------------------------------------------------------

    async def run(self) -> None:
        await self.websocket.accept()
        log.info("Telnyx media stream connected", token_presented=self.token is not None)
        try:
            started = await self._await_start()
        except TimeoutError:
            reason = f"no start within {self.settings.media_start_timeout:g} s"
            log.warning("Media stream refused", reason=reason)
            await self._close(CloseCode.POLICY_VIOLATION, reason)
            return
        except _Refused as refused:
            log.warning("Media stream refused", reason=refused.reason)
            await self._close(refused.code, refused.reason)
            return
        except WebSocketDisconnect:
            return
        except Exception:  # without a close frame the carrier would see 1006 and no reason
            log.exception("Media stream handshake failed")
            await self._close(CloseCode.INTERNAL_ERROR, "internal error")
            return
        if started is None:
            return
        start, call = started
        self.call_id, self.stream_id = call.call_control_id, start.stream_id
        try:
            codec = codec_info(start.encoding, start.sample_rate, start.channels)
        except UnsupportedCodec as exc:
            await self._refuse_codec(str(exc))
            return
        await self._stream(start, codec)

    async def _refuse_codec(self, reason: str) -> None:
        log.warning("Media stream codec refused", call_control_id=self.call_id, reason=reason)
        MEDIA_STREAMS_ENDED.labels(StreamState.FAILED.value).inc()
        await self.runtime.calls.media_ended(
            self.call_id, self.stream_id, StreamState.FAILED, {"reason": reason}, refused=True
        )
        self.runtime.hub.publish_audio(
            self.call_id,
            StreamNotice(
                "stream.stopped",
                {"stream_id": self.stream_id, "reason": "codec_refused", "detail": reason},
            ),
        )
        await self._close(CloseCode.UNSUPPORTED_DATA, reason)

    async def _stream(self, start: Start, codec: CodecInfo) -> None:
        call_id, stream_id = self.call_id, self.stream_id
        encoding, sample_rate, sample_bytes = (
            codec.encoding,
            codec.sample_rate,
            codec.bytes_per_sample,
        )
        runtime = self.runtime
        began = time.monotonic()
        if start.seq is not None:
            self.reorder = ReorderBuffer(
                self.settings.media_reorder_window, first_seq=start.seq + 1
            )
        self.stats = MEDIA.acquire(call_id)
        self.stats.streams += 1
        talk_queue: LiveQueue[TalkItem] | None = None
        talk_task: asyncio.Task[None] | None = None
        outcome, reason = StreamState.LOST, "socket closed without stop"
        runtime.connections.streams.add(self)
        try:
            call = await runtime.calls.media_started(call_id, stream_id, encoding, sample_rate)
            log.info(
                "Media stream started",
                call_control_id=call_id,
                stream_id=stream_id,
                encoding=encoding,
                sample_rate=sample_rate,
            )
            if call is not None:
                if call.talk_codec is not None:
                    stats = self.stats
                    talk_queue = runtime.hub.subscribe_talk(
                        call_id, TALK_QUEUE, lambda: _count_talk_drop(stats)
                    )
                    talk_task = asyncio.create_task(self._talk(talk_queue, call.talk_codec))
                    # Listeners may talk once they hear of the stream: be subscribed by then.
                    await runtime.hub.subscribed(call_id)
                runtime.hub.publish_audio(call_id, format_notice(call))
            if await self._relay(sample_bytes):
                outcome, reason = StreamState.STOPPED, "stop"
            elif self.departure is not None:  # we closed it: this instance is stopping
                outcome, reason = self.departure.outcome, self.departure.reason
        except WebSocketDisconnect:
            pass
        except Exception:
            log.exception("Media stream handler failed", call_control_id=call_id)
            outcome, reason = StreamState.LOST, "internal error"
            await self._close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._release_held()
            if talk_task is not None:
                talk_task.cancel()
                with contextlib.suppress(BaseException):
                    await talk_task
            if talk_queue is not None:
                runtime.hub.unsubscribe_talk(call_id, talk_queue)
            try:
                await self._finish(outcome, reason, time.monotonic() - began)
            finally:  # only now: until its end is stored, the stream is this socket's
                runtime.connections.streams.discard(self)

    async def _relay(self, sample_bytes: int) -> bool:
        """Until the stream ends; True if it ended with `stop`.

        Each text frame goes through `_on_text`, synchronously: on picows (ws/picows_bridge.py)
        it is called from the frame callback itself, without a coroutine wake-up per frame;
        otherwise from this loop. What needs to wait (recording a DTMF, an error) is left in
        `_slow` for this coroutine."""
        self._sample_bytes = sample_bytes
        fast: FastSocket | None = self.websocket.scope.get("extensions", {}).get(FAST_SOCKET)
        receive = self.websocket.receive
        slow = self._slow
        try:
            while True:
                if fast is not None and fast.text_hook is None and not fast.backlog:
                    # What arrived before is handled (in order); the hook takes the rest.
                    self._wake = fast.wake
                    fast.text_hook = self._on_text
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return await self._run_slow()
                text = message.get("text")
                if text is not None:
                    self._on_text(text)
                elif message.get("bytes") is not None:
                    self._malformed("binary", "Telnyx media messages are JSON text frames")
                if slow and await self._run_slow():
                    return True
        finally:
            if fast is not None:
                fast.text_hook = None

    async def _run_slow(self) -> bool:
        """Handle what `_on_text` left for a coroutine, in order; True once `stop` is reached."""
        slow = self._slow
        while slow:
            item = slow.popleft()
            if isinstance(item, Stop):
                await self._close(CloseCode.NORMAL, "stream stopped")
                return True
            await self._handle(item)
        return False

    def _on_text(self, data: str | bytes | memoryview) -> None:
        """One carrier frame, the hot path: parse, reorder, publish; never waits.

        A `media` message is packed into the browser frame straight from its JSON object
        (no MediaFrame), and an in-order frame skips the reorder window's bookkeeping."""
        if self._stopped:
            return
        if len(data) > self._max_bytes:
            self._malformed("oversized", f"{len(data)} bytes")
            return
        parsed: StreamMessage | None = None
        try:
            message = decode_message(data)
            if message.get("event") == "media":
                seq, track, chunk, timestamp, payload = media_parts(message)
            else:
                parsed = parse_object(message)
        except MalformedFrame as exc:
            self._malformed(exc.kind, exc.detail)
            return
        reorder = self.reorder
        if parsed is None:
            size = len(payload)
            if size % self._sample_bytes:
                self._malformed("torn_sample", "L16 payload with an odd number of bytes")
                return
            stats = self.stats
            stats.frames_in += 1
            stats.bytes_in += size
            frame = pack_audio(track, chunk, timestamp, payload)
            if seq is None or reorder.take_in_order(seq):
                self._frames += 1
                self._publish(self.call_id, frame)
                return
            released = reorder.push(seq, frame)
        elif isinstance(parsed, Stop):
            self._stopped = True
            self._release_held()
            self._defer(parsed)
            return
        else:
            seq = getattr(parsed, "seq", None)
            if seq is None:
                self._deliver(parsed)
                return
            released = reorder.push(seq, parsed)
        for item in released:
            self._deliver(item)
        self._sync_reorder_stats()

    def _deliver(self, message: bytes | StreamMessage) -> None:
        """A message in sequence order: what can be done now is done, the rest deferred."""
        if type(message) is bytes:
            self._publish_frame(message)
        elif isinstance(message, Mark):
            notice = StreamNotice("mark", {"stream_id": self.stream_id, "name": message.name})
            self.runtime.hub.publish_audio(self.call_id, notice)
        elif isinstance(message, Start):
            self._malformed("duplicate_start", "a second start on one stream")
        elif isinstance(message, Dtmf | StreamError):
            self._defer(message)
        # `connected` after start carries nothing new.

    def _defer(self, message: StreamMessage) -> None:
        self._slow.append(message)
        self._wake()

    def _release_held(self) -> None:
        """At the end, what the window still holds goes out in order (gaps are counted)."""
        for held in self.reorder.flush():
            if type(held) is bytes:
                self._publish_frame(held)
        self._sync_reorder_stats()

    def _sync_reorder_stats(self) -> None:
        """Move what the reorder window counted into the call's stats (rarely anything)."""
        reorder = self.reorder
        now = (reorder.late_dropped, reorder.duplicates, reorder.gaps, reorder.reordered)
        if now != self._reorder_counted:
            late, dups, gaps, reordered = (
                a - b for a, b in zip(now, self._reorder_counted, strict=True)
            )
            stats = self.stats
            stats.late_dropped += late
            stats.duplicates += dups
            stats.gaps += gaps
            stats.reordered += reordered
            self._reorder_counted = now

    def _publish_frame(self, frame: bytes) -> None:
        self._frames += 1
        self._publish(self.call_id, frame)

    async def _handle(self, message: StreamMessage) -> None:
        if isinstance(message, Dtmf):
            log.info("DTMF on media stream", call_control_id=self.call_id, digit=message.digit)
            await self.runtime.calls.media_dtmf(self.call_id, self.stream_id, message.digit)
        elif isinstance(message, StreamError):
            log.warning(
                "Telnyx reported a media stream error",
                call_control_id=self.call_id,
                code=message.code,
                title=message.title,
                detail=message.detail,
            )
            await self.runtime.calls.media_error(
                self.call_id,
                {
                    "stream_id": self.stream_id,
                    "code": message.code,
                    "title": message.title,
                    "detail": message.detail,
                },
            )

    async def _finish(self, outcome: StreamState, reason: str, seconds: float) -> None:
        reorder = self.reorder
        details: dict[str, Any] = {
            "reason": reason,
            "seconds": round(seconds, 3),
            "frames": self._frames,
            "gaps": reorder.gaps,
            "late_dropped": reorder.late_dropped,
            "reordered": reorder.reordered,
            "duplicates": reorder.duplicates,
            "malformed": sum(self.malformed.values()),
        }
        self.stats.streams -= 1
        MEDIA.release(self.call_id)
        MEDIA_STREAMS_ENDED.labels(outcome.value).inc()
        log_method = log.info if outcome is StreamState.STOPPED else log.warning
        log_method("Media stream ended", call_control_id=self.call_id, outcome=outcome, **details)
        departure = self.departure
        if departure is None or departure.notify:
            self._notify_end(outcome)
        keep = departure is not None and departure.keep and outcome is StreamState.LOST
        try:
            await self.runtime.calls.media_ended(
                self.call_id, self.stream_id, outcome, details, keep_instance=keep
            )
        except Exception:  # the store may be closing with the service; say so once
            log.exception(
                "Could not record the end of a media stream", call_control_id=self.call_id
            )
        finally:
            self.done.set()

    def _notify_end(self, outcome: StreamState) -> None:
        self.notified = True
        self.runtime.hub.publish_audio(
            self.call_id,
            StreamNotice(
                "stream.stopped",
                {"stream_id": self.stream_id, "reason": "stream_" + outcome.value},
            ),
        )

    # --- this instance stops ---------------------------------------------------------------

    def departing(self, departure: Departure) -> None:
        """Say now how the stream will end (a handover starts: a `stop` Telnyx may send on
        this socket when the new stream replaces it must not end the listeners)."""
        self.departure = departure

    async def leave(self, departure: Departure, close_reason: str) -> None:
        """End the stream as `departure` says: close the socket with 1001 (unless it has ended
        already), and wait, bounded, until its end is recorded."""
        self.departure = departure
        if self.done.is_set():
            if departure.notify and not self.notified:
                self._notify_end(departure.outcome)  # it ended quietly, expecting a new one
            return
        await self._close(CloseCode.GOING_AWAY, close_reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), FINISH_WAIT)

    # --- talk-back -----------------------------------------------------------------------------

    async def _talk(self, queue: LiveQueue[TalkItem], codec: str) -> None:
        """Browser microphone → exact 20 ms frames in the codec Telnyx expects back."""
        encoder = TalkEncoder(codec)
        rate: int | None = None
        send = self.websocket.send_text
        while True:
            item = await queue.get()
            frames: list[bytes] = []
            try:
                if isinstance(item, TalkAudio):
                    if item.sample_rate != rate:
                        rate = item.sample_rate
                        encoder.start(rate)
                    frames = encoder.feed(item.pcm16le)
                elif isinstance(item, TalkControl):
                    if item.action == "start" and item.sample_rate is not None:
                        rate = item.sample_rate
                        encoder.start(rate)
                    elif item.action in ("stop", "mark"):
                        frames = encoder.flush()
                    elif item.action == "clear":
                        encoder.clear()
            except (ValueError, RuntimeError) as exc:  # a torn sample, a rate never started
                log.warning("Talk-back audio dropped", call_control_id=self.call_id, error=str(exc))
                continue
            for frame in frames:
                await send(media_json(frame))
                self.stats.talk_frames += 1
            if isinstance(item, TalkControl):
                if item.action == "clear":
                    await send(clear_json())
                elif item.action == "mark" and item.name:
                    await send(mark_json(item.name))

    async def _close(self, code: CloseCode, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(code, close_reason(reason))


def _nothing() -> None:
    return None


def _count_talk_drop(stats: MediaStats) -> None:
    stats.talk_drops += 1
