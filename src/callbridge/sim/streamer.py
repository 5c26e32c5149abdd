"""Telnyx's media side of one simulated call: speech in, talk-back out, in real time.

Like Telnyx, the simulator opens the WebSocket to the `stream_url` it was given, with the
`stream_auth_token` in the handshake header, says `connected` and `start`, then sends a `media`
frame per track every 20 ms at real-time pace (against a monotonic deadline, so there is no
drift), encoded with the stream's codec. In bidirectional `rtp` mode it accepts `media`, `clear`
and `mark`: received audio is queued and played on the outbound track (what the far party
hears), so talk-back is audible to listeners; a mark is echoed when the audio queued before it
has played, or at once if nothing is queued; `clear` drops the queue and returns pending marks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed, WebSocketException

from callbridge.audio.g711 import (
    alaw_decode,
    alaw_encode,
    l16_be_to_le,
    l16_le_to_be,
    ulaw_decode,
    ulaw_encode,
)
from callbridge.audio.resample import resampler
from callbridge.logs import get_logger
from callbridge.sim.media import TelnyxMediaStream
from callbridge.sim.speech import speech_pcm

__all__ = ["FRAME_SECONDS", "MediaPlan", "SimulatedStream"]

log = get_logger(__name__)
FRAME_SECONDS = 0.020
PLAYBACK_LIMIT = 1500  # 30 s of queued talk-back

_ENCODE: dict[str, Callable[[bytes], bytes]] = {
    "PCMU": ulaw_encode,
    "PCMA": alaw_encode,
    "L16": l16_le_to_be,
}
_DECODE: dict[str, Callable[[bytes], bytes]] = {
    "PCMU": ulaw_decode,
    "PCMA": alaw_decode,
    "L16": l16_be_to_le,
}
_RATE = {"PCMU": 8000, "PCMA": 8000, "L16": 16000}


@dataclasses.dataclass(frozen=True, slots=True)
class MediaPlan:
    """What one stream carries, from the streaming parameters of a dial, answer or start."""

    url: str
    token: str | None
    call_control_id: str
    encoding: str = "PCMU"  # what we send: stream_codec, or the scenario's codec
    track: str = "both_tracks"
    bidirectional: bool = False
    bidirectional_codec: str = "PCMU"
    client_state: str | None = None
    drop_after: float | None = None  # seconds; then the socket is cut without `stop`

    @property
    def sample_rate(self) -> int:
        return _RATE[self.encoding]


class SimulatedStream:
    """One media socket from open to `stop` (or to a simulated drop)."""

    def __init__(
        self,
        plan: MediaPlan,
        on_failure: Callable[[str], None] | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        self.plan = plan
        self.on_failure = on_failure
        self.on_started = on_started  # once `start` is sent (a stream it replaces may stop)
        self.rate = plan.sample_rate
        self.frame_samples = int(self.rate * FRAME_SECONDS)
        self.speech = speech_pcm(self.rate)
        self.position = 0
        self.playback: deque[bytes | str] = deque()  # 20 ms PCM frames, or a mark's name
        self.received: deque[dict[str, Any]] = deque(maxlen=2000)  # for /_sim/, newest kept
        self.stream: TelnyxMediaStream | None = None
        self._stopping = asyncio.Event()
        self._talk_resampler = resampler(_RATE[plan.bidirectional_codec], self.rate)
        self._talk_pending = b""
        self.dtmf: asyncio.Queue[str] = asyncio.Queue()

    @property
    def stream_id(self) -> str | None:
        return self.stream.stream_id if self.stream else None

    def stop(self) -> None:
        """End the stream with `stop` (hangup or `streaming_stop`)."""
        self._stopping.set()

    async def run(self) -> None:
        plan = self.plan
        try:
            self.stream = await TelnyxMediaStream.open(
                plan.url,
                call_control_id=plan.call_control_id,
                token=plan.token,
                auth_via="header",
                encoding=plan.encoding,
                sample_rate=self.rate,
            )
        except (OSError, WebSocketException, TimeoutError) as exc:
            log.warning("Simulator could not open the media socket", url=plan.url, error=str(exc))
            if self.on_failure is not None:
                self.on_failure(f"connection to the WebSocket server failed: {exc}")
            return
        stream = self.stream
        receiver = asyncio.create_task(self._receive(stream))
        try:
            await stream.begin(client_state=plan.client_state)
            if self.on_started is not None:
                self.on_started()
            await self._pace(stream)
        except ConnectionClosed:
            log.info("Media socket closed by the service", call_control_id=plan.call_control_id)
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await receiver
            await stream.close()

    async def _pace(self, stream: TelnyxMediaStream) -> None:
        """A frame per track every 20 ms, on a monotonic schedule, until stopped or dropped."""
        plan = self.plan
        inbound = plan.track in ("inbound_track", "both_tracks")
        outbound = plan.track in ("outbound_track", "both_tracks")
        started = time.monotonic()
        deadline = started
        while not self._stopping.is_set():
            if plan.drop_after is not None and time.monotonic() - started >= plan.drop_after:
                log.info("Simulator drops the media socket", call_control_id=plan.call_control_id)
                stream.connection.transport.abort()  # no `stop`, no close frame: a network cut
                return
            while not self.dtmf.empty():
                await stream.send(stream.dtmf_message(self.dtmf.get_nowait()))
            # A mark at the head of the queue: the audio before it played during the last tick.
            await self._echo_played_marks(stream)
            if inbound:
                await stream.media(self._encode(self._next_speech()), "inbound")
            played = self._next_playback()  # the far party hears it whether or not we stream it
            if outbound:
                await stream.media(self._encode(played), "outbound")
            deadline += FRAME_SECONDS
            delay = deadline - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
            elif delay < -1.0:
                deadline = time.monotonic()  # we were starved; resume rather than burst
        await stream.stop()

    def _encode(self, pcm: bytes) -> bytes:
        return _ENCODE[self.plan.encoding](pcm)

    def _next_speech(self) -> bytes:
        size = self.frame_samples * 2
        if self.position + size > len(self.speech):
            self.position = 0
        frame = self.speech[self.position : self.position + size]
        self.position += size
        return frame

    def _next_playback(self) -> bytes:
        """The next 20 ms of talk-back to play to the far party, or silence."""
        if self.playback and isinstance(self.playback[0], bytes):
            frame = self.playback.popleft()
            assert isinstance(frame, bytes)
            return frame
        return bytes(self.frame_samples * 2)

    async def _echo_played_marks(self, stream: TelnyxMediaStream) -> None:
        while self.playback and isinstance(self.playback[0], str):
            name = self.playback.popleft()
            assert isinstance(name, str)
            await stream.send(stream.mark_message(name))

    # --- what the service sends back -------------------------------------------------------

    async def _receive(self, stream: TelnyxMediaStream) -> None:
        while True:
            raw = await stream.connection.recv()
            try:
                message = orjson.loads(raw)
            except orjson.JSONDecodeError:
                log.warning("Service sent a non-JSON media message", size=len(raw))
                continue
            if not isinstance(message, dict):
                continue
            self.received.append(_summary(message))
            await self._on_message(stream, message)

    async def _on_message(self, stream: TelnyxMediaStream, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "media":
            if not self.plan.bidirectional:
                return  # without rtp mode Telnyx drops raw audio silently, and so do we
            payload = (message.get("media") or {}).get("payload", "")
            try:
                audio = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                log.warning("Service sent media that is not base64")
                return
            self._queue_talk(_DECODE[self.plan.bidirectional_codec](audio))
        elif event == "mark":
            name = str((message.get("mark") or {}).get("name", ""))
            if any(isinstance(item, bytes) for item in self.playback):
                self.playback.append(name)
            else:
                await stream.send(stream.mark_message(name))
        elif event == "clear":
            marks = [item for item in self.playback if isinstance(item, str)]
            self.playback.clear()
            self._talk_pending = b""
            for name in marks:
                await stream.send(stream.mark_message(name))

    def _queue_talk(self, pcm: bytes) -> None:
        """Talk-back audio, at the stream's rate, in 20 ms frames on the playback queue.

        Telnyx queues what it is sent; so do we, up to PLAYBACK_LIMIT frames, then the oldest
        audio goes (marks stay, so they still come back)."""
        data = self._talk_pending + self._talk_resampler.process(pcm)
        size = self.frame_samples * 2
        whole = len(data) - len(data) % size
        for start in range(0, whole, size):
            self.playback.append(data[start : start + size])
        self._talk_pending = data[whole:]
        while len(self.playback) > PLAYBACK_LIMIT:
            oldest = next(i for i, item in enumerate(self.playback) if isinstance(item, bytes))
            del self.playback[oldest]


def _summary(message: dict[str, Any]) -> dict[str, Any]:
    """What the test hooks show of a message the service sent: payload length, not bytes."""
    summary = {key: value for key, value in message.items() if key != "media"}
    media = message.get("media")
    if isinstance(media, dict):
        summary["media"] = {"payload_base64_chars": len(str(media.get("payload", "")))}
    return summary
